"""The adaptive (Kerckhoffs) attacker and the runner's shadow-defense factory (bench/shadow.py).

Every image, probability vector and model here is generated (random tensors, randomly
initialized tiny CNNs), not a real data set.
"""
import json
from contextlib import nullcontext

import pytest
import torch
import torch.nn as nn

from attacks import AttackContext, get_attack
from attacks.adaptive import as_probs, apply_map, fit_answer_map, fit_trust
from bench.oracle import Oracle
from bench.shadow import ShadowDefenseFactory, UnsupportedDefense, attacker_view, defense_info
from bench.train import Context, TrainConfig
from defenses import get_defense
from tests.generated import generated_set

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 4, "hidden": 16}


def tiny_ctx(seed=0):
    return Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=8,
                   id_train=generated_set(200, "gen-id", 0, size=8), ood_train=generated_set(200, "gen-ood", 1, size=8),
                   train=TrainConfig(epochs=1), progress=False, arch_params=TINY, seed=seed)


def victim(name, **params):
    """A served defense on generated data (its units trained one epoch)."""
    ctx = tiny_ctx()
    torch.manual_seed(0)
    d = get_defense(name, **params)
    d.build(ctx)
    for u in d.units():
        u.fit(ctx)
    return d.eval()


def factory_for(d, name):
    return ShadowDefenseFactory(defense_info(d, name), arch="smallcnn", arch_params=TINY, num_classes=10,
                                in_channels=1, input_size=8)


