"""DCP: the served vector equals the spec's formula on hand-computed vectors.

sigmoid(gamma * ln o) = 1 / (1 + o**-gamma), which the expected values below use (a different
path from the implementation's log/sigmoid/clip). Inputs are small hand-written vectors.
"""
import pytest
import torch

from defenses import get_defense
from defenses.dcp import dcp_perturb, top1_change_rate


def r(odds, beta, gamma):
    return beta * (1 / (1 + odds ** -gamma) - 0.5)


def normalized(v):
    v = torch.tensor(v, dtype=torch.float64)
    return v / v.sum()


def test_formula_uncertain_query():
    # s = 0.5 < beta = 1, so a = 1; p_0 = 0.5 has odds 1, clipped to 1 - 1e-12, so r_0 ~ 0
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    expect = normalized([0.5, 0.3 - r(3 / 7, 1.0, 0.2), 0.2 - r(1 / 4, 1.0, 0.2)])
    out = dcp_perturb(p, beta=1.0, gamma=0.2)
    assert torch.allclose(out[0], expect, atol=1e-9)
    assert torch.allclose(out[0], torch.tensor([0.449990, 0.308030, 0.241981], dtype=torch.float64), atol=1e-6)


def test_confident_query_is_untouched():
    # s = 0.5 > beta = 0.3: a = 1 / (1 + exp(200)) ~ 0
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    assert torch.allclose(dcp_perturb(p, beta=0.3, gamma=0.2), p, atol=1e-12)


def test_one_hot_uses_both_clip_bounds():
    # odds inf -> 1 - 1e-12 (r ~ 0); odds 0 -> 1e-12 (r = 1.5 (1/(1 + 1e12**0.2) - 1/2))
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    r0 = r(1e-12, 1.5, 0.2)
    expect = normalized([1.0, -r0, -r0])
    out = dcp_perturb(p, beta=1.5, gamma=0.2)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0], expect, atol=1e-9)
    assert abs(r0 - (-0.744046)) < 1e-5


def test_gamma_matters_and_float32_is_kept():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    a, b = dcp_perturb(p, 1.0, 0.2), dcp_perturb(p, 1.0, 0.1)
    assert a.dtype == torch.float32 and not torch.allclose(a, b)
    expect = normalized([0.6, 0.3 - r(3 / 7, 1.0, 0.1), 0.1 - r(1 / 9, 1.0, 0.1)]).float()
    assert torch.allclose(b[0], expect, atol=1e-6)


def test_top1_can_change_and_is_measured():
    # class 2 has p = 0 and receives -a r = 0.744 > 0.6: DCP flips this top-1
    p = torch.tensor([[0.6, 0.4, 0.0], [0.5, 0.3, 0.2]], dtype=torch.float64)
    out = dcp_perturb(p, beta=1.5, gamma=0.2)
    assert out[0].argmax() == 2 and out[1].argmax() == 0
    assert top1_change_rate(p, out) == pytest.approx(50.0)
    assert top1_change_rate(p, p) == 0.0
    with pytest.raises(ValueError):
        top1_change_rate(p, p[:1])


def test_defense_serves_the_formula_and_rejects_bad_knobs():
    d = get_defense("dcp", beta=1.0)
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(d.perturb(None, probs), dcp_perturb(probs, 1.0, 0.2))
    d.set_knob("beta", 0.0)  # beta 0: r = 0, no perturbation
    assert torch.allclose(d.perturb(None, probs), probs)
    with pytest.raises(ValueError, match="beta"):
        get_defense("dcp", beta=2.0)
    assert get_defense("vanilla+dcp").display == "DCP"
