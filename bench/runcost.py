"""What training each victim cost in this run, from the victim records (``extra.train_s``).

Table B.1 (bench/speedtables.py) times defenses on random data by a fixed protocol; this table
is the same question asked of the benchmark's own run: the real data, epochs and machine of the
profile. Seconds are a unit's training time over every process that trained it (a resumed unit
counts its earlier epochs). Units are shared between victims (InI+MAD serves InI's model): a
victim's cost is the sum of its units', so a shared unit counts in every victim that uses it.
Ratios to Vanilla are taken per seed, on the same data set.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

from . import paper as P
from .tables import Table, _csv_num
from .timing import spread


def victim_seconds(records) -> dict:
    """(arch, dataset, defense) -> {seed: training seconds} for victims that recorded them."""
    out = defaultdict(dict)
    for v in records:
        per_unit = v.extra.get("train_s") if v.kind == "victim" else None
        if isinstance(per_unit, dict) and per_unit:
            out[(v.arch, v.dataset, v.defense)][v.seed] = float(sum(per_unit.values()))
    return out


def _spread(values, fmt="{:.0f}") -> str:
    """'median (min-max)' of the seeds' values; the median alone for one seed."""
    if not values:
        return "—"
    sp = spread(values)
    med = fmt.format(sp["median"])
    return med if sp["n"] == 1 else f"{med} ({fmt.format(sp['min'])}-{fmt.format(sp['max'])})"


def table_run_cost(records) -> Table | None:
    secs = victim_seconds(records)
    if not secs:
        return None
    cpus = sorted({(v.provenance or {}).get("platform", {}).get("cpu_model") or (v.provenance or {}).get("device", "?")
                   for v in records if v.kind == "victim"})
    rows, tidy = [], []
    for (arch, ds, d), by_seed in sorted(secs.items(), key=lambda kv: (kv[0][0], kv[0][1], P.defense_rank(kv[0][2]))):
        ref = secs.get((arch, ds, "vanilla"), {})
        ratios = [s / ref[k] for k, s in by_seed.items() if ref.get(k)]
        vals = list(by_seed.values())
        rows.append([P.arch_label(arch), P.dataset_label(ds), P.defense_label(d), len(vals), _spread(vals),
                     _spread(ratios, "{:.2f}x")])
        tidy.append({"arch": arch, "dataset": ds, "defense": d, "seeds": len(vals),
                     "train_s_median": _csv_num(statistics.median(vals)),
                     "ratio_to_vanilla_median": _csv_num(statistics.median(ratios)) if ratios else ""})
    return Table("run_cost", "Training cost of this run's victims (seconds; ratio to Vanilla)",
                 ["Arch", "Dataset", "Defense", "seeds", "train s: median (min-max)",
                  "ratio to Vanilla: median (min-max)"], rows, tidy,
                 ["Each victim's units' training time, summed over the processes that trained them "
                  "(records' `extra.train_s`); the machine(s): " + ", ".join(cpus) + ". Ratios per "
                  "seed against that seed's Vanilla victim. Timing protocol and load: none beyond "
                  "the run's own (see Table B.1 for a controlled measurement)."])
