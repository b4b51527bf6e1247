"""Baselines for the regression check: per-group means over seeds and tolerances measured
from seed and platform noise.

A *group* is one cell of the tables without its seed: ``dataset/defense/attack/label`` for
clone accuracy, ``dataset/defense/victim`` for benign accuracy. The check compares a group's
mean over seeds with the baseline's mean over the same seeds. The tolerance is

    max(floor, z * sd * sqrt(2 / n), margin * platform_dev)

where ``sd`` is the seed spread pooled over the baseline run and every calibration run
(runs of the same code on other platforms: CPU kernels, thread counts, torch builds),
``n`` the number of seeds, and ``platform_dev`` the largest distance between a calibration
run's mean and the baseline's. The first term is a two-sample z-test on the means (z = 4:
a correct run fails a group about once in 16,000 under normal noise); the last makes every
calibrated platform pass by construction.
"""
from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter

SCHEMA = 2
# floor 0.5: benign accuracy's seed sd is 0.03-0.2 and its largest platform shift 0.29 points;
# a floor of 1.0 hid a victim trained at a tenth of its lr (MNIST benign -0.67, 11 sd).
RULE = {"z": 4.0, "floor": 0.5, "margin": 1.5}


class BadInput(Exception):
    """Unusable input; reported as one line and exit status 2."""


# ------------------------------------------------------------------ groups
def group_of(dataset, defense, attack=None, label=None) -> str:
    return f"{dataset}/{defense}/victim" if attack is None else f"{dataset}/{defense}/{attack}/{label}"


def measure(cells, victims) -> dict:
    """group -> {"metric", "values": {seed: value or None (failed)}} from a run's records."""
    out = {}
    for c in cells:
        g = out.setdefault(group_of(c.dataset, c.defense, c.attack, c.label),
                           {"metric": "clone_acc", "values": {}})
        g["values"][str(c.seed)] = c.clone_acc if c.status == "ok" else None
    benign = {}
    for c in cells:   # a cell carries its victim's benign accuracy; victim records win below
        benign.setdefault(group_of(c.dataset, c.defense), {})[str(c.seed)] = c.benign_acc
    for v in victims:
        benign.setdefault(group_of(v.dataset, v.defense), {})[str(v.seed)] = v.benign_acc
    out.update({g: {"metric": "benign_acc", "values": vals} for g, vals in benign.items()})
    return out


def mean(values: dict) -> float | None:
    """Mean over seeds; None when any seed failed (or there are none)."""
    vals = list(values.values())
    if not vals or any(v is None for v in vals):
        return None
    return statistics.fmean(vals)


def std(values: dict) -> float:
    vals = [v for v in values.values() if v is not None]
    return statistics.stdev(vals) if len(vals) >= 2 else 0.0


# ------------------------------------------------------------------ tolerances
def pooled_sd(runs: list[dict]) -> tuple[float, int]:
    """Seed spread pooled over runs (each a {seed: value}): (sd, degrees of freedom)."""
    ss, df = 0.0, 0
    for values in runs:
        vals = [v for v in values.values() if v is not None]
        if len(vals) >= 2:
            m = sum(vals) / len(vals)
            ss += sum((v - m) ** 2 for v in vals)
            df += len(vals) - 1
    return (math.sqrt(ss / df) if df else 0.0), df


def set_tolerances(baseline: dict) -> dict:
    """(Re)compute every group's tolerance from the baseline's and the calibration runs' values."""
    rule = {**RULE, **baseline.get("rule", {})}
    cal = baseline.get("calibration", {}).get("runs", [])
    for name, g in baseline["groups"].items():
        others = [r["values"][name] for r in cal if name in r.get("values", {})]
        sd, df = pooled_sd([g["values"], *others])
        n = max(1, sum(v is not None for v in g["values"].values()))
        means = [m for m in map(mean, others) if m is not None] if g["mean"] is not None else []
        dev = max((abs(m - g["mean"]) for m in means), default=0.0)
        g["noise"] = {"seed_sd": round(sd, 3), "df": df, "platform_dev": round(dev, 3),
                      "platform_runs": len(others)}
        if "tolerance_fixed" in g:   # set by hand; kept across updates
            g["tolerance"] = g["tolerance_fixed"]
            continue
        g["tolerance"] = round(max(rule["floor"], rule["z"] * sd * math.sqrt(2 / n), rule["margin"] * dev), 2)
    baseline["rule"] = rule
    return baseline


