"""The adaptive (Kerckhoffs) attacker's view of a defense: its name and public parameters, and
a factory that wraps the same defense around the attacker's own shadow model.

Kerckhoffs' principle: the defense's algorithm and public parameters (serving knobs, tuned or
not) are known; its weights, training data and secret randomness are not. So:
- ``defense_info(defense, name)`` is a JSON-only dict (name, params, base name and params):
  no tensor, no module, nothing the attacker could not read in a paper or a config file;
- ``ShadowDefenseFactory`` holds that dict and the public shapes only (never the victim), and
  ``factory(shadow, images)`` builds the named post-processor class with those params around
  ``shadow``. Its own randomness (MAD's random surrogate, the noise salt) comes from a seed
  other than the victim's: those weights are the defender's secret, the attacker draws its own.

The shadow is an ``nn.Module`` returning **logits** (every model in ``bench.models`` does, and
the served base probabilities are their softmax, as Vanilla serves). Post-processors only:
MAD, MAD-argmax, DCP, reverse sigmoid, rounding, top-k, Gaussian noise and AM (whose
misinformation model the factory trains on attacker-side data, below); for a composed
``base+post`` the shadow stands in for the whole base. Training-time defenses (Vanilla, InI,
EDM, AM's OE defender) raise ``UnsupportedDefense``: the attacker cannot rebuild them without
the defender's training data.

AM's misinformation model is trained on the attacker's own images only: ``images`` as the ID
set, labelled with the shadow's top-1 (the attacker's stand-in for the true labels), and, for
``mis_data="id+ood"``, the same images with their pixels shuffled as the OOD set (no further
data set needed; shuffling keeps each image's intensities and destroys its shape, which is
what makes them out of distribution). Its recipe (epochs, lr) is the attack's choice.
"""
from __future__ import annotations

import copy
import json
from typing import Callable

import torch
import torch.nn as nn

from .data import ImageSet
from .train import Context, TrainConfig

SHADOW_SEED_OFFSET = 7919   # the attacker's own seed for the shadow's defense randomness


class UnsupportedDefense(NotImplementedError):
    """The defense cannot be rebuilt around a shadow (a training-time defense)."""


_JSON = (bool, int, float, str, type(None))


def _public(params: dict) -> dict:
    """JSON values only: anything else (a tensor, a module) is dropped, never passed on."""
    out = {}
    for k, v in params.items():
        if isinstance(v, _JSON):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(i, _JSON) for i in v):
            out[str(k)] = list(v)
        elif isinstance(v, dict):
            out[str(k)] = _public(v)
    return out


def defense_info(defense, name: str) -> dict:
    """Name and public parameters of a served defense: JSON only (checked by a round trip)."""
    from defenses.base import PostProcessor
    post = isinstance(defense, PostProcessor)
    info = {"name": name, "defense": defense.name, "post_processor": post,
            "params": _public(dict(defense.params)),
            "base": ({"name": defense.base.name, "params": _public(dict(defense.base.params))}
                     if post else None)}
    return json.loads(json.dumps(info))


def _shadow_base(shadow: nn.Module):
    from defenses.base import Defense

    class ShadowBase(Defense):   # defined here so that importing this module needs no defenses
        name = "shadow"

        def __init__(self, net):
            super().__init__()
            self.nets["model"] = net

        def _build(self, ctx):
            pass

        def fit(self, ctx):
            pass

        def _proba(self, x):
            return torch.softmax(self.nets["model"](x), dim=1)

    return ShadowBase(shadow)


class ShadowServed:
    """x -> the shadow's defended answers; ``defense`` is the attacker-side defense object."""

    def __init__(self, defense, device):
        self.defense, self.device = defense, device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.defense(x.to(self.device))


