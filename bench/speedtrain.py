"""Training cost (paper Table B.1) for ``python -m bench.speed --train``.

--repeats rounds (default 3); round r fits vanilla, am, edm, ini, each freshly built, for
--epochs full epochs over --train-size random images, after --warmup untimed rounds on a few
batches. Per defense: the median, min-max (and IQR from 4 rounds) and the per-round ratio to
Vanilla.
"""
from __future__ import annotations

import statistics

from bench.costmodel import make_context
from bench.registry import DEFENSES
from bench.timing import load_reading, spread, time_once
from bench.train import Context, seed_everything

TRAIN_DEFENSES = ("vanilla", "am", "edm", "ini")


def default_train_defenses() -> list[str]:
    import defenses  # noqa: F401  registers every defense module
    return [n for n in TRAIN_DEFENSES if n in DEFENSES]


def fit_once(name: str, ctx: Context, device: str) -> tuple[str, dict]:
    """One defense freshly built (seeded) and every trained unit fitted for ctx's epochs:
    (display name, seconds per unit)."""
    from defenses import get_defense
    seed_everything(ctx.seed)
    d = get_defense(name)
    d.build(ctx)
    units = {}
    for u in d.units():
        units[u.name] = units.get(u.name, 0.0) + time_once(lambda u=u: u.fit(ctx), device)
    return d.display, units


def warmup_size(n: int, batch: int) -> int:
    """Two full batches plus the epoch's last partial batch, if it has one."""
    return min(n, 2 * batch + n % batch)


def run_training(args, device: str, names: list[str]) -> dict:
    """--repeats interleaved rounds (round r: every defense in order, freshly built)."""
    ctx = make_context(args.arch, device, n=args.train_size, epochs=args.epochs, seed=args.seed,
                       progress=not args.quiet)
    # Untimed warm-up fits on a few batches (both batch shapes of the real epoch): on CUDA the
    # first fit pays the context start, lazy kernel loading and cuDNN's autotuning, which made
    # round 1's Vanilla 2-10x the others on an H100.
    small = make_context(args.arch, device, n=warmup_size(args.train_size, ctx.train.batch_size),
                         epochs=1, seed=args.seed)
    for _ in range(args.warmup):
        for name in names:
            fit_once(name, small, device)
    fits, loads = {n: [] for n in names}, []
    for r in range(args.repeats):
        if r:
            loads.append(load_reading())
        for name in names:
            fits[name].append(fit_once(name, ctx, device))
    return {"rows": train_rows(fits), "load_during": loads}


def train_rows(fits: dict[str, list]) -> list[dict]:
    """Per defense: median seconds over rounds, min-max (IQR from 4 rounds), and the ratio to
    Vanilla taken per round. ``fits``: name -> [(display, {unit: seconds})] per round."""
    ref = [sum(u.values()) for _, u in fits["vanilla"]]
    rows = []
    for name, per in fits.items():
        secs = [sum(u.values()) for _, u in per]
        ratios = [s / v for s, v in zip(secs, ref)]
        s, q = spread(secs), spread(ratios)
        row = {"defense": name, "label": per[0][0], "seconds": s["median"],
               "seconds_per_round": secs, "seconds_range": [s["min"], s["max"]],
               "units_s": {k: statistics.median(u[k] for _, u in per) for k in per[0][1]},
               "units_s_per_round": [u for _, u in per],
               "ratio_to_vanilla": q["median"], "ratio_per_round": ratios,
               "ratio_range": [q["min"], q["max"]]}
        if len(secs) >= 4:
            row.update(seconds_iqr=[s["q1"], s["q3"]], ratio_iqr=[q["q1"], q["q3"]])
        rows.append(row)
    return rows
