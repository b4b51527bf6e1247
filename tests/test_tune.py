"""The similar-benign-accuracy tuner, on a tiny untrained smallcnn with generated inputs.

Labels are the base model's own predictions, so the undefended reference accuracy is 100%.
"""
import pytest
import torch

from bench.data import ImageSet
from bench.train import Context, TrainConfig, predict, seed_everything
from bench.tune import tune
from defenses import PostProcessor, get_defense


class FlipSome(PostProcessor):
    """Test-only (not registered): moves the top-1 of the first `strength` fraction of every 20 rows."""
    name = "flip-some"
    knobs = {"strength": (0.0, 1.0)}
    defaults = {"strength": 0.0}
    tune_knob = "strength"
    tune_grid = (0.0, 0.05, 0.1, 0.3)
    tune_strongest = "high"

    def perturb(self, x, probs):
        rows = torch.arange(len(probs)) % 20 < round(self.params["strength"] * 20)
        moved = torch.nn.functional.one_hot((probs.argmax(1) + 1) % probs.shape[1], probs.shape[1])
        return torch.where(rows.unsqueeze(1), moved.to(probs.dtype), probs)


class FlipSomeLowIsStrong(FlipSome):
    tune_strongest = "low"


@pytest.fixture(scope="module")
def victim():
    gen = torch.Generator().manual_seed(0)
    train = ImageSet("gen", "train", torch.randn(32, 1, 28, 28, generator=gen),
                     torch.randint(0, 10, (32,), generator=gen), 10, (0.0,), (1.0,))
    ctx = Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=28, id_train=train,
                  train=TrainConfig(epochs=1, batch_size=16), progress=False)
    seed_everything(0)
    x = torch.randn(120, 1, 28, 28, generator=gen)  # a multiple of 20 rows
    return ctx, x


def build(name_or_cls, ctx, **params):
    d = get_defense(name_or_cls, **params) if isinstance(name_or_cls, str) else name_or_cls(**params)
    d.build(ctx)
    d.eval()
    return d


def labels_of(d, x):
    return predict(d.base if hasattr(d, "base") else d, x).argmax(1)


@pytest.mark.parametrize("tol, expect", [(0.5, 0.0), (5.0, 0.05), (10.0, 0.1), (80.0, 0.3)])
def test_picks_strongest_within_tolerance(victim, tol, expect):
    ctx, x = victim
    d = build(FlipSome, ctx)
    res = tune(d, x, labels_of(d, x), reference_acc=100.0, tolerance=tol)
    assert res["knob"] == "strength" and res["value"] == expect and res["met"]
    assert d.params["strength"] == expect  # the chosen value is set on the defense
    values = [v for v, _ in res["trace"]]
    assert values == [v for v in (0.3, 0.1, 0.05, 0.0) if v >= expect]  # strongest first, stops at choice
    accs = dict(res["trace"])
    assert accs[0.3] == pytest.approx(70.0) and accs[expect] >= 100.0 - tol - 1e-4


def test_strongest_low_end_and_unmet(victim):
    ctx, x = victim
    d = build(FlipSomeLowIsStrong, ctx)
    res = tune(d, x, labels_of(d, x), reference_acc=100.0, tolerance=0.5)
    assert res["trace"][0][0] == 0.0 and res["value"] == 0.0  # 0.0 is "strongest" here and qualifies
    res = tune(d, x, labels_of(d, x), reference_acc=100.0 + 10, tolerance=0.5)  # nothing qualifies
    assert not res["met"] and res["value"] == 0.3 and len(res["trace"]) == 4
    assert d.params["strength"] == 0.3


def test_mad_argmax_keeps_accuracy_so_strongest_eps(victim):
    ctx, x = victim
    d = build("mad-argmax", ctx)
    res = tune(d, x, labels_of(d, x), reference_acc=100.0)
    assert res["value"] == 2.0 and len(res["trace"]) == 1 and res["trace"][0][1] == pytest.approx(100.0)


@pytest.mark.parametrize("name", ["mad", "dcp"])
def test_real_postprocessors_meet_the_tolerance(victim, name):
    ctx, x = victim
    d = build(name, ctx)
    y = labels_of(d, x)
    res = tune(d, x, y, reference_acc=100.0, tolerance=0.5)
    knob = type(d).tune_knob
    assert res["met"] and d.params[knob] == res["value"]
    served_acc = 100.0 * (predict(d, x).argmax(1) == y).float().mean().item()
    assert served_acc == pytest.approx(res["accuracy"]) and served_acc >= 99.5
    assert all(acc < 99.5 for _, acc in res["trace"][:-1])  # every stronger value failed


def test_mad_is_weakened_when_it_hurts_accuracy(victim):
    ctx, x = victim
    d = build("mad", ctx)
    res = tune(d, x, labels_of(d, x), reference_acc=100.0, tolerance=0.5)
    assert res["trace"][0][0] == 2.0 and res["trace"][0][1] < 99.5  # eps 2 serves y*: top-1 moves
    assert res["value"] < 2.0


def test_untunable_defense_is_rejected(victim):
    ctx, x = victim
    with pytest.raises(ValueError, match="tune_knob"):
        tune(build("vanilla", ctx), x, torch.zeros(len(x), dtype=torch.long), reference_acc=0.0)


class NoGrid(FlipSome):
    tune_grid = ()


def test_missing_grid_falls_back_to_the_knob_range(victim):
    ctx, x = victim
    d = build(NoGrid, ctx)
    res = tune(d, x, labels_of(d, x), reference_acc=100.0, tolerance=0.5)
    assert len(res["grid"]) == 21 and res["grid"][0] == 1.0 and res["grid"][-1] == 0.0
    assert res["value"] == pytest.approx(0.0) and res["met"]


class FlipSomeAlways(FlipSome):
    """Test-only: also moves the top-1 of the last two rows of every 20 at any strength (a base
    that costs 10 points on its own, as InI does under InI+MAD)."""

    def perturb(self, x, probs):
        out = super().perturb(x, probs)
        last = (torch.arange(len(probs)) % 20 >= 18).unsqueeze(1)
        moved = torch.nn.functional.one_hot((probs.argmax(1) + 1) % probs.shape[1], probs.shape[1])
        return torch.where(last, moved.to(probs.dtype), out)


@pytest.mark.parametrize("tol, expect, fallback", [(5.0, 0.05, True), (0.5, 0.0, True), (10.0, 0.0, False)])
def test_an_unreachable_vanilla_anchor_falls_back_to_the_knob_off_accuracy(victim, tol, expect, fallback):
    """Knob off the defense is at 90% against a Vanilla anchor at 100%: with tolerance 5 the
    protocol cannot be met and would switch the knob off; the knob is tuned against 90% instead
    (strength 0.05 serves 85%). Within tolerance 10 Vanilla stays the anchor (and 0.05 misses it)."""
    from types import SimpleNamespace

    from bench.victims import tune_knobs
    ctx, x = victim
    d = build(FlipSomeAlways, ctx)
    y = labels_of(d, x)
    prof = SimpleNamespace(tune_split="val", tune_tolerance=tol)
    t = tune_knobs(prof, d, {"val": SimpleNamespace(x=x, y=y)}, "cpu", anchor=d.base)["tuning"]
    assert t["value"] == expect and t["met"]
    assert t["anchor"].startswith("knob off") == fallback
    if fallback:
        assert t["reference_acc"] == pytest.approx(90.0) and t["vanilla_acc"] == pytest.approx(100.0)
        assert not t["vanilla_attempt"]["trace"][-1][1] >= 100.0 - tol   # the Vanilla anchor was out of reach
