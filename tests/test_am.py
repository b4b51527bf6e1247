import pytest
import torch

from defenses import get_defense
from tests.generated import generated_set, tiny_ctx
from defenses.am import ce_to_uniform, log_one_minus_p_true


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_am():
    ctx = tiny_ctx()
    d = get_defense("am")
    d.build(ctx)
    for u in d.units():
        u.fit(ctx)
    d.eval()
    return d, ctx


def test_units_and_labels(trained_am):
    d, _ = trained_am
    assert [u.name for u in d.units()] == ["am-defender", "am"]
    assert d.display == "AM" and d.base.display == "OE"
    assert "tau" not in d.train_params() and "nu" not in d.train_params()


def test_tau_zero_serves_the_defender(trained_am):
    d, ctx = trained_am
    x = ctx.id_train.x[:32]
    d.set_knob("tau", 0.0)
    assert torch.equal(d(x), d.base(x))


def test_huge_tau_serves_the_misinformation_model(trained_am):
    d, ctx = trained_am
    x = ctx.id_train.x[:32]
    d.set_knob("tau", 1.0)
    d.set_knob("nu", 1e6)
    base = d.base(x)
    assert base.max(1).values.max() < 0.999  # h = sigmoid(1e6 * (1 - max y)) is then 1
    mis = torch.softmax(d.nets["mis"](x), 1).detach()
    assert torch.allclose(d(x), mis, atol=1e-7)
    assert not torch.allclose(d(x), base, atol=1e-3)


def test_gate_is_the_serving_rule(trained_am):
    d, _ = trained_am
    d.set_knob("tau", 0.5)
    d.set_knob("nu", 20.0)
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    h = d.gate(p)
    assert torch.allclose(h, torch.sigmoid(torch.tensor([20 * (0.5 - 0.7), 20 * (0.5 - 0.4)])))


def test_knob_range_enforced():
    with pytest.raises(ValueError, match="tau"):
        get_defense("am", tau=1.5)


def test_composes_on_another_base():
    d = get_defense("ini+am")
    d.build(tiny_ctx(n=8))
    assert d.base.name == "ini" and d.display == "InI+AM"
    assert [u.name for u in d.units()] == ["ini", "am"]


def test_losses():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(z, 1)
    assert torch.allclose(log_one_minus_p_true(z, y), torch.log(1 - p[[0, 1], y]))
    assert torch.allclose(ce_to_uniform(z), -(torch.log(p).mean(1)).mean())
    # the misinformation objective is minimal when the true class gets no mass
    assert log_one_minus_p_true(torch.tensor([[-20.0, 5.0]]), torch.tensor([0])) > -1e-6


def test_misinformation_model_learns_to_be_wrong():
    ctx = tiny_ctx(n=512, epochs=10)
    # generated, learnable labels: class k brightens row block k of the image
    x, y = ctx.id_train.x, ctx.id_train.y
    for k in range(10):
        x[y == k, :, 2 * k:2 * k + 3] += 3.0
    d = get_defense("am", mis_data="id")
    d.build(ctx)
    d.eval()

    def true_class_mass():
        with torch.no_grad():
            return torch.softmax(d.nets["mis"](x), 1)[torch.arange(len(y)), y]

    before = true_class_mass().mean()  # untrained: about 1/10
    d.fit(ctx)
    d.eval()
    after = true_class_mass()
    # relative to the untrained net, so the bound does not hinge on one machine's kernels
    assert after.mean() < 0.5 * before
    assert (after < 0.1).float().mean() > 0.9


def test_misinformation_model_avoids_the_defenders_answer_on_ood():
    """Reference (admis/utils/model.py): the misinformation model also trains on OOD images,
    with the defender's top-1 as the target to avoid."""
    ctx = tiny_ctx(n=512, epochs=6)
    d = get_defense("am")
    d.build(ctx)
    d.base.fit(ctx)
    d.eval()
    xo = ctx.ood_train.x
    said = d.base(xo).argmax(1)

    def mass_on_defenders_answer():
        with torch.no_grad():
            return torch.softmax(d.nets["mis"](xo), 1)[torch.arange(len(xo)), said]

    before = mass_on_defenders_answer().mean()
    d.fit(ctx)
    d.eval()
    after = mass_on_defenders_answer()
    assert after.mean() < 0.5 * before
    assert (after < 0.1).float().mean() > 0.8


def test_misinformation_unit_depends_on_its_base():
    am, ini_am = get_defense("am"), get_defense("ini+am")
    assert am.train_params() != ini_am.train_params()
    assert get_defense("am", mis_data="id").train_params() == get_defense("ini+am", mis_data="id").train_params()
    with pytest.raises(ValueError, match="mis_data"):
        get_defense("am", mis_data="ood")
