import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.models import SmallCNN
from defenses import get_defense
from tests.generated import generated_set, tiny_ctx
from defenses.ini import Surrogate, gradient_norm, isolation


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- reference values (plain autograd)
def flat_grad(loss, params, **kw):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, **kw)])


def ref_isolation(victim, clone, x, y, adv):
    zv, zc = victim(x), clone(x)
    lc = F.log_softmax(zc, 1)
    if adv == "kl":
        a = (lc.exp() * (lc - F.log_softmax(zv, 1))).sum(1).mean()
    else:
        a = -(F.softmax(zv, 1) * lc).sum(1).mean()
    cp = list(clone.parameters())
    g1 = flat_grad(a, cp, retain_graph=True)
    g2 = flat_grad(F.cross_entropy(zc, y), cp)
    return F.cosine_similarity(g1, g2, dim=0)


def ref_gradnorm(victim, clone, xo, form):
    zv, zc = victim(xo), clone(xo)
    lc = F.log_softmax(zc, 1)
    g = flat_grad((lc.exp() * (lc - F.log_softmax(zv, 1))).sum(1).mean(), list(clone.parameters()))
    return g.abs().mean() if form == "code" else g.norm()


def tiny_pair():
    torch.manual_seed(0)
    victim = SmallCNN(num_classes=4, width=2, hidden=5).double().eval()
    clone = SmallCNN(num_classes=4, width=2, hidden=5).double().eval()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    return victim, clone, x, y


