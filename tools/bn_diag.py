"""Where a trained victim's benign accuracy goes: its BatchNorm running statistics or its weights.
Evaluates a run folder's victim model on the ID test set in eval mode (as served), with batch
statistics (train-mode BN, batches of 128), and with the running statistics recomputed from ID
training images only, from OOD images only, and from both mixed (a diagnostic, not a result).

    python tools/bn_diag.py --out results/cpu-new --defense ini-adv [--profile cpu-extended]

Session 18 measured with it (MNIST, seed 0): ini-adv eval 53.81 %, batch statistics 87.83 %,
ID-only statistics 89.10 %, mixed 62.90 %; ini-adv-strong 98.07 / 98.46 / 98.50 / 98.34 %;
InI 97.32 / 98.57 / 98.67 / 97.77 %.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def accuracy(model, x, y, train_bn=False, bs=128):
    """Top-1 accuracy in % and the largest share of one predicted class in %."""
    model.train(train_bn)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])
    top = torch.bincount(pred, minlength=int(y.max()) + 1).max().item()
    return round(100 * (pred == y).float().mean().item(), 2), round(100 * top / len(pred), 1)


def recalibrated(model, x, bs=128):
    """A copy of the model whose BN running statistics are the plain average over x's batches."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        for i in range(0, len(x), bs):
            m(x[i:i + bs])
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder holding the trained victims (bench.run --out)")
    p.add_argument("--defense", required=True, help="a trained defense whose 'model' net to check, e.g. ini-adv")
    p.add_argument("--profile", default="cpu-extended")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=10000, help="images per recalibration set")
    a = p.parse_args(argv)
    from bench.profiles import get_profile
    from bench.roles import load_roles
    from bench.victims import build_victim
    prof = get_profile(a.profile)
    victim, rec = build_victim(prof, a.dataset, a.defense, a.seed, a.out, None, "cpu", progress=False)
    if "model" not in getattr(victim, "nets", {}):
        print(f"bn_diag: {a.defense!r} has no single 'model' net to check", file=sys.stderr)
        return 2
    m, roles = victim.nets["model"], load_roles(prof, a.dataset, None)
    x, y = roles["test"].x, roles["test"].y
    idx, ood = roles["train"].x[:a.images], roles["ood"].x[:a.images]
    g = torch.Generator().manual_seed(0)
    mixed = torch.cat([idx, ood])[torch.randperm(2 * len(idx), generator=g)]
    row = {"defense": a.defense, "seed": a.seed, "record_benign": round(rec.benign_acc, 2),
           "eval": accuracy(m, x, y), "batch_stats": accuracy(copy.deepcopy(m), x, y, train_bn=True),
           "id_stats": accuracy(recalibrated(m, idx), x, y), "mixed_stats": accuracy(recalibrated(m, mixed), x, y),
           "ood_stats": accuracy(recalibrated(m, ood), x, y)}
    print(json.dumps(row))   # each pair: (accuracy %, largest share of one predicted class %)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
