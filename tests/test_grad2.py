"""GRAD^2 (gradient redirection): the greedy step is the LP optimum, the class scores are the
gradient inner products they claim to be, and the served answer steers the attacker's step
toward the target (the sign matters). All data here is small and randomly generated.
"""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from scipy.optimize import linprog

from bench.data import ImageSet
from bench.train import Context, TrainConfig, seed_everything
from bench.tune import tune_spec
from defenses import Defense, get_defense
from defenses.grad2 import redirect

SHAPE = (1, 8, 8)
TARGETS = ["all-ones", "min-ip", "watermark"]


def random_probs(b, k, gen, temp=3.0):
    return torch.softmax(torch.randn(b, k, generator=gen, dtype=torch.float64) * temp, dim=1)


def images(n, gen):
    return ImageSet("gen", "train", torch.randn(n, *SHAPE, generator=gen),
                    torch.randint(0, 10, (n,), generator=gen), 10, (0.0,), (1.0,))


def tiny_ctx(seed=0, ood=True):
    gen = torch.Generator().manual_seed(5)  # generated images: only shapes and determinism matter
    return Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=8, id_train=images(48, gen),
                   ood_train=images(48, gen) if ood else None, train=TrainConfig(epochs=1, batch_size=16),
                   seed=seed, progress=False, arch_params={"width": 4, "hidden": 16})


def built(seed=0, fit=False, **params):
    ctx = tiny_ctx(seed)
    seed_everything(seed)
    d = get_defense("grad2", **params)
    d.build(ctx)
    if fit:
        for unit in d.units():
            seed_everything(seed)
            unit.fit(ctx)
    return d.eval()


def queries(n=24, seed=3):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def answers(d, x, temp=2.0, seed=4):
    """Generated 'victim' answers (the random base of an unfitted defense is near uniform)."""
    return random_probs(len(x), d.num_classes, torch.Generator().manual_seed(seed), temp).float()


# ---------------------------------------------------------------- the greedy step is optimal
def test_redirect_beats_a_brute_force_grid_for_three_classes():
    gen = torch.Generator().manual_seed(0)
    step = 0.005
    grid = torch.tensor([(a, b, 1 - a - b) for a, b in itertools.product(np.arange(0, 1 + 1e-9, step), repeat=2)
                         if a + b <= 1 + 1e-12], dtype=torch.float64).clamp_min(0)
    for _ in range(40):
        y = random_probs(1, 3, gen)
        c = torch.randn(1, 3, generator=gen, dtype=torch.float64)
        eps = float(torch.rand(1, generator=gen)) * 2
        out = redirect(y, c, eps)
        assert (out - y).abs().sum() <= eps + 1e-12
        feasible = grid[(grid - y).abs().sum(1) <= eps]
        best_grid = (feasible @ c[0]).max()
        got = (out @ c[0]).item()
        assert got >= best_grid - 1e-12                       # no feasible grid point does better
        assert got <= best_grid + 2 * step * c.abs().max()    # and the grid gets close to it


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(2, 12), eps=st.floats(0.0, 2.0),
       temp=st.sampled_from([0.3, 3.0, 30.0]))
def test_redirect_is_the_linear_program_optimum(seed, k, eps, temp):
    gen = torch.Generator().manual_seed(seed)
    y = random_probs(4, k, gen, temp)
    c = torch.randn(4, k, generator=gen, dtype=torch.float64)
    out = redirect(y, c, eps)
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(4, dtype=out.dtype))
    assert ((out - y).abs().sum(1) <= eps + 1e-9).all()
    for i in range(4):  # max c.y' s.t. sum y' = 1, y' >= 0, |y' - y| <= u, sum u <= eps
        yi, ci = y[i].numpy(), c[i].numpy()
        eye = np.eye(k)
        a_ub = np.block([[eye, -eye], [-eye, -eye], [np.zeros((1, k)), np.ones((1, k))]])
        b_ub = np.concatenate([yi, -yi, [eps]])
        a_eq = np.concatenate([np.ones(k), np.zeros(k)])[None]
        lp = linprog(np.concatenate([-ci, np.zeros(k)]), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0],
                     bounds=[(0, None)] * (2 * k), method="highs")
        assert lp.status == 0
        # HiGHS solves to a feasibility tolerance of 1e-7 per constraint: its optimum is good to ~1e-6
        assert float(out[i] @ c[i]) >= -lp.fun - 1e-6 * (1 + abs(lp.fun))


