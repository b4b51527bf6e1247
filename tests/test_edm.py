import math

import pytest
import torch

from defenses import get_defense
from tests import generated
from tests.generated import generated_set
from defenses.edm import diversity, member_index


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_ctx(n=128, epochs=1):
    return generated.tiny_ctx(n, epochs, batch_size=64, hash_set=True)


@pytest.fixture(scope="module")
def trained():
    ctx = tiny_ctx(n=64)
    torch.manual_seed(0)
    d = get_defense("edm")
    d.build(ctx)
    d.fit(ctx)
    d.eval()
    return d, ctx


def serve_both(d, x):
    out = {}
    for mode in ("batched", "routed"):
        d.params["serve"] = mode
        out[mode] = d(x)
    d.params["serve"] = "batched"
    return out["batched"], out["routed"]


def test_serving_modes_agree(trained, monkeypatch):
    d, _ = trained
    x = torch.randn(120, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    batched, routed = serve_both(d, x)  # with the trained hash net
    assert torch.allclose(batched, routed, atol=1e-6, rtol=0)  # float rounding across batch sizes
    # a barely trained hash net may send every query to one member: spread them explicitly
    idx = torch.randint(0, 5, (120,), generator=torch.Generator().manual_seed(6))
    monkeypatch.setattr(d, "route", lambda x: idx[:len(x)])
    batched, routed = serve_both(d, x)
    assert torch.allclose(batched, routed, atol=1e-6, rtol=0)
    assert torch.equal(batched.argmax(1), routed.argmax(1))
    for k in range(5):  # each query answered by its own member
        sel = idx == k
        assert torch.allclose(batched[sel], torch.softmax(d.nets["members"][k](x[sel]), 1), atol=1e-6)
    assert not torch.allclose(batched[idx == 0][:1], torch.softmax(d.nets["members"][1](x[idx == 0][:1]), 1))


def test_serve_is_not_a_training_parameter():
    a, b = get_defense("edm", serve="routed"), get_defense("edm")
    assert a.train_params() == b.train_params() and "serve" not in a.train_params()
    with pytest.raises(ValueError, match="serve"):
        get_defense("edm", serve="parallel")


def test_fit_log_and_routing_deterministic(trained):
    d, ctx = trained
    log = d.fit_log
    assert log["lambda_d"] == 1.0 and log["n_members"] == 5 and len(log["epoch_losses"]["div"]) == 1
    assert abs(sum(log["member_share_id"]) - 1) < 1e-3
    x = ctx.id_train.x[:50]
    assert torch.equal(d.route(x), d.route(x)) and torch.equal(d(x), d(x))


def test_member_index_rule():
    # M = 10, m = 2, N = 5: (2 * argmax + floor((10 * maxprob - 1) * 2 / 9)) mod 5
    p = torch.tensor([[0.1] * 10, [0.0] * 9 + [1.0], [0.0, 0.55, 0.45] + [0.0] * 7])
    # row 0: argmax 0, floor(0) = 0 -> 0; row 1: 2*9 + floor(2) = 20 -> 0; row 2: 2 + floor(1) = 3
    assert member_index(p, 5).tolist() == [0, 0, 3]
    assert member_index(torch.tensor([[0.0, 0.0, 0.6, 0.4]]), 5).tolist() == [(4 + 1) % 5]


def test_diversity_term():
    same = torch.softmax(torch.randn(1, 4, 10), 2).expand(5, 4, 10)
    assert abs(diversity(same).item() - (math.log(10) + 1)) < 1e-5   # 10 pairs, cos = 1
    onehots = torch.eye(10)[:5].unsqueeze(1).expand(5, 4, 10)
    assert abs(diversity(onehots).item() - math.log(10)) < 1e-5       # orthogonal, cos = 0


def test_diversity_lowers_ood_coherence():
    """With lambda_D the members disagree more on OOD inputs than without (same seed)."""
    out = {}
    for lam in (0.0, 5.0):
        ctx = tiny_ctx(n=128, epochs=2)
        torch.manual_seed(0)
        d = get_defense("edm", lambda_d=lam, n_members=3)
        d.build(ctx)
        d.fit_members(ctx)
        with torch.no_grad():
            probs = torch.stack([torch.softmax(m(ctx.ood_train.x), 1) for m in d.nets["members"]])
        out[lam] = diversity(probs).item()
    assert out[5.0] < out[0.0]
