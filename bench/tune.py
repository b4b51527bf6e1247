"""Serving-knob tuning by the paper's "similar benign accuracy" protocol.

A tunable defense class declares ``tune_knob`` (a serving knob, e.g. "eps"), ``tune_grid``
(candidate values) and ``tune_strongest`` ("high" or "low": which end defends most).
``tune`` tries the grid from the strongest end and keeps the first value whose benign
accuracy on a held-out split is within ``tolerance`` points of ``reference_acc``.
A class without ``tune_grid`` gets DEFAULT_GRID_POINTS evenly spaced over the knob's range.
"""
from __future__ import annotations

import torch

from .train import accuracy

DEFAULT_GRID_POINTS = 21
SLACK = 1e-4  # points; accuracy() is a float32 mean, so 95% can come back as 94.99999


def tune_spec(defense) -> tuple[str, list, str]:
    """(knob, grid ordered strongest first, strongest end) declared by the defense's class."""
    cls = type(defense)
    knob = getattr(cls, "tune_knob", None)
    if not knob:
        raise ValueError(f"defense {defense.name!r} declares no tune_knob, so it cannot be tuned")
    if knob not in defense.knobs:
        raise ValueError(f"{cls.__name__}.tune_knob={knob!r} is not one of its serving knobs {sorted(defense.knobs)}")
    strongest = getattr(cls, "tune_strongest", "high")
    if strongest not in ("high", "low"):
        raise ValueError(f"{cls.__name__}.tune_strongest must be 'high' or 'low', got {strongest!r}")
    grid = list(getattr(cls, "tune_grid", ()) or ())
    if not grid:
        lo, hi = defense.knobs[knob]
        grid = torch.linspace(lo, hi, DEFAULT_GRID_POINTS, dtype=torch.float64).tolist()
    return knob, sorted(grid, reverse=strongest == "high"), strongest


class _Scorer:
    """Benign accuracy of the served output; a post-processor's base output is computed once."""

    def __init__(self, defense, x, y, device, batch_size):
        self.defense, self.y, self.device = defense, y, device
        self.chunks = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
        self.base_probs = None
        if hasattr(defense, "perturb") and hasattr(defense, "base"):
            with torch.no_grad():
                self.base_probs = [defense.base(xb.to(device)) for xb in self.chunks]

    @torch.no_grad()
    def __call__(self) -> float:
        preds = []
        for i, xb in enumerate(self.chunks):
            xb = xb.to(self.device)
            if self.base_probs is None:
                out = self.defense(xb)
            else:
                self.defense.check_input(xb)
                out = self.defense.perturb(xb, self.base_probs[i])
            preds.append(out.argmax(1).cpu())
        return accuracy(torch.cat(preds), self.y.cpu())


def tune(defense, x_val: torch.Tensor, y_val: torch.Tensor, reference_acc: float, tolerance: float = 0.5,
         device="cpu", batch_size: int = 512) -> dict:
    """Set the strongest knob value whose benign accuracy is >= reference_acc - tolerance.

    Returns {"knob", "value", "accuracy", "met", "tolerance", "strongest", "grid",
    "trace": [(value, acc), ...]}, the
    trace in evaluation order (strongest first, stopping at the chosen value). When no value
    qualifies, the weakest one is kept and ``met`` is False.
    """
    knob, grid, strongest = tune_spec(defense)
    score = _Scorer(defense, x_val, y_val, device, batch_size)
    trace = []
    for value in grid:
        defense.set_knob(knob, value)
        acc = score()
        trace.append((value, acc))
        if acc >= reference_acc - tolerance - SLACK:
            return _record(knob, value, acc, True, tolerance, strongest, grid, trace)
    return _record(knob, grid[-1], trace[-1][1], False, tolerance, strongest, grid, trace)


def _record(knob, value, acc, met, tolerance, strongest, grid, trace) -> dict:
    return {"knob": knob, "value": value, "accuracy": acc, "met": met, "tolerance": tolerance,
            "strongest": strongest, "grid": grid, "trace": trace}