def test_redirect_moves_mass_from_the_lowest_scores_to_the_highest():
    y = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    c = torch.tensor([[3.0, 0.0, 1.0, -1.0]], dtype=torch.float64)   # top: class 0; give from 3, then 1
    out = redirect(y, c, 1.0)
    assert torch.allclose(out, torch.tensor([[0.6, 0.1, 0.3, 0.0]], dtype=torch.float64))
    assert torch.equal(redirect(y, c, 0.0), y)
    full = redirect(y, c, 2.0)   # the whole budget: all mass on the top class
    assert torch.allclose(full, torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))


# ---------------------------------------------------------------- the class scores
def flat_grad(net, scalar):
    grads = torch.autograd.grad(scalar, list(net.parameters()), retain_graph=True)
    return torch.cat([g.flatten() for g in grads])


def logp_grads(net, xi):
    """(K, P): row k = grad_theta log f_k(xi), by one backward pass per class."""
    with torch.enable_grad():
        logp = torch.log_softmax(net(xi.unsqueeze(0)), 1)[0]
        return torch.stack([flat_grad(net, logp[k]) for k in range(len(logp))])


def reference_target(d, J, yi):
    """The target a for one query with class-gradient matrix J, computed the plain way."""
    net, target = d.nets["surrogate"], d.params["target"]
    if target == "all-ones":
        return torch.ones(J.shape[1])
    if target == "min-ip":
        return -(J.t() @ yi)
    return logp_grads(net, d.watermark_x)[d.watermark_label]


@pytest.mark.parametrize("target", TARGETS)
def test_class_scores_are_gradient_inner_products(target):
    d = built(target=target)
    x = queries(6)
    y = answers(d, x)
    c = d.class_scores(x, y)
    for i in range(len(x)):
        J = logp_grads(d.nets["surrogate"], x[i])
        want = J @ reference_target(d, J, y[i])
        assert torch.allclose(c[i], want, rtol=1e-4, atol=1e-5 * want.abs().max()), (c[i], want)


# ---------------------------------------------------------------- the served answer
def attacker_step(net, xi, yi):
    """The SGD step direction of an attacker that is the surrogate: -grad of soft cross-entropy."""
    with torch.enable_grad():
        ce = -(yi * torch.log_softmax(net(xi.unsqueeze(0)), 1)[0]).sum()
        return -flat_grad(net, ce)


@pytest.mark.parametrize("target", TARGETS)
def test_served_answer_steers_the_attackers_step_toward_the_target(target):
    d = built(target=target, eps=0.6)
    net = d.nets["surrogate"]
    x = queries(10)
    y = answers(d, x)
    served = d.perturb(x, y)
    flipped = redirect(y, -d.class_scores(x, y), 0.6)   # the same step with the sign flipped
    gain, cos_up = [], []
    for i in range(len(x)):
        J = logp_grads(net, x[i])
        a = reference_target(d, J, y[i])
        u0, u1, uf = (attacker_step(net, x[i], v) for v in (y[i], served[i], flipped[i]))
        assert (u1 @ a) > (u0 @ a) > (uf @ a)
        gain.append(float((u1 @ a) - (u0 @ a)))
        cos_up.append(float(F.cosine_similarity(u1, a, 0) - F.cosine_similarity(u0, a, 0)))
    assert min(gain) > 0
    assert min(cos_up) > 0   # the LP maximizes the inner product; the cosine rises too here


def test_watermark_target_teaches_a_clone_the_watermark():
    d = built(target="watermark", eps=1.0)
    net = d.nets["surrogate"]
    x = queries(64)
    y = answers(d, x)
    served = d.perturb(x, y)

    def wm_logp_after_one_step(targets):
        clone = type(net)(num_classes=10, in_channels=1, width=4, hidden=16)
        clone.load_state_dict(net.state_dict())
        clone.eval()
        opt = torch.optim.SGD(clone.parameters(), lr=1e-3)
        with torch.enable_grad():
            (-(targets * torch.log_softmax(clone(x), 1)).sum(1).mean()).backward()
        opt.step()
        with torch.no_grad():
            return torch.log_softmax(clone(d.watermark_x.unsqueeze(0)), 1)[0, d.watermark_label].item()

    assert wm_logp_after_one_step(served) > wm_logp_after_one_step(y)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.5, 2.0])
