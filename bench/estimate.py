"""``python -m bench.estimate --matrix full``: an estimate of a profile's GPU hours per data set.

No GPU has run these profiles, so this is arithmetic on stated inputs, not a measurement:
- one Vanilla training image on the GPU costs the paper's Table B.1 time (155.7 s for 10
  epochs of ResNet-18 on CIFAR-10's 50,000 images on an RTX 3080: 311 us per image);
- other architectures and input shapes scale with their forward FLOPs (counted here with
  torch's FlopCounterMode on one image); a served query costs a third of a training image
  (forward only), times the defense's serving factor (SERVE_FACTOR);
- each separately trained unit costs the paper's Table B.1 ratio (AM's 3.54 split evenly
  between its OE defender and its misinformation model; the ablations as full InI); a unit
  shared by several defenses (InI under InI+MAD) is counted once;
- clones train at Vanilla's cost per image; JBDA adds one forward and backward per new image.
"""
from __future__ import annotations

import argparse
import sys
from functools import lru_cache

PAPER_S_PER_IMAGE = 155.7 / (10 * 50_000)     # Table B.1, ResNet-18, CIFAR-10, RTX 3080
UNIT_RATIO = {"vanilla": 1.0, "am-defender": 3.54 / 2, "am": 3.54 / 2, "edm": 8.69, "ini": 12.15,
              "ini-iso": 12.15, "ini-ind": 12.15, "ini-nogradnorm": 12.15, "mad": 0.0, "mad-argmax": 0.0,
              "ini-adv": 12.15 + 1.0, "ini-adv-strong": 12.15 + 1.0}   # + the surrogate's own steps
# forwards per served query; GRAD2: a surrogate forward and a forward-mode pass (about 2 more),
# measured about 5x the base's forward on a tiny model (defenses/grad2.py)
SERVE_FACTOR = {"mad": 2.0, "mad-argmax": 2.0, "am": 2.0, "edm": 5.0, "grad2": 4.0}
TRAIN_IMAGES = {"mnist": 60_000, "fashionmnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
TEST_IMAGES = 10_000


@lru_cache(maxsize=None)
def forward_flops(arch: str, channels: int, side: int, classes: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build, input_size
    net = build(arch, classes, channels).eval()
    side = input_size(arch, side)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, channels, side, side))
    return fc.get_total_flops()


def image_cost(arch: str, dataset: str) -> float:
    """GPU seconds to train on one image of ``dataset`` with ``arch`` (scaled from the paper)."""
    from .data import FORMATS
    c, side, k = FORMATS[dataset][:3]
    ref = forward_flops("resnet18", 3, 32, 10)
    return PAPER_S_PER_IMAGE * forward_flops(arch, c, side, k) / ref


def estimate(profile) -> dict:
    """data set -> {"victims": s, "attacks": s, "total_h": hours, "units": n, "cells": n}."""
    from defenses import get_defense

    from .run import defense_params
    out = {}
    for ds in profile.roles:
        img = image_cost(profile.arch, ds)
        n_train = TRAIN_IMAGES.get(ds, 50_000) - (profile.val_size or 0)
        epochs = profile.train[ds].epochs
        units, serve = {}, {}
        ctx = shape_context(profile, ds)
        for name in profile.defenses_for(ds):
            d = get_defense(name, **defense_params(profile, name, ds))
            d.build(ctx)   # units() needs the models (a post-processor's auxiliary ones)
            for u in d.units():
                key = (u.name, repr(sorted(u.train_params().items())))
                units[key] = UNIT_RATIO.get(u.name, 1.0)
            serve[name] = SERVE_FACTOR.get(name.rsplit("+", 1)[-1], 1.0)
        victims = sum(units.values()) * epochs * n_train * img
        victims += sum(serve.values()) * 20 * TEST_IMAGES * img / 3     # tuning grids and benign accuracy
        attacks = 0.0
        for name, f in serve.items():
            for a in profile.attacks_for(name):
                attacks += len(profile.labels_for(a)) * attack_cost(a, profile.attacks[a], f, img)
        seeds = len(profile.seeds)
        out[ds] = {"victims_h": seeds * victims / 3600, "attacks_h": seeds * attacks / 3600,
                   "total_h": seeds * (victims + attacks) / 3600, "units": len(units) * seeds,
                   "cells": seeds * sum(len(profile.labels_for(a)) for n in serve for a in profile.attacks_for(n))}
    return out


def shape_context(profile, ds):
    """A Context with the real shapes and no training data: enough to build the models."""
    from .data import FORMATS, generated_like
    from .models import input_size
    from .train import Context
    c, side, k = FORMATS[ds][:3]
    r = profile.roles[ds]
    return Context(arch=profile.arch, num_classes=k, in_channels=c, input_size=input_size(profile.arch, side),
                   id_train=None, train=profile.train[ds], progress=False,
                   hash_set=generated_like(r.hash, "train", 2) if r.hash else None)


def attack_cost(attack: str, params: dict, serve_factor: float, img: float) -> float:
    from attacks import get_attack
    p = get_attack(attack, **params).params
    if attack == "knockoff":
        budgets = [p["budget"], *p["curve_budgets"]]
        return p["budget"] * serve_factor * img / 3 + sum(b * p["epochs"] * img for b in budgets)
    if attack == "jbda":
        sizes = [p["seed_size"] * 2 ** r for r in range(p["rounds"])]
        return (sum(sizes) * serve_factor * img / 3 + sum(sizes) * p["epochs_per_round"] * img
                + sum(sizes[:-1]) * img)
    return 0.0


def print_estimate(profile) -> None:
    rows = estimate(profile)
    print(f"ESTIMATE (not a measurement) of GPU hours for profile {profile.name!r}, {len(profile.seeds)} seed(s), "
          "on an RTX 3080-class GPU; inputs: python -m bench.estimate --help")
    for ds, r in rows.items():
        print(f"  {ds:13s} {r['total_h']:7.1f} h  (victims {r['victims_h']:.1f} h over {r['units']} trained units, "
              f"attacks {r['attacks_h']:.1f} h over {r['cells']} cells)")
    print(f"  {'all':13s} {sum(r['total_h'] for r in rows.values()):7.1f} h")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.estimate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", default="full", help="profile (default full)")
    a = ap.parse_args(argv)
    from .profiles import get_profile
    try:
        p = get_profile(a.matrix)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_estimate(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
