"""The serving contract, checked for every registered defense (new ones are picked up
automatically) and for a few compositions "trained victim + output perturbation".

Each defense is built and trained the way the runner does it, on a tiny generated-data
context (random images, a narrow smallcnn, one epoch), so that training-time defenses run too.
"""
import pytest
import torch

from bench.data import ImageSet
from bench.oracle import Oracle
from bench.train import Context, TrainConfig, seed_everything
from defenses import get_defense, list_defenses

SHAPE = (1, 28, 28)
SHAPE_RE = r"\(N, 1, 28, 28\)"
# MAD's impl="reference" is not listed: tests/test_mad.py checks it serves what "batched" serves
COMPOSITIONS = ["vanilla+mad-argmax", "ini+mad", "ini+am", "ini+dcp"]


def _available(name: str) -> bool:
    return all(part in list_defenses() for part in name.split("+"))


CASES = [(n, n, {}) for n in list_defenses()] + [(c, c, {}) for c in COMPOSITIONS if _available(c)]


def _images(n, gen, labels=10):
    return ImageSet("gen", "train", torch.randn(n, *SHAPE, generator=gen),
                    torch.randint(0, labels, (n,), generator=gen), labels, (0.0,), (1.0,))


def tiny_context(seed=0) -> Context:
    gen = torch.Generator().manual_seed(123)  # generated data: only shapes and determinism matter
    return Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=28,
                   id_train=_images(32, gen), ood_train=_images(32, gen), hash_set=_images(32, gen),
                   train=TrainConfig(epochs=1, batch_size=16), seed=seed, progress=False,
                   arch_params={"width": 4, "hidden": 16})


def build_and_fit(name, params, seed=0):
    """As the runner: build, then fit every unit from the same seeded state, then eval()."""
    ctx = tiny_context(seed)
    seed_everything(seed)
    d = get_defense(name, **params)
    d.build(ctx)
    for unit in d.units():
        seed_everything(seed)
        unit.fit(ctx)
    d.eval()
    return d


_BUILT = {}


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    cid, name, params = request.param
    if cid not in _BUILT:
        _BUILT[cid] = build_and_fit(name, params)
    return cid, name, params, _BUILT[cid]


def inputs(n, seed=7):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 257])
def test_outputs_are_probability_vectors(case, n):
    *_, d = case
    out = d(inputs(n))
    assert out.shape == (n, d.num_classes) and out.is_floating_point()
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.allclose(out.sum(1), torch.ones(n, dtype=out.dtype), atol=1e-5)


def test_hard_label_mode_returns_integer_labels(case):
    *_, d = case
    x = inputs(33)
    labels = d.predict_label(x)
    assert labels.dtype == torch.int64 and labels.shape == (33,)
    assert ((labels >= 0) & (labels < d.num_classes)).all()
    assert torch.equal(labels, d(x).argmax(1))
    hard = Oracle(d, budget=100, label_mode="hard").query(x)
    assert hard.dtype == torch.int64 and torch.equal(hard, labels)


def test_same_seed_same_outputs(case):
    _, name, params, d = case
    again = build_and_fit(name, params)
    x = inputs(64)
    out = d(x)
    assert torch.equal(again(x), out)
    assert torch.equal(d.predict_proba(x), out)  # and the same model answers the same twice


@pytest.mark.parametrize("bad", [
    torch.zeros(2, 3, 28, 28),          # wrong channels
    torch.zeros(2, 1, 32, 32),          # wrong size
    torch.zeros(1, 28, 28),             # no batch dimension
    torch.zeros(2, 1, 28, 28, dtype=torch.uint8),  # integer images
    torch.zeros(2, 1, 28, 28, dtype=torch.int64),
], ids=["channels", "size", "3d", "uint8", "int64"])
def test_wrong_shape_or_dtype_names_expected_shape(case, bad):
    *_, d = case
    with pytest.raises(ValueError, match=SHAPE_RE):
        d(bad)
    with pytest.raises(ValueError, match=SHAPE_RE):
        d.predict_label(bad)


def test_no_gradient_reaches_the_caller(case):
    *_, d = case
    x = inputs(5).requires_grad_(True)
    out = d(x)
    assert not out.requires_grad and out.grad_fn is None
    assert d.predict_label(x).grad_fn is None
    assert x.grad is None


def test_served_as_loaded(case):
    """A victim trained in this process answers exactly as the same victim loaded from its
    checkpoint (fresh NCHW modules): tuning and the cells must see one network. Training runs in
    channels-last by default, so every 4-D weight must be back in NCHW once fit returns."""
    _, name, params, d = case
    for pname, t in list(d.named_parameters()) + list(d.named_buffers()):
        if t.dim() == 4:
            assert t.is_contiguous(), f"{pname} is not NCHW after fit"
    loaded = get_defense(name, **params)
    loaded.build(tiny_context())
    for unit, fitted in zip(loaded.units(), d.units()):
        unit.nets.load_state_dict(fitted.nets.state_dict())
    loaded.eval()
    x = inputs(64)
    assert torch.equal(loaded(x), d(x))
