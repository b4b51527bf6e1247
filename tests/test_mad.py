"""MAD: reference (per-sample Jacobian + loops) and batched (closed form) agree; constraints hold.

All data here is small and randomly generated.
"""
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from bench.data import ImageSet
from bench.train import Context, TrainConfig, seed_everything
from defenses import get_defense
from defenses.mad import last_layer_jacobian, search_batched, search_reference


class LinearHead(nn.Module):
    """A 'model' whose penultimate features are its input, so G is exactly the last-layer Jacobian."""

    def __init__(self, d, k, gen):
        super().__init__()
        self.fc = nn.Linear(d, k).double()
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(k, d, generator=gen, dtype=torch.float64) * 2)
            self.fc.bias.copy_(torch.randn(k, generator=gen, dtype=torch.float64))

    def forward(self, h):
        return self.fc(h)


def random_probs(b, k, gen, temp):
    return torch.softmax(torch.randn(b, k, generator=gen, dtype=torch.float64) * temp, dim=1)


def both_impls(seed, b, k, d, eps, argmax, temp=3.0):
    gen = torch.Generator().manual_seed(seed)
    net = LinearHead(d, k, gen)
    h = torch.randn(b, d, generator=gen, dtype=torch.float64)
    y = random_probs(b, k, gen, temp)
    with torch.no_grad():
        p = torch.softmax(net(h), dim=1)
    ref = torch.stack([search_reference(last_layer_jacobian(net, h[i:i + 1]), y[i], eps, argmax)
                       for i in range(b)])
    return y, ref, search_batched(p, y, eps, argmax)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), b=st.integers(1, 6), k=st.integers(2, 12), d=st.integers(1, 16),
       eps=st.floats(0.0, 2.0), argmax=st.booleans(), temp=st.sampled_from([0.3, 3.0, 10.0]))
def test_reference_and_batched_agree(seed, b, k, d, eps, argmax, temp):
    y, ref, bat = both_impls(seed, b, k, d, eps, argmax, temp)
    assert torch.allclose(ref, bat, atol=1e-5, rtol=0), (ref - bat).abs().max()


def test_agree_on_many_classes_greedy_argmax():
    # K > 10: the argmax variant switches to the greedy search in both implementations
    for seed in range(3):
        _, ref, bat = both_impls(seed, 3, 23, 5, 1.0, True)
        assert torch.allclose(ref, bat, atol=1e-5, rtol=0)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(2, 30), eps=st.floats(0.0, 2.0), argmax=st.booleans(),
       temp=st.sampled_from([0.3, 3.0, 30.0]))
def test_l1_budget_simplex_and_top1(seed, k, eps, argmax, temp):
    gen = torch.Generator().manual_seed(seed)
    p, y = random_probs(16, k, gen, 2.0), random_probs(16, k, gen, temp)
    out = search_batched(p, y, eps, argmax)
    assert ((y - out).abs().sum(1) <= eps + 1e-9).all()
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(16, dtype=out.dtype))
    if argmax:
        assert torch.equal(out.argmax(1), y.argmax(1))


def test_mad_actually_perturbs_and_moves_to_a_vertex():
    gen = torch.Generator().manual_seed(0)
    p, y = random_probs(64, 10, gen, 2.0), random_probs(64, 10, gen, 2.0)
    full = search_batched(p, y, 2.0)  # eps 2 is the whole simplex: y' = y* is a one-hot vertex
    assert torch.allclose(full.max(1).values, torch.ones(64, dtype=full.dtype))
    half = search_batched(p, y, 0.5)
    dist = (half - y).abs().sum(1)
    assert (dist > 0.49).all() and (dist <= 0.5).all()
    # the non-argmax variant does change some labels at eps 2
    assert (full.argmax(1) != y.argmax(1)).any()


def tiny_ctx(arch="smallcnn", n=48):
    # generated data: only shapes matter here
    gen = torch.Generator().manual_seed(0)
    train = ImageSet("gen", "train", torch.randn(n, 1, 28, 28, generator=gen),
                     torch.randint(0, 10, (n,), generator=gen), 10, (0.0,), (1.0,))
    return Context(arch=arch, num_classes=10, in_channels=1, input_size=28, id_train=train,
                   train=TrainConfig(epochs=1, batch_size=16), progress=False)