class ShadowDefenseFactory:
    """``factory(shadow, images) -> served``: the victim's post-processor (same class, same
    public params) around ``shadow``; ``served(x)`` returns probabilities (N, K), detached."""

    def __init__(self, info: dict, *, arch: str, arch_params: dict, num_classes: int, in_channels: int,
                 input_size: int, mean=(0.0,), std=(1.0,), device: str = "cpu", seed: int = 0):
        self.info = json.loads(json.dumps(info))   # a copy: JSON only, never the victim
        self.arch, self.arch_params = arch, json.loads(json.dumps(arch_params))
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.device = device
        self.seed = seed + SHADOW_SEED_OFFSET

    def supported(self) -> bool:
        return bool(self.info.get("post_processor"))

    def __call__(self, shadow: nn.Module, images: torch.Tensor, epochs: int = 5, lr: float = 0.05,
                 batch_size: int = 128, key: int = 0, progress: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """``images``: the attacker's own (normalized) images; only AM trains on them
        (``epochs``, ``lr``, ``batch_size`` are its misinformation model's recipe). ``key``:
        another draw of the defense's secret randomness (MAD's surrogate, AM's misinformation
        model's init and batches, the noise salt), so an attacker can average over secrets."""
        from bench.registry import DEFENSES
        if not self.supported():
            raise UnsupportedDefense(
                f"the adaptive attacker cannot rebuild {self.info['name']!r}: a training-time defense "
                "(only output post-processors can be wrapped around a shadow)")
        from defenses.base import PostProcessor
        cls = DEFENSES.lookup(self.info["defense"])
        post = cls(base=_shadow_base(shadow), **copy.deepcopy(self.info["params"]))
        trains = type(post).fit is not PostProcessor.fit   # AM: a misinformation model to train
        seed = self.seed + 1000 * key
        ctx = self._context(shadow, images if trains else None, epochs, lr, batch_size, progress, seed)
        with torch.random.fork_rng(devices=[]):   # the attacker's RNG stream stays as it was
            torch.manual_seed(seed)
            post.build(ctx)
            post.to(self.device)
            if trains:
                post.fit(ctx)
        post.eval()
        return ShadowServed(post, self.device)

    def _context(self, shadow, images, epochs, lr, batch_size, progress, seed) -> Context:
        """A training context made of attacker-side data only (see the module docstring);
        ``images`` None: shapes only (a post-processor that trains nothing)."""
        if images is None:
            return Context(arch=self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                           input_size=self.input_size, id_train=None, train=TrainConfig(), device=self.device,
                           seed=seed, progress=progress, arch_params=dict(self.arch_params))
        images = images.detach().cpu()
        gen = torch.Generator().manual_seed(seed)
        was_training = shadow.training
        shadow.eval()
        with torch.no_grad():
            labels = torch.cat([shadow(images[i:i + 512].to(self.device)).argmax(1).cpu()
                                for i in range(0, len(images), 512)])
        shadow.train(was_training)
        flat = images.flatten(1)
        perm = torch.argsort(torch.rand(flat.shape, generator=gen), dim=1)
        shuffled = torch.gather(flat, 1, perm).view_as(images)
        mk = lambda x, y, split: ImageSet("attacker", split, x, y, self.num_classes, self.mean, self.std)
        return Context(arch=self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                       input_size=self.input_size, id_train=mk(images, labels, "shadow-id"),
                       ood_train=mk(shuffled, torch.zeros(len(images), dtype=torch.long), "shadow-ood"),
                       train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, step_every=max(epochs, 1)),
                       device=self.device, seed=seed, progress=progress, arch_params=dict(self.arch_params))


def attacker_view(victim, name: str, arch: str, arch_params: dict, roles: dict, device: str, seed: int) -> dict:
    """The AttackContext fields ``defense_info`` and ``defense_factory`` for a served victim
    (``roles``: bench.roles.load_roles' dict, for the shapes and the input normalization)."""
    info = defense_info(victim, name)
    factory = ShadowDefenseFactory(info, arch=arch, arch_params=arch_params, num_classes=roles["num_classes"],
                                   in_channels=roles["in_channels"], input_size=roles["input_size"],
                                   mean=roles["test"].mean, std=roles["test"].std, device=device, seed=seed)
    return {"defense_info": info, "defense_factory": factory}
