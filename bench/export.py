"""Export a trained (defended) victim as a plain state_dict + a small JSON spec, and load it back.

    from bench.export import load_victim
    victim = load_victim("results/cpu/victims/export/mnist-ini-s0")   # an ordinary nn.Module
    probs = victim(x)                                                 # served probabilities
"""
from __future__ import annotations

from pathlib import Path

import torch

from .data import ImageSet
from .io import load_state, read_json, save_state, write_json
from .train import Context, TrainConfig


def export_victim(defense, ctx: Context, folder, dataset: str, extra: dict | None = None) -> Path:
    folder = Path(folder)
    spec = {"arch": ctx.arch, "arch_params": ctx.arch_params, "dataset": dataset,
            "num_classes": ctx.num_classes, "in_channels": ctx.in_channels, "input_size": ctx.input_size,
            "normalization": {"mean": list(ctx.id_train.mean), "std": list(ctx.id_train.std)},
            "hash_classes": ctx.hash_set.num_classes if ctx.hash_set is not None else None,
            "defense": defense_name(defense), "params": _params(defense), **(extra or {})}
    save_state(folder / "state_dict.pt", defense.state_dict())
    write_json(folder / "spec.json", spec)
    return folder


def load_victim(folder, device="cpu") -> torch.nn.Module:
    """The exported defense as an nn.Module whose forward(x) returns served probabilities."""
    import defenses  # noqa: F401  (registers every defense)
    from defenses import get_defense
    folder = Path(folder)
    spec = read_json(folder / "spec.json")
    params = spec["params"]
    defense = get_defense(spec["defense"], base_params=params.get("base"), **params["own"])
    empty = torch.empty(0)
    hash_set = (ImageSet("hash", "spec", empty, empty, spec["hash_classes"], (), ())
                if spec.get("hash_classes") else None)
    ctx = Context(arch=spec["arch"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                  input_size=spec["input_size"], id_train=None, train=TrainConfig(), hash_set=hash_set,
                  device=device, arch_params=spec.get("arch_params", {}))
    defense.build(ctx)
    defense.load_state_dict(load_state(folder / "state_dict.pt"))
    return defense.to(device).eval()


def defense_name(defense) -> str:
    base = getattr(defense, "base", None)
    if base is None or base.name == getattr(defense, "default_base", None):
        return defense.name
    return f"{defense_name(base)}+{defense.name}"


def _params(defense) -> dict:
    base = getattr(defense, "base", None)
    out = {"own": dict(defense.params)}
    if base is not None and base.name != getattr(defense, "default_base", None):
        out["base"] = dict(base.params)
    return out
