"""Attack interface: an attack gets a black-box oracle and its own data, returns a clone."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.registry import ATTACKS


@dataclass
class AttackContext:
    """What the attacker knows: clone architecture, input shape, its data, device, seed."""
    clone_arch: str
    num_classes: int
    in_channels: int
    input_size: int
    query_set: torch.Tensor | None = None      # KnockoffNets' surrogate images
    seed_set: torch.Tensor | None = None       # JBDA's seed images (from the victim's train set)
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    arch_params: dict = field(default_factory=dict)
    mean: tuple = (0.1307,)   # the API's input normalization (public, like the input shape)
    std: tuple = (0.3081,)
    # The runner's measuring tape: called with the clone at the points where the reference
    # code tests it (KnockoffNets: every epoch; JBDA: every round). It returns nothing, so
    # the attack learns nothing from the test set; the runner keeps the accuracies.
    on_checkpoint: Callable | None = None
    # Kerckhoffs: the defense's name and public parameters (JSON only, never weights), and a
    # runner-side factory (bench/shadow.py) that wraps the same defense around a model of the
    # attacker's own: factory(shadow, images) -> x -> served probabilities.
    defense_info: dict = field(default_factory=dict)
    defense_factory: Callable | None = None

    def checkpoint(self, clone: nn.Module) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(clone)

    def pixel_scale(self) -> torch.Tensor:
        """Normalized units per pixel unit, shaped (1, C, 1, 1)."""
        return 1.0 / torch.tensor(self.std).view(1, -1, 1, 1).to(self.device)

    def pixel_bounds(self):
        """Normalized values of pixel 0 and 1, shaped (1, C, 1, 1)."""
        m = torch.tensor(self.mean).view(1, -1, 1, 1).to(self.device)
        s = torch.tensor(self.std).view(1, -1, 1, 1).to(self.device)
        return (0 - m) / s, (1 - m) / s

    def new_clone(self) -> nn.Module:
        from bench.models import build
        return build(self.clone_arch, self.num_classes, self.in_channels, **self.arch_params).to(self.device)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + 500 + offset)


class Attack:
    name = "attack"
    label = None
    defaults: dict = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"attack {self.name!r} got unknown parameter(s) {unknown}; "
                             f"accepted: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}
        self._check_params()

    def _check_params(self) -> None:
        pass

    def budget(self) -> int:
        """The number of oracle queries this attack will make."""
        raise NotImplementedError

    def seed_images(self) -> int:
        """How many of the victim's training images the attacker is assumed to hold (JBDA's
        seed set); the runner hands over exactly these and nothing more."""
        return 0

    def run(self, oracle, actx: AttackContext) -> nn.Module:
        raise NotImplementedError

    @property
    def display(self) -> str:
        return self.label or self.name


def clone_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft targets (N, K): soft cross-entropy; hard targets (N,): cross-entropy."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def query_pool(actx: AttackContext, name: str, budget: int, needs: str = "a query set") -> torch.Tensor:
    """The attacker's query set, checked: present, and large enough for ``budget`` images."""
    if actx.query_set is None:
        raise ValueError(f"{name} needs {needs} (AttackContext.query_set)")
    if budget > len(actx.query_set):
        raise ValueError(f"{name}: budget {budget} exceeds the query set size {len(actx.query_set)}")
    return actx.query_set


def draw_queries(actx: AttackContext, name: str, budget: int, stream: int = 0, extra: int = 0,
                 needs: str = "a query set"):
    """``budget`` images of the query set drawn without replacement (the attack's generator
    ``stream``), and the next ``extra`` of the same draw, which are never queried."""
    pool = query_pool(actx, name, budget, needs)
    order = torch.randperm(len(pool), generator=actx.generator(stream))
    return pool[order[:budget]], pool[order[budget:budget + extra]]


def query_in_batches(oracle, x: torch.Tensor, batch: int = 1024):
    """The oracle's answers for x, batch by batch, and the refusal that stopped them (or None).

    A stream monitor (PRADA) may refuse an account part-way: the attacker keeps what it was
    answered, trains on it, and then re-raises the refusal so the runner records it. Returns
    (x answered, answers, refusal)."""
    from bench.oracle import Refused   # the black box's own exception, not a defense
    outs = []
    for i in range(0, len(x), batch):
        try:
            outs.append(oracle.query(x[i:i + batch]))
        except Refused as r:
            n = sum(len(o) for o in outs)
            return x[:n], (torch.cat(outs) if outs else None), r
    return x, torch.cat(outs), None


def register_attack(name: str):
    def deco(cls):
        cls.name = name
        return ATTACKS.register(name)(cls)
    return deco


def get_attack(name: str, **params) -> Attack:
    cls = ATTACKS.lookup(name)
    return cls(**params)


def list_attacks(pattern: str = "*") -> list[str]:
    return ATTACKS.names(pattern)