# ------------------------------------------------------------------ baseline file
def new_baseline(profile: str, current: dict, records, old: dict | None, commit: str,
                 slice_: dict, seeds: list, platform: str) -> dict:
    """A baseline from one run. ``commit``: HEAD when the run started; records written later
    may name later commits when the working tree changed during the run: listed apart."""
    later = sorted({r.provenance.get("git_commit") for r in records
                    if r.provenance.get("git_commit")} - {commit})
    prov = next((r.provenance for r in records if r.provenance), {})
    groups = {}
    for name, g in sorted(current.items()):
        entry = {"metric": g["metric"], "values": {s: _r(v) for s, v in sorted(g["values"].items())},
                 "mean": _r(mean(g["values"])), "std": _r(std(g["values"]))}
        fixed = ((old or {}).get("groups") or {}).get(name, {}).get("tolerance_fixed")
        if fixed is not None:
            entry["tolerance_fixed"] = fixed
        groups[name] = entry
    base = {"schema": SCHEMA, "profile": profile, "slice": slice_, "seeds": seeds, "commit": commit,
            "record_commits_other": later, "platform": platform, "memory_format": memory_format_of(records),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": prov.get("versions"), "rule": dict((old or {}).get("rule", RULE)),
            "note": "Written by `python -m bench.check --update`; tolerances from `--calibrate`. "
                    "A group may carry \"tolerance_fixed\" (points), set by hand.",
            "groups": groups, "calibration": {"runs": []}}
    return set_tolerances(base)


def add_calibration(baseline: dict, current: dict, source: str, platform: str, commit: str) -> dict:
    """Add one run of the same slice by the same code on another platform, recompute tolerances."""
    missing = sorted(set(baseline["groups"]) - set(current))
    if missing:
        raise BadInput(f"calibration run {source} lacks {len(missing)} groups (first: {missing[0]})")
    runs = [r for r in baseline.setdefault("calibration", {}).setdefault("runs", []) if r["source"] != source]
    runs.append({"source": source, "platform": platform, "commit": commit,
                 "values": {g: {s: _r(v) for s, v in current[g]["values"].items()} for g in baseline["groups"]},
                 "means": {g: _r(mean(current[g]["values"])) for g in baseline["groups"]}})
    baseline["calibration"]["runs"] = runs
    return set_tolerances(baseline)


def most_common_commit(records) -> str:
    return Counter(r.provenance.get("git_commit", "unknown") for r in records).most_common(1)[0][0]


def memory_format_of(records) -> str:
    """The training loop's memory format the records were made in (most of them): a check re-runs
    the matrix in it, since the format moves short-run numbers like a kernel path does."""
    def fmt(prov):
        plat = prov.get("platform") or {}
        if "memory_format" in plat:
            return plat["memory_format"]
        return "channels_last" if (plat.get("env") or {}).get("STEALBENCH_CHANNELS_LAST") == "1" else "contiguous"
    formats = Counter(fmt(r.provenance) for r in records if r.provenance)
    return formats.most_common(1)[0][0] if formats else "contiguous"


def platform_of(records) -> str:
    from .io import platform_label
    labels = Counter(platform_label(r.provenance) for r in records if r.provenance)
    return labels.most_common(1)[0][0] if labels else "unknown"


def _r(v):
    return None if v is None else round(v, 4)
