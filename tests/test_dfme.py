"""DFME and its random-noise baseline, on generated 1x8x8 data and tiny models (no real data)."""
import pytest
import torch

from attacks import AttackContext, get_attack
from attacks.dfme import approx_logits, forward_difference_gradient
from bench.oracle import Oracle

TINY = {"batch_size": 8, "m": 2, "nz": 8, "ngf": 4, "c_steps": 2, "checkpoint_every": 2}   # 40 queries/iteration

from tests.generated import LinearVictim  # noqa: E402


class Recording(Oracle):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.asked = []

    def query(self, x):
        self.asked.append(x.detach().clone())
        return super().query(x)


def ctx(**kw):
    return AttackContext(clone_arch="smallcnn", num_classes=10, in_channels=1, input_size=8, progress=False,
                         arch_params={"width": 4, "hidden": 16}, **kw)


@pytest.mark.parametrize("budget", [40, 137, 161, 200])
@pytest.mark.parametrize("label", ["soft", "hard"])
def test_dfme_spends_exactly_its_budget(budget, label):
    """137 = 3 iterations + 17 left: clone steps of 8 and 9 (a lone image joins the step before)."""
    att = get_attack("dfme", budget=budget, **TINY)
    assert att.cost_per_iteration() == 40
    assert sum(n * (3 if kind == "g" else 1) for it in att.plan() for kind, n in it) == budget
    assert min(n for it in att.plan() for _, n in it) >= 2
    oracle = Recording(LinearVictim(), att.budget(), label)
    clone = att.run(oracle, ctx())
    assert oracle.queries_used == budget and oracle.remaining == 0
    assert sum(len(x) for x in oracle.asked) == budget
    assert clone(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_dfme_generator_step_asks_m_plus_one_points_per_image():
    att = get_attack("dfme", budget=80, **TINY)
    oracle = Recording(LinearVictim(), 80)
    att.run(oracle, ctx())
    assert [len(x) for x in oracle.asked] == [24, 8, 8] * 2      # g: 8 x (2 + 1), then 2 clone steps


def test_dfme_images_lie_inside_the_pixel_bounds():
    """mean 0.5, std 0.25: pixels [0, 1] are [-2, 2] normalized; raw tanh would stay in [-1, 1]."""
    c = ctx(mean=(0.5,), std=(0.25,))
    att = get_attack("dfme", budget=200, **TINY)
    oracle = Recording(LinearVictim(), 200)
    att.run(oracle, c)
    x = torch.cat(oracle.asked)
    assert x.min() >= -2 - 1e-5 and x.max() <= 2 + 1e-5
    assert x.min() < -1.2 and x.max() > 1.2      # the whole pixel range is used, not tanh's


def test_forward_differences_estimate_the_true_gradient():
    """A known smooth function: f(x) = sin(a.x) + 0.5 |x|^2 + b.x, gradient cos(a.x) a + x + b.
    Fails if the sign, the d/eps factor or the direction sampling is wrong."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    f = lambda p: torch.sin(p.flatten(1) @ a) + 0.5 * p.flatten(1).pow(2).sum(1) + p.flatten(1) @ b
    x = torch.randn(6, 1, 8, 8, generator=g)
    xf = x.flatten(1)
    true = torch.cos(xf @ a)[:, None] * a + xf + b
    est, loss = forward_difference_gradient(f, x, m=400, eps=1e-3, generator=g)
    assert est.shape == x.shape and torch.allclose(loss, f(x))
    est = est.flatten(1)
    cos = torch.nn.functional.cosine_similarity(est, true, dim=1)
    scale = (est * true).sum(1) / true.pow(2).sum(1)      # 1 for an unbiased estimate
    assert (cos > 0.7).all(), cos
    assert ((scale > 0.75) & (scale < 1.25)).all(), scale


def test_more_directions_give_a_better_estimate():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, generator=g)
    f = lambda p: p.flatten(1) @ w
    x = torch.randn(32, 1, 8, 8, generator=g)
    cos = {m: torch.nn.functional.cosine_similarity(
        forward_difference_gradient(f, x, m, 1e-3, g)[0].flatten(1), w[None], dim=1).mean() for m in (1, 50)}
    assert 0 < cos[1] < cos[50]


def test_logits_recovered_from_probabilities():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    rec = approx_logits(torch.softmax(logits, 1), 3)
    assert torch.allclose(rec, logits - logits.mean(1, keepdim=True), atol=1e-5)
    assert torch.isfinite(approx_logits(torch.tensor([[1.0, 0.0, 0.0]]), 3)).all()   # served zeros
    assert torch.equal(approx_logits(torch.tensor([2, 0]), 3), torch.tensor([[0., 0., 1.], [1., 0., 0.]]))


def test_generator_learns_to_raise_the_disagreement():
    """With the clone frozen (lr_c tiny), generator steps must increase the l1 distance between
    clone and victim on fresh codes; a wrong sign in the update lowers it."""
    import attacks.dfme as D
    att = get_attack("dfme", budget=40 * 60, batch_size=16, m=10, nz=8, ngf=4, c_steps=1, g_steps=1,
                     lr_g=1e-2, lr_c=1e-12, lr_steps=(0.99,), eps=1e-2)
    c, victim = ctx(), LinearVictim()
    torch.manual_seed(0)
    clone, gen = c.new_clone().eval(), D.Generator(8, 4, 1, 8)
    lo, hi = c.pixel_bounds()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(256, 8, generator=torch.Generator().manual_seed(5))

    def gap():
        with torch.no_grad():
            x = att.images(gen.eval()(z), lo, hi)
            return (clone.eval()(x) - approx_logits(victim(x), 10)).abs().mean().item()
    before = gap()
    oracle = Oracle(victim, 10 ** 6)
    for _ in range(25):
        att._generator_step(16, oracle, c, clone, gen, None, opt, lo, hi, rng)
    assert gap() > before * 1.1, (before, gap())


def test_dfme_checkpoints_the_clone_in_eval_mode():
    seen = []
    att = get_attack("dfme", budget=40 * 3, **TINY)     # 3 iterations: the 2nd and the last
    att.run(Oracle(LinearVictim(), att.budget()), ctx(on_checkpoint=lambda c: seen.append(c.training)))
    assert seen == [False, False]


@pytest.mark.parametrize("params,match", [
    ({"m": 0}, "m must be a positive integer"),
    ({"budget": 1.5}, "budget must be a positive integer"),
    ({"eps": 0}, "eps must be > 0"),
    ({"g_steps": -1}, "g_steps must be an integer >= 0"),
    ({"lr_steps": (0.5, 0.1)}, "lr_steps must be increasing fractions"),
    ({"lr_scale": 2}, "lr_scale must lie in"),
    ({"budget": 100, "batch_size": 128}, r"accepted: budget >= 896"),
    ({"gamma": 1}, "accepted:"),
])
def test_dfme_bad_params(params, match):
    with pytest.raises(ValueError, match=match):
        get_attack("dfme", **params)


@pytest.mark.parametrize("label", ["soft", "hard"])
def test_noise_spends_exactly_its_budget_on_uniform_pixels(label):
    c = ctx(mean=(0.5,), std=(0.25,))
    att = get_attack("random-noise", budget=1500, epochs=1)
    oracle = Recording(LinearVictim(), att.budget(), label)
    clone = att.run(oracle, c)
    x = torch.cat(oracle.asked)
    assert oracle.queries_used == 1500 and len(x) == 1500
    assert x.min() >= -2 and x.max() <= 2 and abs(x.mean().item()) < 0.05    # uniform on [-2, 2]
    assert x.std().item() == pytest.approx(4 / 12 ** 0.5, rel=0.05)
    assert clone(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("params", [{"budget": 0}, {"epochs": 0}, {"lr": -1}])
def test_noise_bad_params(params):
    with pytest.raises(ValueError, match="random-noise"):
        get_attack("random-noise", **params)