def test_served_answers_are_probabilities_within_eps(target, eps):
    d = built(target=target, eps=eps)
    x = queries(40)
    served, base = d(x), d.base(x)
    assert (served >= 0).all() and torch.allclose(served.sum(1), torch.ones(40), atol=1e-5)
    assert ((served - base).abs().sum(1) <= eps + 1e-6).all()
    if eps == 0:
        assert torch.equal(served, base)
    else:
        assert ((served - base).abs().sum(1) > 0).all()


@pytest.mark.parametrize("target", TARGETS)
def test_answer_does_not_depend_on_its_batch(target):
    d = built(target=target, eps=0.5)
    x = queries(10)
    y = answers(d, x)
    together = d.perturb(x, y)
    alone = torch.cat([d.perturb(x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(together, alone, atol=1e-6)


# ---------------------------------------------------------------- surrogate, params, tuning
def test_surrogate_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(1)
    a = built(seed=0)
    torch.manual_seed(2)
    b = get_defense("grad2")
    b.base.build(tiny_ctx(0))             # the base's own init draws from the global RNG
    state = torch.random.get_rng_state()
    Defense.build(b, tiny_ctx(0))         # grad2's own part: the surrogate and the watermark
    assert torch.equal(torch.random.get_rng_state(), state)
    for (n, p), (_, q) in zip(a.nets.named_parameters(), b.nets.named_parameters()):
        assert torch.equal(p, q), n
    c = built(seed=1)
    assert not torch.equal(a.nets["surrogate"].fc.weight, c.nets["surrogate"].fc.weight)


def test_distilled_surrogate_trains_and_keys_on_its_base():
    random_sur = built()
    d = built(fit=True, surrogate_epochs=1)
    w0, w1 = random_sur.nets["surrogate"].fc.weight, d.nets["surrogate"].fc.weight
    assert not torch.equal(w0, w1)                         # fit moved the seeded initial surrogate
    assert d.train_params()["base"] == "vanilla" and "target" not in d.train_params()
    assert "base" not in random_sur.train_params()
    served, base = d(queries(8)), d.base(queries(8))
    assert ((served - base).abs().sum(1) <= 0.5 + 1e-6).all()
    no_ood = get_defense("grad2", surrogate_epochs=2)
    no_ood.build(tiny_ctx(ood=False))
    with pytest.raises(ValueError, match="ood_train"):
        no_ood.fit(tiny_ctx(ood=False))


@pytest.mark.parametrize("params,msg", [
    ({"target": "ones"}, r"accepted: \['all-ones', 'min-ip', 'watermark'\]"),
    ({"surrogate_epochs": -1}, "integer >= 0"),
    ({"surrogate_epochs": 1.5}, "integer >= 0"),
    ({"eps": 2.5}, r"accepted \[0.0, 2.0\]"),
])
def test_bad_params_name_what_is_accepted(params, msg):
    with pytest.raises(ValueError, match=msg):
        get_defense("grad2", **params)


def test_tuned_like_mad_and_composes():
    d = get_defense("grad2")
    knob, grid, strongest = tune_spec(d)
    assert knob == "eps" and strongest == "high" and grid[0] == 2.0 and grid[-1] == 0.0
    assert tune_spec(get_defense("mad"))[1] == grid
    composed = get_defense("ini+grad2", eps=0.3)
    assert composed.base.name == "ini" and composed.display == "InI+GRAD2"


def test_builds_without_training_images_unless_its_target_needs_one():
    """bench.estimate builds every defense of a profile from shapes only (no data): GRAD^2 picked
    its watermark image even for the all-ones target and crashed the cpu-extended estimate."""
    from bench.estimate import estimate
    from bench.profiles import get_profile
    assert estimate(get_profile("cpu-extended"))
    ctx = Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=28, id_train=None, train=TrainConfig())
    get_defense("grad2", base=get_defense("vanilla")).build(ctx)
    with pytest.raises(ValueError, match="watermark"):
        get_defense("grad2", base=get_defense("vanilla"), target="watermark").build(ctx)