@pytest.mark.parametrize("bn", ["train", "eval"])
@pytest.mark.parametrize("name", ["mad", "mad-argmax"])
def test_defense_impls_agree_end_to_end(name, bn):
    ctx = tiny_ctx()
    out = {}
    for impl in ("reference", "batched"):
        seed_everything(0)
        d = get_defense(name, impl=impl, eps=0.8, surrogate_bn=bn)
        d.build(ctx)
        d.eval()
        x = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        out[impl] = d(x)
        served_by_base = d.base(x)
        assert ((out[impl] - served_by_base).abs().sum(1) <= 0.8 + 1e-6).all()
        if name == "mad-argmax":
            assert torch.equal(out[impl].argmax(1), served_by_base.argmax(1))
    assert torch.allclose(out["reference"], out["batched"], atol=1e-5, rtol=0)


def test_surrogate_is_seeded_and_random_and_leaves_global_rng_alone():
    ctx = tiny_ctx()
    a, b = get_defense("mad"), get_defense("mad")
    torch.manual_seed(1)
    a.build(ctx)
    torch.manual_seed(2)  # a different global state must not change the surrogate
    b.build(ctx)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a._build(ctx)
    assert torch.equal(torch.rand(1), before)  # the surrogate init used a forked RNG
    sa, sb = a.nets["surrogate"].state_dict(), b.nets["surrogate"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["fc.weight"], a.base.nets["model"].state_dict()["fc.weight"])
    assert "impl" not in a.train_params() and "eps" not in a.train_params()


def test_bad_params_rejected():
    with pytest.raises(ValueError, match="impl"):
        get_defense("mad", impl="fast")
    with pytest.raises(ValueError, match="eps"):
        get_defense("mad", eps=3.0)


def test_composes_on_any_trained_victim():
    d = get_defense("vanilla+mad-argmax", eps=0.3)
    assert d.display == "MAD-argmax" and d.params["eps"] == 0.3 and d.argmax


def served_mad(bn, x, **kw):
    seed_everything(0)
    d = get_defense("mad", eps=2.0, surrogate_bn=bn, **kw)
    d.build(tiny_ctx())
    d.eval()
    return d, d(x)


def test_default_surrogate_bn_is_the_originals_per_query_train_mode():
    """The original feeds one query at a time to a surrogate it never puts in eval mode: the
    default must serve exactly what that gives (reference path, literal train mode)."""
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert get_defense("mad").params["surrogate_bn"] == "train"
    seed_everything(0)
    dflt = get_defense("mad", eps=2.0)
    dflt.build(tiny_ctx())
    dflt.eval()
    sur = dflt.nets["surrogate"]
    sur.train()
    with torch.no_grad():
        p = torch.cat([torch.softmax(sur(x[i:i + 1]), 1) for i in range(len(x))])
    sur.eval()
    want = search_batched(p.double(), dflt.base(x).double(), 2.0).float()
    assert torch.allclose(dflt(x), want, atol=1e-5, rtol=0)
    # and it differs from eval-mode BN, whose fresh running statistics make p almost uniform
    _, evaled = served_mad("eval", x)
    assert not torch.allclose(evaled, want, atol=1e-3)


def test_train_mode_answer_does_not_depend_on_the_batch():
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    for impl in ("batched", "reference"):
        d, whole = served_mad("train", x, impl=impl)
        alone = torch.cat([d(x[i:i + 1]) for i in range(4)])
        assert torch.allclose(whole[:4], alone, atol=1e-6, rtol=0)
        before = {k: v.clone() for k, v in d.nets["surrogate"].state_dict().items()}
        d(x)
        after = d.nets["surrogate"].state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "serving changed BN buffers"


def test_bn_mode_is_not_a_training_param_and_is_checked():
    assert "surrogate_bn" not in get_defense("mad").train_params()
    with pytest.raises(ValueError, match="surrogate_bn"):
        get_defense("mad", surrogate_bn="batch")
