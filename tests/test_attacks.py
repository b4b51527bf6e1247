import pytest
import torch

from attacks import AttackContext, get_attack, list_attacks
from bench.oracle import Oracle

from tests.generated import LinearVictim  # noqa: E402


def ctx(**kw):
    g = torch.Generator().manual_seed(1)
    return AttackContext(clone_arch="smallcnn", num_classes=10, in_channels=1, input_size=8,
                         query_set=torch.randn(400, 1, 8, 8, generator=g),
                         seed_set=torch.randn(100, 1, 8, 8, generator=g), progress=False,
                         arch_params={"width": 4, "hidden": 16}, **kw)


@pytest.mark.parametrize("rounds,seed_size", [(1, 10), (3, 10), (4, 6)])
@pytest.mark.parametrize("label", ["soft", "hard"])
def test_jbda_set_doubles_and_query_count(rounds, seed_size, label):
    att = get_attack("jbda", rounds=rounds, seed_size=seed_size, epochs_per_round=1)
    assert att.budget() == seed_size * (2 ** rounds - 1)
    oracle = Oracle(LinearVictim(), att.budget(), label)
    att.run(oracle, ctx())
    assert oracle.queries_used == seed_size * (2 ** rounds - 1)
    assert att.final_set_size == seed_size * 2 ** (rounds - 1)


def test_jbda_paper_default_counts():
    att = get_attack("jbda")
    assert att.budget() == 9450


def test_jbda_more_rounds_than_budget():
    with pytest.raises(ValueError, match="more than the budget"):
        get_attack("jbda", rounds=6, max_queries=1000)


@pytest.mark.parametrize("label", ["soft", "hard"])
def test_knockoff_uses_exact_budget(label):
    att = get_attack("knockoff", budget=150, epochs=1)
    oracle = Oracle(LinearVictim(), att.budget(), label)
    clone = att.run(oracle, ctx())
    assert oracle.queries_used == 150
    assert clone(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_knockoff_bad_budget(bad):
    with pytest.raises(ValueError, match="positive integer"):
        get_attack("knockoff", budget=bad)


def test_knockoff_budget_larger_than_pool():
    att = get_attack("knockoff", budget=1000, epochs=1)
    with pytest.raises(ValueError, match="exceeds the query set"):
        att.run(Oracle(LinearVictim(), 1000), ctx())


def test_every_attack_has_paper_defaults():
    for name in list_attacks():
        att = get_attack(name)
        assert att.budget() > 0


@pytest.mark.parametrize("name", list_attacks())
def test_runner_hands_over_only_the_seed_images_the_attack_may_hold(name):
    """Threat model: JBDA gets its first seed_size training images, other attacks none."""
    from bench.data import ImageSet
    from bench.run import seed_set
    train = ImageSet("gen", "train", torch.randn(50, 1, 8, 8), torch.zeros(50, dtype=torch.long), 10,
                     (0.0,), (1.0,))
    att = get_attack(name, **({"seed_size": 7} if name == "jbda" else {}))
    given = seed_set(att, train)
    if name == "jbda":
        assert torch.equal(given, train.x[:7])
    else:
        assert given is None and att.seed_images() == 0


@pytest.mark.parametrize("units", ["normalized", "pixel"])
def test_jbda_step_units(units):
    """InI's reference adds lmbda * sign(grad) to the normalized image: the default step is 0.1
    normalized units; "pixel" keeps the paper's reading (0.1 of the [0, 1] range = 0.1/std)."""
    att = get_attack("jbda", step=0.1, step_units=units)
    c = ctx(mean=(0.5,), std=(0.25,))
    clone = c.new_clone()
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5  # pixels 0.375-0.625
    lo, hi = c.pixel_bounds()
    out = att.augment(clone, x, torch.zeros(20, dtype=torch.long), c, lo, hi)
    moved = (out - x).abs()
    want = 0.1 if units == "normalized" else 0.1 / 0.25
    assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], want))
    assert (moved > 0).float().mean() > 0.5


def test_jbda_default_step_units_is_the_references():
    assert get_attack("jbda").params["step_units"] == "normalized"
    with pytest.raises(ValueError, match="step_units"):
        get_attack("jbda", step_units="pixels")


