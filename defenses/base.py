"""The defense interface: a training part that produces served model(s) and a serving part.

A defense is an ``nn.Module`` whose ``forward(x)`` returns the served probability vectors.
- ``Defense``: trains its own models in ``fit(ctx)`` and serves them (Vanilla, InI, EDM, ...).
- ``PostProcessor``: wraps any trained ``base`` defense and perturbs its output
  (MAD, DCP, AM's serving rule); it may train auxiliary models of its own (AM's
  misinformation model). ``get_defense("ini+mad")`` composes them; a post-processor used
  alone runs on its ``default_base``.

Training-relevant parameters go in ``params``; serving knobs (declared in ``knobs`` with
their valid range) can change after training without retraining.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from bench.registry import DEFENSES


class Defense(nn.Module):
    name = "defense"
    label = None            # display name in tables
    knobs: dict = {}        # serving knob -> (low, high) inclusive
    defaults: dict = {}     # every accepted parameter and its default

    def __init__(self, **params):
        super().__init__()
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"defense {self.name!r} got unknown parameter(s) {unknown}; "
                             f"accepted: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}
        self._check_params()
        self.nets = nn.ModuleDict()
        self.input_shape = None  # (C, H, W), set by build()
        self.num_classes = None

    def _check_params(self) -> None:
        for k, (lo, hi) in self.knobs.items():
            v = self.params[k]
            if not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{self.name}: {k}={v!r} out of range; accepted [{lo}, {hi}]")

    def set_knob(self, key, value) -> None:
        if key not in self.knobs:
            raise ValueError(f"{self.name} has no serving knob {key!r}; knobs: {sorted(self.knobs)}")
        self.params[key] = value
        self._check_params()

    # ---- training part
    def train_params(self) -> dict:
        """Parameters that change the trained models (the cache key); knobs excluded."""
        return {k: v for k, v in self.params.items() if k not in self.knobs}

    def build(self, ctx) -> None:
        """Create (untrained) models for ctx; fit() trains them, load_state_dict restores them."""
        self.input_shape = (ctx.in_channels, ctx.input_size, ctx.input_size)
        self.num_classes = ctx.num_classes
        self._build(ctx)

    def _build(self, ctx) -> None:
        raise NotImplementedError

    def fit(self, ctx) -> None:
        raise NotImplementedError

    def units(self) -> list["Defense"]:
        """The separately trained and cached parts, base first."""
        return [self]

    @property
    def display(self) -> str:
        return self.label or self.name

    # ---- serving part
    def _proba(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{self.name}: expected a float tensor of shape (N, {self.input_shape_str}), "
                             f"got {type(x).__name__} {getattr(x, 'dtype', '')}")
        if self.input_shape is not None and (x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape):
            raise ValueError(f"{self.name}: expected input of shape (N, {self.input_shape_str}), "
                             f"got {tuple(x.shape)}")

    @property
    def input_shape_str(self) -> str:
        return ", ".join(map(str, self.input_shape)) if self.input_shape else "C, H, W"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Served probability vectors (detached, rows sum to 1)."""
        self.check_input(x)
        with torch.no_grad():
            return self._proba(x).detach()

    predict_proba = forward

    def predict_label(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(1)


class PostProcessor(Defense):
    """Perturbs the output of a trained base defense."""
    default_base = "vanilla"

    def __init__(self, base: Defense | None = None, **params):
        super().__init__(**params)
        self.base = base if base is not None else get_defense(self.default_base)

    @property
    def display(self) -> str:
        own = self.label or self.name
        if self.base.name == self.default_base:
            return own
        return f"{self.base.display}+{own}"

    def build(self, ctx) -> None:
        self.base.build(ctx)
        super().build(ctx)

    def _build(self, ctx) -> None:  # no models of its own unless overridden
        pass

    def fit(self, ctx) -> None:  # no auxiliary training unless overridden
        pass

    def units(self) -> list[Defense]:
        return self.base.units() + ([self] if self.has_aux() else [])

    def has_aux(self) -> bool:
        return len(self.nets) > 0

    def _proba(self, x):
        return self.perturb(x, self.base._proba(x))

    def perturb(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def register_defense(name: str):
    """Class decorator: register a Defense subclass under ``name``."""
    def deco(cls):
        cls.name = name
        return DEFENSES.register(name)(cls)
    return deco


def get_defense(name: str, base_params: dict | None = None, **params) -> Defense:
    """A defense by name; ``"a+b"`` serves post-processor b on top of trained defense a."""
    if "+" in name:
        base_name, post_name = name.rsplit("+", 1)
        post_cls = DEFENSES.lookup(post_name)
        if not issubclass(post_cls, PostProcessor):
            raise ValueError(f"{post_name!r} is not an output post-processor, so {name!r} cannot be "
                             f"composed; post-processors: {list_postprocessors()}")
        base = get_defense(base_name, **(base_params or {}))
        return post_cls(base=base, **params)
    cls = DEFENSES.lookup(name)
    return cls(**params)


def list_defenses(pattern: str = "*") -> list[str]:
    return DEFENSES.names(pattern)


def list_postprocessors() -> list[str]:
    return [n for n in DEFENSES.names() if issubclass(DEFENSES.lookup(n), PostProcessor)]
