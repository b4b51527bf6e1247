import pytest
import torch

from bench.oracle import BudgetExceededError, Oracle


class Fixed(torch.nn.Module):
    """A stand-in victim: softmax of a fixed linear map (generated inputs)."""
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.softmax(self.lin(x.flatten(1)), 1)


def test_soft_rows_sum_to_one_and_counts_exact():
    o = Oracle(Fixed(), budget=100, label_mode="soft", batch_size=7)
    y = o.query(torch.randn(30, 1, 2, 2))
    assert y.shape == (30, 3)
    assert torch.allclose(y.sum(1), torch.ones(30))
    assert not y.requires_grad
    o.query(torch.randn(5, 1, 2, 2))
    assert o.queries_used == 35 and o.remaining == 65


def test_hard_returns_labels_only():
    o = Oracle(Fixed(), budget=10, label_mode="hard")
    y = o.query(torch.randn(10, 1, 2, 2))
    assert y.dtype == torch.int64 and y.shape == (10,)


def test_budget_overrun_raises_and_does_not_count():
    o = Oracle(Fixed(), budget=10)
    o.query(torch.randn(8, 1, 2, 2))
    with pytest.raises(BudgetExceededError, match="8 of 10"):
        o.query(torch.randn(3, 1, 2, 2))
    assert o.queries_used == 8


@pytest.mark.parametrize("budget", [0, -5, 2.5])
def test_bad_budget(budget):
    with pytest.raises(ValueError, match="positive integer"):
        Oracle(Fixed(), budget=budget)


def test_bad_label_mode():
    with pytest.raises(ValueError, match="soft"):
        Oracle(Fixed(), budget=1, label_mode="logits")
