"""An exported victim as an IBM ART classifier, in one call (ART: Nicolae et al., 2018,
https://github.com/Trusted-AI/adversarial-robustness-toolbox; install with ``pip install
'stealbench[art]'``).

    from bench.art import art_classifier
    clf = art_classifier("results/cpu/victims/export/mnist-ini-s0")   # PyTorchClassifier
    probs = clf.predict(x_normalized)                                  # served probabilities

``predict`` returns the defense's *served probabilities*, never logits: ART's extraction attacks
(KnockoffNets ``use_probability=True``, CopycatCNN) take ``predict`` output as the soft label,
and logits there would train the clone on garbage without any error. The served output is
detached (the defended API is a black box), so gradient-based ART attacks do not apply.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

INSTALL_HINT = "pip install 'stealbench[art]' (adversarial-robustness-toolbox>=1.17)"
OUTPUTS = ("probabilities", "logits")
INPUTS = ("normalized", "pixels")


def require_art(who: str):
    """The ``art`` package, or one ImportError line saying what to install."""
    try:
        import art
    except ImportError as e:
        raise ImportError(f"{who} needs IBM's Adversarial Robustness Toolbox, which is not installed: "
                          f"{INSTALL_HINT}") from e
    return art


class Probabilities(nn.Module):
    """forward(x) returns probability rows: the model's own output, or its softmax for logits."""

    def __init__(self, model: nn.Module, softmax: bool):
        super().__init__()
        self.model, self.softmax = model, softmax

    def forward(self, x):
        out = self.model(x)
        return F.softmax(out, dim=1) if self.softmax else out


class ProbNLLLoss(nn.NLLLoss):
    """Negative log-likelihood on probability outputs (an NLLLoss, so ART feeds it index labels)."""

    def forward(self, probs, target):
        return F.nll_loss(torch.log(probs.clamp_min(1e-12)), target)


def art_classifier(victim, device: str = "cpu", *, outputs: str = "probabilities", inputs: str = "normalized",
                   input_shape: tuple | None = None, nb_classes: int | None = None):
    """A ``bench.export`` folder (or a loaded victim / any nn.Module) as an ART ``PyTorchClassifier``
    whose ``predict`` serves probabilities.

    outputs: "probabilities" (exported victims) or "logits" (a bare model: softmax is applied).
    inputs: "normalized" (the victim's own inputs) or "pixels" ([0, 1] images; the export's
    normalization becomes ART preprocessing and clip_values are (0, 1)).
    input_shape (C, H, W) and nb_classes are read from the victim when it has them.
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"art_classifier: unknown outputs {outputs!r}; accepted: {OUTPUTS}")
    if inputs not in INPUTS:
        raise ValueError(f"art_classifier: unknown inputs {inputs!r}; accepted: {INPUTS}")
    require_art("bench.art.art_classifier")
    from art.estimators.classification import PyTorchClassifier
    model, spec = _load(victim, device)
    input_shape = tuple(input_shape or spec.get("input_shape") or ())
    nb_classes = nb_classes or spec.get("num_classes")
    if len(input_shape) != 3 or not nb_classes:
        raise ValueError("art_classifier: give input_shape (C, H, W) and nb_classes for a model that does not "
                         "carry them (exported victims and built defenses do)")
    net = Probabilities(model, softmax=outputs == "logits").eval()
    _check_probabilities(net, input_shape, device)
    pixel = inputs == "pixels"
    if pixel and "mean" not in spec:
        raise ValueError("art_classifier: inputs='pixels' needs the victim's normalization (an export folder)")
    return PyTorchClassifier(
        model=net, loss=ProbNLLLoss(), input_shape=input_shape, nb_classes=int(nb_classes),
        clip_values=(0.0, 1.0) if pixel else None,
        preprocessing=(_chw(spec["mean"]), _chw(spec["std"])) if pixel else (0.0, 1.0),
        device_type="cpu" if str(device) == "cpu" else "gpu")


def _load(victim, device):
    """(module, spec): spec holds input_shape, num_classes and, for an export, mean/std."""
    if isinstance(victim, (str, Path)):
        from .export import load_victim
        from .io import read_json
        spec = read_json(Path(victim) / "spec.json")
        norm = spec.get("normalization", {})
        shape = (spec["in_channels"], spec["input_size"], spec["input_size"])
        return load_victim(victim, device), {"input_shape": shape, "num_classes": spec["num_classes"], **norm}
    if isinstance(victim, nn.Module):
        return victim.to(device).eval(), {"input_shape": getattr(victim, "input_shape", None),
                                          "num_classes": getattr(victim, "num_classes", None)}
    raise TypeError(f"art_classifier: expected an export folder (str or Path) or an nn.Module, "
                    f"got {type(victim).__name__}")


def _check_probabilities(net, input_shape, device):
    """Refuse a model whose rows are not probabilities (logits would silently ruin soft labels)."""
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        p = net(x)
    if p.dim() != 2 or (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), device=p.device),
                                                            atol=1e-3):
        raise ValueError("art_classifier: the model's outputs are not probabilities (rows >= 0 summing to 1); "
                         "pass outputs='logits' for a model that returns logits")


def _chw(values):
    """Per-channel statistics shaped (C, 1, 1) for ART's preprocessing on (N, C, H, W) inputs."""
    import numpy as np
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)