def fd_check(value_fn, victim, analytic, n_coords=12, h=1e-6):
    params = list(victim.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(n_coords):
        k = torch.randint(len(params), (1,), generator=gen).item()
        i = torch.randint(params[k].numel(), (1,), generator=gen).item()
        flat = params[k].data.view(-1)
        old = flat[i].item()
        with torch.no_grad():
            flat[i] = old + h
        up = value_fn().item()
        with torch.no_grad():
            flat[i] = old - h
        down = value_fn().item()
        with torch.no_grad():
            flat[i] = old
        fd = (up - down) / (2 * h)
        an = analytic[k].view(-1)[i].item()
        assert abs(fd - an) <= 1e-5 + 1e-4 * abs(fd), (k, i, fd, an)


@pytest.mark.parametrize("adv", ["kl", "softce"])
def test_isolation_gradient_matches_finite_differences(adv):
    victim, clone, x, y = tiny_pair()
    sur = Surrogate(copy.deepcopy(clone))
    zv = victim(x)
    zc, cvjp = sur.vjp(x)
    val, dz = isolation(sur, x, y, zc, cvjp, zv, adv)
    assert torch.allclose(val, ref_isolation(victim, clone, x, y, adv), atol=1e-10)
    analytic = torch.autograd.grad(zv, list(victim.parameters()), dz)
    assert max(a.abs().max() for a in analytic) > 1e-6  # the gradient is not trivially zero
    fd_check(lambda: ref_isolation(victim, clone, x, y, adv), victim, analytic)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_gradient_norm_gradient_matches_finite_differences(form):
    victim, clone, xo, _ = tiny_pair()
    sur = Surrogate(copy.deepcopy(clone))
    zv = victim(xo)
    zc, cvjp = sur.vjp(xo)
    val, dz = gradient_norm(sur, xo, zc, cvjp, zv, form)
    assert torch.allclose(val, ref_gradnorm(victim, clone, xo, form), atol=1e-12)
    analytic = torch.autograd.grad(zv, list(victim.parameters()), dz)
    fd_check(lambda: ref_gradnorm(victim, clone, xo, form), victim, analytic)


def test_first_jvp_prints_no_torch_deprecation_warning():
    """A process's first jvp makes torch call its deprecated torch.jit.script; every run worker
    printed that FutureWarning. In a fresh process, with warnings as errors, the jvp must pass."""
    code = ("import copy, torch\n"
            "from tests.test_ini import tiny_pair\n"
            "from defenses.ini import Surrogate\n"
            "_, clone, x, _ = tiny_pair()\n"
            "sur = Surrogate(copy.deepcopy(clone))\n"
            "sur.jvp(x, torch.ones(sum(p.numel() for p in sur.params.values())))\n")
    out = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("flag", ["0", "1"])
def test_surrogate_in_the_training_loops_memory_format(monkeypatch, flag):
    """fit() puts V in channels-last under STEALBENCH_CHANNELS_LAST=1; the surrogate must follow
    (mixed formats made InI's step 1.25x its floor), with the same values either way."""
    monkeypatch.setenv("STEALBENCH_CHANNELS_LAST", flag)
    ctx = tiny_ctx()
    sur = get_defense("ini").make_surrogate(ctx)
    conv = next(m for m in sur.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (flag == "1")
    monkeypatch.setenv("STEALBENCH_CHANNELS_LAST", "0")
    ref = get_defense("ini").make_surrogate(ctx)
    assert all(torch.equal(sur.params[k], ref.params[k]) for k in ref.params)


def test_surrogate_unchanged_and_victim_trained():
    ctx = tiny_ctx()
    d = get_defense("ini")
    d.build(ctx)
    before = copy.deepcopy(d.nets["model"].state_dict())
    d.fit(ctx)
    used = d.aux["surrogate"].model
    fresh = d.make_surrogate(ctx).model
    assert not used.training
    for k, t in fresh.state_dict().items():
        assert torch.equal(t, used.state_dict()[k]), k
    assert any(not torch.equal(t, d.nets["model"].state_dict()[k]) for k, t in before.items())
    assert d.fit_log["adv_loss"] == "kl" and d.fit_log["ind_loss"] == "code"
    assert "pcgrad_cosines" not in d.fit_log


@pytest.mark.parametrize("name,objectives", [("ini-iso", ["ben", "iso"]),
                                             ("ini-ind", ["ben", "ind", "gradnorm"]),
                                             ("ini-nogradnorm", ["ben", "iso", "ind"])])
def test_ablations_train_their_objectives(name, objectives):
    ctx = tiny_ctx(n=128)
    d = get_defense(name, adv_loss="softce", ind_loss="paper", log_cosine_epochs=1)
    d.build(ctx)
    d.fit(ctx)
    d.eval()
    log = d.fit_log
    assert log["objectives"] == objectives and log["adv_loss"] == "softce" and log["ind_loss"] == "paper"
    pairs = log["pcgrad_cosines"]
    assert len(pairs) == len(objectives) * (len(objectives) - 1) // 2
    for rec in pairs.values():
        assert len(rec["before"]) == len(rec["after"]) == 1
    p = d(ctx.id_train.x[:5])
    assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)


def test_cosine_log_and_pcgrad_effect():
    ctx = tiny_ctx(n=256, epochs=2)
    d = get_defense("ini", log_cosine_epochs=1)
    d.build(ctx)
    d.fit(ctx)
    pairs = d.fit_log["pcgrad_cosines"]
    assert set(pairs) == {"ben|iso", "ben|ind", "ben|gradnorm", "iso|ind", "iso|gradnorm", "ind|gradnorm"}
    assert all(len(r["before"]) == 2 for r in pairs.values())  # 2 steps in the first epoch only
    assert all(-1 <= c <= 1 for r in pairs.values() for c in r["before"] + r["after"])
    assert len(d.fit_log["epoch_losses"]["iso"]) == 2


def test_bad_parameters_rejected():
    with pytest.raises(ValueError, match="adv_loss"):
        get_defense("ini", adv_loss="mse")
    with pytest.raises(ValueError, match="ind_loss"):
        get_defense("ini", ind_loss="l2")
    with pytest.raises(ValueError, match="unknown parameter"):
        get_defense("ini-iso", beta=1)


@pytest.mark.parametrize("name,adv,ind", [("ini", "kl", "code"), ("ini", "softce", "paper"),
                                          ("ini-iso", "kl", "code"), ("ini-ind", "kl", "paper"),
                                          ("ini-nogradnorm", "softce", "code")])
def test_fast_matches_reference_implementation(name, adv, ind):
    """Per-objective victim gradients and BN statistics: the JVP-based path == the official
    code's double backward."""
    victim, clone, x, y = tiny_pair()
    xo = torch.randn(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    victim.train()
    v_ref_model = copy.deepcopy(victim)
    d = get_defense(name, adv_loss=adv, ind_loss=ind)
    sur = Surrogate(clone)
    v_fast, g_fast = d.objective_grads(sur, victim, list(victim.parameters()), x, y, xo)
    v_ref, g_ref = d.objective_grads_reference(sur, v_ref_model, list(v_ref_model.parameters()), x, y, xo)
    assert len(g_fast) == len(d.objectives)
    for obj, a, b in zip(d.objectives, g_fast, g_ref):
        assert torch.allclose(v_fast[obj], v_ref[obj], atol=1e-12), obj
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-7), obj
        assert b.abs().max() > 0, obj
    for k, t in v_ref_model.state_dict().items():  # both saw the OOD batch
        assert torch.allclose(t.double(), victim.state_dict()[k].double()), k
    assert not any(p.requires_grad for p in clone.parameters())


def test_reference_training_runs():
    ctx = tiny_ctx(n=128)
    d = get_defense("ini", train_impl="reference")
    d.build(ctx)
    d.fit(ctx)
    assert d.fit_log["train_impl"] == "reference"


@pytest.mark.parametrize("name", ["ini-adv", "ini-adv-strong"])
def test_adversarial_surrogate_learns_the_victim(name):
    """Table C.1's C is trained against V: it moves, and it fits V's answers better than the
    fixed surrogate InI starts from (generated data)."""
    from defenses.ini import kl_c_v
    torch.manual_seed(0)
    ctx = tiny_ctx(n=512, epochs=2)   # 8 steps of V, each after one step of C
    d = get_defense(name, adv_every=1, adv_lr=0.1)
    d.build(ctx)
    d.fit(ctx)
    used, fresh = d.aux["surrogate"].model, d.make_surrogate(ctx).model
    assert any(not torch.equal(t, used.state_dict()[k]) for k, t in fresh.state_dict().items())
    assert all(not p.requires_grad for p in used.parameters())
    x = ctx.id_train.x[:64]
    with torch.no_grad():
        zv = d.nets["model"](x)
        assert kl_c_v(used(x), zv) < kl_c_v(fresh(x), zv)


def adversary(**params):
    """ini-adv-strong built on generated data, its C and C's optimizer made as fit makes them,
    and an ID and an OOD batch: for calling before_step (C's adversarial step) directly."""
    torch.manual_seed(0)
    ctx = tiny_ctx(n=128)
    d = get_defense("ini-adv-strong", **params)
    d.build(ctx)
    sur = d.make_surrogate(ctx)
    d.step_state(sur)
    return d, ctx, sur, ctx.id_train.x[:64], ctx.ood_train.x[:64]


class Saturated(torch.nn.Module):
    """A generated victim as confident as a trained one: logits 100x a random linear map."""

    def __init__(self, d_in):
        super().__init__()
        torch.manual_seed(3)
        self.lin = torch.nn.Linear(d_in, 10)

    def forward(self, x):
        return 100 * self.lin(x.flatten(1))


@pytest.mark.parametrize("loss,bounded", [("softce", True), ("kl", False)])
def test_adversary_steps_stay_bounded_against_a_confident_victim(loss, bounded):
    """C's training loss against a confident V: soft cross-entropy keeps C's logits in range;
    KL(p_C || p_V) scales C's steps with -log p_V and they blow up (what collapsed the MNIST
    ini-adv victims; generated data)."""
    d, ctx, sur, x, xo = adversary(adv_train_loss=loss)
    v = Saturated(x[0].numel())
    for step in range(5):
        d.before_step(sur, v, x, xo, step)
    with torch.no_grad():
        z = sur.model(torch.cat([x, xo]))
    assert bool(torch.isfinite(z).all() and z.abs().max() < 100) == bounded


def test_induction_target_stays_the_untrained_surrogate():
    """The adversarial C moves; the induction term's target is still C's init (generated data)."""
    d, ctx, sur, x, xo = adversary()
    for step in range(3):
        d.before_step(sur, Saturated(x[0].numel()), x, xo, step)
    with torch.no_grad():
        init, moved = d.make_surrogate(ctx).model(xo), sur.model(xo)
    assert not torch.allclose(moved, init)
    assert torch.equal(d.ind_target(xo, moved), init)
    assert torch.equal(get_defense("ini").ind_target(xo, moved), moved)


@pytest.mark.parametrize("bn", ["train", "eval"])
def test_adversary_trains_with_batch_statistics_and_serves_in_eval_mode(bn):
    """adv_bn="train": C's step normalizes with batch statistics, so its running statistics move
    off the fresh ones (mean 0); "eval" leaves them; either way C is back in eval mode after."""
    d, ctx, sur, x, xo = adversary(adv_bn=bn)
    d.before_step(sur, Saturated(x[0].numel()), x, xo, 0)
    bns = [m for m in sur.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not sur.model.training
    assert any(m.running_mean.abs().max() > 0 for m in bns) == (bn == "train")


def test_adversarial_surrogate_parameters_checked():
    with pytest.raises(ValueError, match="adv_every must be an int >= 1"):
        get_defense("ini-adv", adv_every=0)
    with pytest.raises(ValueError, match="adv_lr must be > 0"):
        get_defense("ini-adv", adv_lr=0.0)
    assert get_defense("ini-adv-strong").params["adv_lr"] == 0.1
    with pytest.raises(ValueError, match="adv_train_loss='mse'; accepted"):
        get_defense("ini-adv", adv_train_loss="mse")
    with pytest.raises(ValueError, match="adv_bn='frozen'; accepted"):
        get_defense("ini-adv", adv_bn="frozen")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (ran on an H100: failed before the fix)")
def test_cosine_logging_on_cuda():
    """PCGrad's weights are made on the CPU; logging the projected cosines once mixed them with
    the CUDA Gram matrix (found by `bench.rehearse --device cuda`)."""
    ctx = tiny_ctx(n=64)
    ctx.device = "cuda"
    d = get_defense("ini", log_cosine_epochs=1)
    d.build(ctx)
    d.fit(ctx)
    assert len(d.fit_log["pcgrad_cosines"]["ben|iso"]["after"]) >= 1
