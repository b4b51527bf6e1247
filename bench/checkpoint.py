"""Resumable training: one fit call's state saved after each epoch (bench.train.fit uses it)."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from .io import load_state, save_state

CHECKPOINT_FORMAT = 1   # bump when what fit's checkpoints hold changes: older ones are then not reused


class Checkpoint:
    """One fit call's resumable state, saved atomically after each epoch and loaded with
    weights_only=True: modules' state_dicts (and any trained tensor outside them), optimizer,
    LR schedule, the data-order and OOD generators, torch's global RNG (CUDA's too on CUDA),
    the curves so far, the epoch count and the step's ``extra_state``. A file made by other
    code (another format, call, data or parameter shapes) is set aside with a warning, and the
    files of later calls with it: they followed a different run."""

    def __init__(self, path: Path, params, modules, parts: dict, extra: dict, meta: dict, device: str):
        self.path, self.modules, self.device = path, list(modules), device
        self.seconds = 0.0   # training time of the epochs restored (earlier processes' time)
        self.parts = {name: obj for name, obj in parts.items() if obj is not None}
        self.extra = extra
        for obj in extra.values():
            _get_state(obj)   # a type fit cannot restore fails now, not after the first epoch
        owned = {id(p) for m in self.modules for p in m.parameters()}
        self.loose = [p for p in params if id(p) not in owned]
        self.meta = {"format": CHECKPOINT_FORMAT, **meta,
                     "shapes": [list(p.shape) for p in params],
                     "extra": sorted(extra)}

    @classmethod
    def next(cls, ctx, params, modules, parts: dict, extra: dict, meta: dict) -> "Checkpoint | None":
        if ctx.checkpoint_dir is None:
            return None
        path = Path(ctx.checkpoint_dir) / f"fit{ctx.fit_calls}.pt"
        ctx.fit_calls += 1
        return cls(path, params, modules, parts, extra, meta, ctx.device)

    def restore(self, curves: dict) -> int:
        """Load the saved state, if any, into everything; the number of epochs it had done."""
        if not self.path.exists():
            return 0
        saved = load_state(self.path)
        if saved.get("meta") != self.meta:
            warnings.warn(f"{self.path} was saved by another fit call or code version; training this "
                          "call from its start")
            self._discard_from_here()
            return 0
        for m, sd in zip(self.modules, saved["modules"]):
            m.load_state_dict(sd)
        with torch.no_grad():
            for p, t in zip(self.loose, saved["loose"]):
                p.copy_(t)
        for name, obj in self.parts.items():
            _set_state(obj, saved["parts"][name], self.device)
        for name, obj in self.extra.items():
            _set_state(obj, saved["extra"][name], self.device)
        torch.set_rng_state(saved["rng"]["cpu"])
        if saved["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], torch.device(self.device))
        curves.update(copy.deepcopy(saved["curves"]))
        self.seconds = float(saved.get("seconds", 0.0))
        return saved["epoch"]

    def save(self, epoch: int, curves: dict, seconds: float = 0.0) -> None:
        """``seconds``: training time of the epochs so far, this process's and restored ones."""
        cuda = torch.device(self.device).type == "cuda"
        save_state(self.path, {
            "meta": self.meta, "epoch": epoch, "curves": curves, "seconds": seconds,
            "modules": [m.state_dict() for m in self.modules],
            "loose": [p.detach() for p in self.loose],
            "parts": {name: _get_state(obj) for name, obj in self.parts.items()},
            "extra": {name: _get_state(obj) for name, obj in self.extra.items()},
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(torch.device(self.device)) if cuda else None}})

    def _discard_from_here(self) -> None:
        k = int(self.path.stem[3:])
        for f in self.path.parent.glob("fit*.pt"):
            if f.stem[3:].isdigit() and int(f.stem[3:]) >= k:
                f.unlink()


def _get_state(obj):
    """A picklable copy of obj's state: plain containers, numbers, strings and tensors only."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    if isinstance(obj, (dict, list)) and _is_plain(obj):
        return copy.deepcopy(obj)
    raise TypeError(f"fit cannot checkpoint extra_state of type {type(obj).__name__}: give it "
                    "state_dict/load_state_dict, or keep plain values and tensors in a dict or list")


def _set_state(obj, state, device: str) -> None:
    """Restore obj in place: a step's closure keeps referring to the same objects."""
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif hasattr(obj, "load_state_dict"):
        obj.load_state_dict(state)
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(_to(state, device))
    else:
        obj[:] = _to(state, device)


def _is_plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(_is_plain(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_is_plain(v) for v in obj)
    return obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor))


def _to(obj, device: str):
    """A loaded copy of plain data, its tensors moved to the training device."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to(v, device) for v in obj]
    return obj