class Logits(nn.Module):
    """A generated shadow: a fixed random linear map to logits, scaled to be confident."""

    def __init__(self, seed=0, scale=3.0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(64, 10)
        self.scale = scale

    def forward(self, x):
        return self.scale * self.lin(x.flatten(1))


def images(n=300, seed=1):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def actx(**kw):
    return AttackContext(clone_arch="smallcnn", num_classes=10, in_channels=1, input_size=8,
                         query_set=images(400, 2), progress=False, arch_params=TINY, **kw)


SMALL = {"budget": 150, "epochs": 1, "shadow_epochs": 1, "extra_images": 100, "map_steps": 300, "aux_epochs": 1,
         "sharpness_spread": (0.5, 2.0), "keys": 1}


def contains_tensor_or_module(obj, seen=None) -> bool:
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    if isinstance(obj, (torch.Tensor, nn.Module)):
        return True
    if isinstance(obj, dict):
        return any(contains_tensor_or_module(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(contains_tensor_or_module(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return contains_tensor_or_module(vars(obj), seen)
    return False


# ---------------------------------------------------------------- what the attacker is told
@pytest.mark.parametrize("name,params", [("mad", {"eps": 0.7}), ("vanilla+am", {"tau": 0.9}), ("vanilla", {})])
def test_the_context_carries_no_weights(name, params):
    """defense_info is JSON with the public params; the factory holds no tensor, no module
    (so no victim, no surrogate), only that JSON and shapes."""
    d = victim(name, **params)
    roles = {"num_classes": 10, "in_channels": 1, "input_size": 8, "test": generated_set(4, "gen", 3, size=8)}
    view = attacker_view(d, name, "smallcnn", TINY, roles, "cpu", 0)
    info = view["defense_info"]
    assert json.loads(json.dumps(info)) == info
    assert not contains_tensor_or_module(info) and not contains_tensor_or_module(view["defense_factory"])
    assert info["name"] == name and info["defense"] == d.name
    for k, v in params.items():
        assert info["params"][k] == v
    assert info["post_processor"] == (name != "vanilla")


def test_defense_info_drops_anything_not_json():
    d = get_defense("rounding", decimals=2)
    d.params["secret"] = torch.ones(3)   # as if a defense kept a tensor among its params
    info = defense_info(d, "rounding")
    assert "secret" not in info["params"] and info["params"]["decimals"] == 2


# ---------------------------------------------------------------- the factory
def test_factory_rounds_like_rounding():
    shadow, x = Logits(), images()
    served = factory_for(victim("rounding", decimals=1), "rounding")(shadow, x)
    p, y = torch.softmax(shadow(x), 1).detach(), served(x)
    assert torch.allclose(y * 10, torch.round(y * 10), atol=1e-5)            # one decimal
    assert torch.allclose(y, get_defense("rounding", decimals=1).perturb(x, p), atol=1e-6)   # the victim's rule
    assert torch.allclose(y.sum(1), torch.ones(len(x)), atol=1e-6)


def test_factory_keeps_the_top_k_of_the_shadow():
    shadow, x = Logits(), images()
    served = factory_for(victim("topk", k=2), "topk")(shadow, x)
    p, y = torch.softmax(shadow(x), 1).detach(), served(x)
    top = p.topk(2, 1)
    want = torch.zeros_like(p).scatter(1, top.indices, top.values / top.values.sum(1, keepdim=True))
    assert torch.allclose(y, want, atol=1e-6)


def test_factory_draws_its_own_mad_surrogate():
    """MAD's random surrogate is the defender's secret: the shadow's MAD uses another draw,
    the shadow as its base, and the victim's eps."""
    d = victim("mad", eps=0.9)
    shadow = Logits()
    served = factory_for(d, "mad")(shadow, images())
    mine = served.defense
    assert mine.params["eps"] == 0.9 and mine.base.nets["model"] is shadow
    weights = lambda m: [w for w in m.parameters() if w.dim() > 1]   # BN's init is not random
    assert not any(torch.equal(a, b) for a, b in zip(weights(mine.nets["surrogate"]), weights(d.nets["surrogate"])))


def test_factory_trains_am_misinformation_on_attacker_images():
    """AM around a shadow: with tau 1 every query is misinformation, which learned (on the
    attacker's images only) to avoid the shadow's top-1."""
    shadow, x = Logits(scale=1.0), images(400)
    f = factory_for(victim("vanilla+am", tau=1.0, nu=1e6), "vanilla+am")
    served = f(shadow, x, epochs=10, lr=0.05)
    y, top = served(x), shadow(x).argmax(1)
    mis = torch.softmax(served.defense.nets["mis"](x), 1).detach()
    assert torch.allclose(y, mis, atol=1e-6)
    assert (y.argmax(1) == top).float().mean() < 0.1          # below chance
    assert y.gather(1, top[:, None]).mean() < 0.08            # below uniform (0.1) on the shadow's label


@pytest.mark.parametrize("name", ["vanilla", "ini", "edm"])
def test_factory_refuses_training_time_defenses(name):
    info = {"name": name, "defense": name, "post_processor": False, "params": {}, "base": None}
    f = ShadowDefenseFactory(info, arch="smallcnn", arch_params=TINY, num_classes=10, in_channels=1, input_size=8)
    with pytest.raises(UnsupportedDefense, match="training-time"):
        f(Logits(), images())


# ---------------------------------------------------------------- the map
def generated_probs(n, seed, temp=3.0):
    return torch.softmax(torch.randn(n, 10, generator=torch.Generator().manual_seed(seed)) * temp, 1)


def agreement(a, b):
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def test_map_undoes_a_fixed_class_permutation():
    """AM-like misinformation: every answer is its probabilities moved to other classes by a
    fixed permutation. The map learned on pairs recovers the top-1 on fresh vectors."""
    perm = torch.roll(torch.arange(10), 3)
    train, test = generated_probs(2000, 0), generated_probs(500, 1)
    m = fit_answer_map(train[:, perm], train, steps=1500, generator=torch.Generator().manual_seed(0),
                       frame="classes")   # a class-specific rule: the sorted frame cannot see it
    assert agreement(test[:, perm], test) < 0.2
    assert agreement(apply_map(m, test[:, perm]), test) > 0.9


def spiked(probs, classes, eps=0.75):
    """MAD's mixing, y' = (1 - a) y + a e_k with a = eps / ||y - e_k||_1, the spike k being the
    least likely of ``classes`` (a secret surrogate favours a few classes of its own)."""
    k = classes[probs[:, classes].argmin(1)]
    e = torch.nn.functional.one_hot(k, probs.shape[1]).float()
    a = (eps / (probs - e).abs().sum(1, keepdim=True)).clamp(0, 1)
    return (1 - a) * probs + a * e


@pytest.mark.parametrize("frame,recovers", [("sorted", True), ("classes", False)])
def test_map_learns_the_spike_rule_not_the_shadows_classes(frame, recovers):
    """MAD-like answers whose spike goes to classes 0-2 on the shadow and to 7-9 on the victim:
    the sorted-frame map learns "the spike is not the answer" and restores the victim's top-1
    where the spike overtook it; the class-frame map learns the shadow's classes and does not."""
    train, test = generated_probs(4000, 0, temp=1.5), generated_probs(1000, 1, temp=1.5)
    m = fit_answer_map(spiked(train, torch.tensor([0, 1, 2])), train, steps=1500,
                       generator=torch.Generator().manual_seed(0), frame=frame)
    served = spiked(test, torch.tensor([7, 8, 9]))
    raw, mapped = agreement(served, test), agreement(apply_map(m, served), test)
    assert raw < 0.9
    assert (mapped > raw + 0.5 * (1 - raw)) == recovers


def test_map_undoes_a_strong_reverse_sigmoid():
    """Reverse sigmoid at beta 2, gamma 0.5 never serves the true top-1; the map restores it."""
    rs = get_defense("reverse-sigmoid", beta=2.0, gamma=0.5)
    train, test = generated_probs(2000, 0), generated_probs(500, 1)
    m = fit_answer_map(rs.perturb(None, train), train, steps=1500, generator=torch.Generator().manual_seed(0))
    assert agreement(rs.perturb(None, test), test) < 0.1
    assert agreement(apply_map(m, rs.perturb(None, test)), test) > 0.8


class LogitVictimRS(nn.Module):
    """Generated victim: a random linear model behind reverse sigmoid (beta 2, gamma 0.5)."""

    def __init__(self):
        super().__init__()
        self.net = Logits(seed=5)
        self.rs = get_defense("reverse-sigmoid", beta=2.0, gamma=0.5)

    def undefended(self, x):
        return torch.softmax(self.net(x), 1)

    def forward(self, x):
        return self.rs.perturb(x, self.undefended(x))


def test_attack_trains_its_clone_on_inverted_answers(monkeypatch):
    """End to end through the oracle, the factory and the map: reverse sigmoid (beta 2) never
    serves the victim's top-1, the clone's targets often do. (A 150-image shadow of a random
    linear victim on noise images is a poor copy, so far from every target is right.)"""
    import attacks.adaptive as A
    seen = {}
    monkeypatch.setattr(A, "train_new_clone", lambda actx, x, t, *a, **k: seen.update(x=x, t=t) or actx.new_clone())
    v = LogitVictimRS()
    f = factory_for(get_defense("reverse-sigmoid", beta=2.0, gamma=0.5), "reverse-sigmoid")
    att = get_attack("adaptive", **{**SMALL, "map_steps": 1000, "shadow_epochs": 10})
    oracle = Oracle(v, att.budget(), "soft")
    att.run(oracle, actx(defense_info=f.info, defense_factory=f))
    with torch.no_grad():
        truth, served = v.undefended(seen["x"]), v(seen["x"])
    assert agreement(served, truth) < 0.05
    assert agreement(seen["t"], truth) > 0.2
    assert att.log["fallback"] is None and oracle.queries_used == 150


# ---------------------------------------------------------------- adaptive-filter
def misinformed(probs, share, seed):
    """AM-like answers: a ``share`` of the vectors replaced by a misinformation model's, flat and
    unrelated to the true class (as measured on MNIST: the true top-1 sits at a random rank)."""
    g = torch.Generator().manual_seed(seed)
    mis = torch.rand(len(probs), generator=g) < share
    fake = torch.softmax(torch.randn(len(probs), 10, generator=g) * 0.3, 1)
    return torch.where(mis[:, None], fake, probs), mis


def test_trust_tells_misinformation_from_genuine_answers():
    """On generated pairs the map repairs the genuine answers, not the misinformation; the trust
    net, fitted on which ones were repaired, keeps most genuine answers of a fresh set and few
    misinformation ones."""
    train, test = generated_probs(3000, 0), generated_probs(1000, 1)
    served, _ = misinformed(train, 0.7, 2)
    m = fit_answer_map(served, train, steps=800, generator=torch.Generator().manual_seed(0))
    repaired = (apply_map(m, served).argmax(1) == train.argmax(1)).float()
    net = fit_trust(served, repaired, steps=800, generator=torch.Generator().manual_seed(1))
    fresh, mis = misinformed(test, 0.7, 3)
    with torch.no_grad():
        keep = torch.sigmoid(net(fresh)).squeeze(1) >= 0.5
    assert keep[~mis].float().mean() > 0.9 and keep[mis].float().mean() < 0.2


def gated_served(shadow, temp, tau=0.7):
    """AM-like serving around ``shadow``: below top probability tau, a generated misinformation
    vector (softmax of noise times ``temp``: how peaked this key's misinformation model is)."""
    def served(xb):
        p = torch.softmax(shadow(xb), 1)
        fake = torch.softmax(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * temp, 1)
        return torch.where((p.max(1).values < tau)[:, None], fake, p)
    return served


@pytest.mark.parametrize("victim_temp,shadow_temp", [(0.3, 3.0), (3.0, 0.3), (1.0, 2.0)])
def test_profile_matching_finds_the_victims_gate_rate_where_top_matching_does_not(victim_temp, shadow_temp):
    """The shadow's misinformation model is not the victim's (another key, fewer epochs): matching
    the mean top probability then picks a sharpness whose gate rate is far off (on MNIST's AM,
    every shadow answer went to misinformation); matching the whole sorted profile comes closer."""
    from attacks.adaptive import Scaled, logit_spread, match_sharpness
    shadow = Scaled(Logits(seed=0, scale=1.0)).eval()
    x = images(2000, 3)
    unit = logit_spread(shadow, x, "cpu")
    gate_rate = lambda: (torch.softmax(shadow(x), 1).max(1).values < 0.7).float().mean().item()  # noqa: E731
    shadow.scale = 4.0 / unit
    with torch.no_grad():
        raw, want = gated_served(shadow, victim_temp)(x), gate_rate()
        err = {}
        for match in ("top", "profile"):
            shadow.scale = match_sharpness(shadow, gated_served(shadow, shadow_temp), x, raw, unit, "cpu", match) / unit
            err[match] = abs(gate_rate() - want)
    assert err["profile"] < err["top"]


class MisinformedVictim(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Logits(seed=5)

    def forward(self, x):
        return misinformed(torch.softmax(self.net(x), 1), 0.7, 4)[0]


@pytest.mark.parametrize("label", ["soft", "hard"])
def test_filter_keeps_the_answers_it_trusts_and_otherwise_is_the_adaptive_attack(monkeypatch, label):
    """With adaptive's matching (match="top"): the same queries, shadow, map and random streams
    as ``adaptive`` (same targets); it trains on a subset of them (never fewer than min_keep), and
    with hard labels on all of them."""
    import attacks.adaptive as A
    seen = []
    monkeypatch.setattr(A, "train_new_clone",
                        lambda actx, x, t, *a, **k: seen.append((x, t)) or actx.new_clone())
    f = factory_for(get_defense("rounding", decimals=1), "rounding")
    for name in ("adaptive", "adaptive-filter"):
        att = get_attack(name, **{**SMALL, **({"min_keep": 0.4, "match": "top"} if name == "adaptive-filter" else {})})
        torch.manual_seed(0)
        att.run(Oracle(MisinformedVictim(), att.budget(), label), actx(defense_info=f.info, defense_factory=f))
    (x_all, t_all), (x_kept, t_kept) = seen
    assert att.log["kept"]["share"] == (100.0 if label == "hard" else 100.0 * len(x_kept) / len(x_all))
    if label == "hard":
        assert torch.equal(x_kept, x_all) and torch.equal(t_kept, t_all)
        return
    assert 0.4 * len(x_all) <= len(x_kept) <= len(x_all)
    rows = {tuple(r.flatten().tolist()): i for i, r in enumerate(x_all)}
    idx = torch.tensor([rows[tuple(r.flatten().tolist())] for r in x_kept])
    assert torch.allclose(t_kept, t_all[idx])   # the adaptive attack's own targets, a subset of them


# ---------------------------------------------------------------- budget and fallback
@pytest.mark.parametrize("label", ["soft", "hard"])
@pytest.mark.parametrize("name", ["rounding", "vanilla"])
def test_exact_budget(label, name):
    d = victim(name)
    f = factory_for(d, name)
    att = get_attack("adaptive", **SMALL)
    oracle = Oracle(d, att.budget(), label)
    with pytest.warns(UserWarning, match="KnockoffNets") if name == "vanilla" else nullcontext():
        clone = att.run(oracle, actx(defense_info=f.info, defense_factory=f))
    assert oracle.queries_used == 150
    assert clone(images(2)).shape == (2, 10)
    assert (att.log["fallback"] is None) == (name != "vanilla")


def test_without_a_factory_it_is_knockoff():
    """No factory (or a training-time defense): the same queries and clone as KnockoffNets."""
    v = victim("vanilla")
    clones = []
    for name in ("knockoff", "adaptive"):
        params = {k: SMALL[k] for k in ("budget", "epochs")}
        att = get_attack(name, **params)
        torch.manual_seed(0)
        with pytest.warns(UserWarning) if name == "adaptive" else nullcontext():
            clones.append(att.run(Oracle(v, att.budget()), actx()))
    assert all(torch.equal(a, b) for a, b in zip(clones[0].state_dict().values(), clones[1].state_dict().values()))


def test_hard_labels_are_one_hot_for_the_map():
    assert torch.equal(as_probs(torch.tensor([2, 0]), 3), torch.tensor([[0., 0., 1.], [1., 0., 0.]]))


@pytest.mark.parametrize("bad,match", [({"budget": 0}, "budget"), ({"shadow_epochs": 0}, "shadow_epochs"),
                                       ({"sharpness_spread": (1.0, -1.0)}, "sharpness_spread"),
                                       ({"extra_images": -1}, "extra_images"),
                                       ({"map_frame": "rank"}, "map_frame")])
def test_bad_params(bad, match):
    with pytest.raises(ValueError, match=match):
        get_attack("adaptive", **bad)


@pytest.mark.parametrize("bad", [{"trust": 1.5}, {"min_keep": -0.1}, {"trust": "high"}, {"match": "mean"}])
def test_bad_filter_params(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        get_attack("adaptive-filter", **bad)


def test_the_runner_hands_over_the_view_and_counts_the_budget(real_root, tiny_profile, tmp_path, monkeypatch):
    """bench.cells builds the context: the attack gets the defense's JSON view and a factory
    (real MNIST slice, rounding on the tiny Vanilla victim), and its queries are counted."""
    from dataclasses import replace

    import attacks.adaptive as A
    from bench.cells import run_cell
    seen = {}
    orig = A.AdaptiveKnockoff.run
    monkeypatch.setattr(A.AdaptiveKnockoff, "run", lambda self, o, c: seen.update(ctx=c) or orig(self, o, c))
    p = replace(tiny_profile, defenses=("rounding",), defense_params={"rounding": {"decimals": 1}},
                arch_params=TINY, train_size=500, test_size=200, query_size=500,
                attacks={"adaptive": {**SMALL, "budget": 300, "map_steps": 100}})
    rec = run_cell(p, "mnist", "rounding", "adaptive", "soft", 0, tmp_path, data_root=real_root, progress=False)
    assert rec.status == "ok", rec.error
    assert rec.queries_used == rec.budget == 300
    assert rec.attack_log["defense"] == "rounding" and rec.attack_log["fallback"] is None   # recorded
    c = seen["ctx"]
    assert c.defense_info["name"] == "rounding" and c.defense_info["params"] == {"decimals": 1}
    assert json.loads(json.dumps(c.defense_info)) == c.defense_info
    assert c.defense_factory is not None and not contains_tensor_or_module(c.defense_factory)
