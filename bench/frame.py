"""Result records as a pandas DataFrame, and their seed statistics.

One row per record (victims and cells alike); ``seed_stats`` aggregates a metric over seeds
with ``groupby`` so every page that reads results (leaderboard, report card) agrees.
"""
from __future__ import annotations

import glob
import os

import pandas as pd

from . import records as R

COLUMNS = ["profile", "kind", "arch", "dataset", "defense", "defense_label", "attack", "label", "seed",
           "status", "benign_acc", "clone_acc", "clone_acc_best", "relative", "fidelity", "path"]
GROUP = ["profile", "arch", "dataset", "defense", "attack", "label"]


def frame_of(records, paths=None) -> pd.DataFrame:
    """Records (VictimRecord / CellRecord) as rows; a failed cell's metrics are missing."""
    rows = []
    for i, r in enumerate(records):
        row = {c: getattr(r, c, None) for c in COLUMNS if c != "path"}
        if r.kind == "victim":
            row.update(attack="", label="", status="ok")
        if r.kind == "cell" and r.status != "ok":
            row.update(clone_acc=None, clone_acc_best=None, relative=None, fidelity=None)
        row["path"] = paths[i] if paths else None
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def records_frame(results_dir) -> pd.DataFrame:
    """Every record under ``results_dir/records`` with the path it came from (relative)."""
    pattern = os.path.join(results_dir, "records", "**", "*.json")
    paths = sorted(glob.glob(pattern, recursive=True))
    return frame_of([R.load(p) for p in paths], [os.path.relpath(p, results_dir) for p in paths])


def seed_stats(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """mean, std (over seeds with a value), n (seeds with a value), failed, first record path."""
    if df.empty:
        return pd.DataFrame(columns=GROUP + ["mean", "std", "n", "failed", "path"])
    g = df.groupby(GROUP, dropna=False)
    out = g[metric].agg(mean="mean", std="std", n="count")
    out["failed"] = g["status"].agg(lambda s: int((s != "ok").sum()))
    out["path"] = g["path"].first()
    return out.reset_index()
