"""``python -m bench.rehearse``: every cell type of the GPU profiles, end to end, on CPU.

Nobody can afford to find a crash ten hours into ``bench.run --matrix full --device cuda``.
A rehearsal runs the profile's every data set, defense (compositions and ablations included),
attack and label mode through the same runner, records and report, with:
- generated data in each real set's format (``$STEALBENCH_GENERATED``: 1x28x28 or 3x32x32,
  10 / 26 / 47 / 100 / 200 classes, the victim's normalization and augmentation) instead of
  the files, so it needs no data (the files' parsers are covered by tests/test_data.py);
- the real architectures (ResNet-18, VGG-16) and every defense's real parameters;
- minimum sizes: 1 training epoch on a few dozen images, a few queries, 1 clone epoch.
Then it prints the estimate of the real run's GPU hours (bench/estimate.py).

    python -m bench.rehearse                    # full and full-vgg (about 30 minutes on 2 cores)
    python -m bench.rehearse --matrix full --datasets cifar100
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .profiles import Profile, get_profile
from .train import TrainConfig

GPU_PROFILES = ("full", "full-vgg")
IMAGES = 48          # per split and role
BATCH = 16           # so that every loop takes several steps


def shrink(p: Profile) -> Profile:
    """The profile at minimum sizes; everything that selects a code path is kept."""
    train = {ds: TrainConfig(**{**asdict(cfg), "epochs": 1, "batch_size": BATCH}) for ds, cfg in p.train.items()}
    attacks = {}
    for name, params in p.attacks.items():
        params = dict(params)
        if name == "knockoff":
            params.update(budget=24, epochs=1, batch_size=BATCH,
                          curve_budgets=tuple(c for c in (8, 16) if params.get("curve_budgets")))
        elif name == "jbda":
            params.update(seed_size=6, rounds=2, epochs_per_round=1, batch_size=BATCH)
        elif name == "dfme":    # two of its iterations at batch 16 (one takes 112 queries)
            params.update(budget=224, batch_size=BATCH, checkpoint_every=1)
        elif name.startswith("adaptive"):   # adaptive, adaptive-filter
            params.update(budget=24, epochs=1, batch_size=BATCH, shadow_epochs=1, aux_epochs=1,
                          map_steps=20, extra_images=24)
        else:                    # pool and noise attacks: a few queries, one epoch
            params.update(budget=24, epochs=1, batch_size=BATCH)
        attacks[name] = params
    ini = {**p.defense_params.get("ini", {}), "log_cosine_epochs": 1} if "ini" in p.defense_params else None
    params = {**p.defense_params, **({"ini": ini} if ini else {})}
    return replace(p, name=f"rehearse-{p.name}", train=train, attacks=attacks, seeds=(0,),
                   train_size=None, test_size=None, query_size=None, ood_size=None,
                   defense_params=params, deviations=(f"rehearsal of {p.name!r}: generated data, minimum sizes; "
                                                      "the numbers mean nothing",) + p.deviations)


def rehearse(name: str, out: Path, datasets=None, device="cpu", progress=True) -> list:
    from . import run as R
    from .report import render
    os.environ["STEALBENCH_GENERATED"] = str(IMAGES)
    p = R.select(shrink(get_profile(name)), datasets=datasets)
    t0 = time.time()
    records = R.run_matrix(p, out, device=device, progress=progress)
    failed = [r for r in records if r.status != "ok"]
    render(out, out, p.name, speed_dir=out / "no-speed")
    print(f"rehearsal of {name}: {len(records)} cells, {len(failed)} failed, {time.time() - t0:.0f} s; "
          f"records, tables and report under {out}")
    for r in failed:
        print(f"FAILED {r.dataset}/{r.defense}/{r.attack}/{r.label}: {r.error}", file=sys.stderr)
    return records


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.rehearse", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", default=",".join(GPU_PROFILES),
                    help=f"comma-separated profiles to rehearse (default {','.join(GPU_PROFILES)})")
    ap.add_argument("--datasets", help="comma-separated subset of the profile's data sets")
    ap.add_argument("--out", default="runs/rehearse", help="folder; one sub-folder per profile (default runs/rehearse)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    from .estimate import print_estimate
    from .run import UsageError
    names = [n.strip() for n in a.matrix.split(",") if n.strip()]
    datasets = [d.strip() for d in a.datasets.split(",")] if a.datasets else None
    try:
        for n in names:
            get_profile(n)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = 0
    for n in names:
        try:
            records = rehearse(n, Path(a.out) / n, datasets, a.device, not a.no_progress)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        bad += sum(r.status != "ok" for r in records)
        print_estimate(get_profile(n))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