@pytest.mark.parametrize("name,params,n", [("knockoff", {"budget": 120, "epochs": 3, "curve_budgets": (60,)}, 3),
                                           ("jbda", {"seed_size": 10, "rounds": 3, "epochs_per_round": 2}, 3)])
def test_attacks_hand_the_clone_to_the_runner_where_the_reference_tests_it(name, params, n):
    """The reference records test accuracy per epoch (KnockoffNets) or per round (JBDA) and
    reports the best; the attack only hands over its clone (curve clones excluded)."""
    seen = []
    att = get_attack(name, **params)
    clone = att.run(Oracle(LinearVictim(), att.budget()), ctx(on_checkpoint=lambda c: seen.append(
        (c.training, [p.detach().clone() for p in c.parameters()]))))
    assert len(seen) == n and not any(training for training, _ in seen)
    assert all(torch.equal(a, b) for a, b in zip(seen[-1][1], clone.parameters()))


@pytest.mark.parametrize("label", ["soft", "hard"])
def test_copycat_learns_from_labels_only(label):
    att = get_attack("copycat", budget=100, epochs=1)
    seen = {}

    def spy(actx, x, targets, *a, **k):
        seen["targets"] = targets
        return actx.new_clone()
    import attacks.copycat as C
    orig, C.train_new_clone = C.train_new_clone, spy
    try:
        oracle = Oracle(LinearVictim(), att.budget(), label)
        att.run(oracle, ctx())
    finally:
        C.train_new_clone = orig
    assert oracle.queries_used == 100 and seen["targets"].dim() == 1 and seen["targets"].dtype == torch.int64


@pytest.mark.parametrize("strategy", ["uncertainty", "kcenter"])
def test_activethief_spends_the_budget_in_rounds_on_new_images(strategy):
    att = get_attack("activethief", budget=103, initial=0.2, rounds=3, strategy=strategy, epochs=1)
    assert att.slices() == [21, 28, 27, 27] and sum(att.slices()) == 103
    asked = []

    class Counting(Oracle):
        def query(self, x):
            asked.append(x.clone())
            return super().query(x)
    oracle = Counting(LinearVictim(), att.budget(), "soft")
    att.run(oracle, ctx())
    allx = torch.cat(asked)
    assert oracle.queries_used == 103 and len(asked) == 4
    assert len({tuple(r.flatten()[:8].tolist()) for r in allx}) == 103     # no image asked twice


def test_activethief_uncertainty_picks_the_most_uncertain():
    att = get_attack("activethief", budget=10, strategy="uncertainty")
    c = ctx()

    class Fixed(torch.nn.Module):   # the clone's softmax: row i has entropy rising with i
        def forward(self, x):
            i = x[:, 0, 0, 0]
            return torch.stack([i, torch.zeros_like(i)], 1) * -1.0
    pool = torch.zeros(6, 1, 8, 8)
    pool[:, 0, 0, 0] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    picked = att.select(Fixed(), pool, torch.tensor([5]), 2, c)
    assert sorted(picked.tolist()) == [3, 4]   # 5 (most uncertain) is already labelled


class FlagAfter:
    """A stream monitor that flags the account once it has seen more than ``n`` queries."""
    def __init__(self, n):
        self.n, self.seen = n, 0

    def observe(self, x, probs):
        self.seen += len(x)
        return {"monitor": "test", "at": self.seen} if self.seen > self.n else None


@pytest.mark.parametrize("name", ["knockoff", "copycat"])
def test_refused_pool_attack_trains_on_what_it_was_answered(name):
    """Refused part-way (after 1,024 answered queries), the attacker still trains a clone on
    those answers, hands it to the runner's checkpoint, then re-raises the refusal."""
    from bench.oracle import Refused
    att = get_attack(name, budget=2500, epochs=1)
    oracle = Oracle(LinearVictim(), att.budget(), "soft", monitors=[FlagAfter(1500)])
    seen = []
    g = torch.Generator().manual_seed(1)
    c = ctx(on_checkpoint=lambda clone: seen.append(clone))
    c.query_set = torch.randn(3000, 1, 8, 8, generator=g)
    with pytest.raises(Refused):
        att.run(oracle, c)
    assert oracle.queries_used == 1024 and len(seen) == 1
