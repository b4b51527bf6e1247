"""A controlled change's effect: the cells of one profile beside those of another that attacks the
same victims (same victim keys) with one thing changed (a wider clone, longer clone training).

    python -m bench.contrast --base cpu --changed cpu-probe-wide \
        --results results/cpu results/cpu-probe-wide --out results/cpu-probe-wide/contrast.md

Rendered from cell records only. Per (data set, label, defense): the base and the changed
clone accuracy over seeds (mean ± std, each seed's value) and the change (a paired t interval
over seeds, 95 %, * where p < 0.05: both attack the same victim); per (data set, label), each
defense's gap to Vanilla under both, which says whether the change moves the ranking. A seed
counts only where both profiles have it.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path

from . import records as R
from .io import write_text
from .stats import paired_interval, welch_interval
from .tables import Stat, fmt_stat, fmt_vs


def paired(recs, base: str, changed: str) -> dict:
    """(dataset, label, defense) -> {seed: (base clone acc, changed clone acc)}, for attacks on
    the same victim; the base cell is the one with the changed cell's victim, attack and label."""
    by = defaultdict(dict)
    for r in recs:
        if r.kind == "cell" and r.status == "ok" and r.profile in (base, changed):
            by[(r.victim_key, r.attack, r.label)][r.profile] = r
    out = defaultdict(dict)
    for pair in by.values():
        if base in pair and changed in pair:
            b, c = pair[base], pair[changed]
            out[(c.dataset, c.label, c.defense)][c.seed] = (b.clone_acc, c.clone_acc)
    return out


def rows(pairs: dict) -> list[dict]:
    out = []
    for (ds, label, defense), seeds in sorted(pairs.items()):
        order = sorted(seeds)
        b, c = [seeds[s][0] for s in order], [seeds[s][1] for s in order]
        diff, half, p = paired_interval(c, b)   # the same victim and seed under both
        out.append({"dataset": ds, "label": label, "defense": defense, "seeds": order,
                    "base": b, "changed": c, "change": fmt_vs(diff, half, p)})
    return out


def gaps(pairs: dict, reference: str = "vanilla") -> list[dict]:
    """Each defense's clone minus the reference's, under the base and under the change."""
    out = []
    for (ds, label, defense), seeds in sorted(pairs.items()):
        ref = pairs.get((ds, label, reference))
        if defense == reference or not ref:
            continue
        common = sorted(set(seeds) & set(ref))
        g = {}
        for i, which in enumerate(("base", "changed")):
            g[which] = fmt_vs(*welch_interval([seeds[s][i] for s in common], [ref[s][i] for s in common]))
        out.append({"dataset": ds, "label": label, "defense": defense, "seeds": common, **g})
    return out


def render(recs, base: str, changed: str) -> tuple[str, str]:
    pairs = paired(recs, base, changed)
    if not pairs:
        raise ValueError(f"no cell of {changed!r} has a {base!r} cell on the same victim, attack and label")
    commits = sorted({r.provenance.get("git_commit", "?")[:12] for r in recs
                      if r.kind == "cell" and r.profile in (base, changed)})
    lines = [f"# `{changed}` against `{base}`: the same victims, one change", "",
             f"Rendered by `python -m bench.contrast` from cell records (commits {', '.join(commits)}). "
             "Clone accuracy in % on the victim's test set; mean ± std over seeds; change = changed − "
             "base, paired by seed (the same victim under both), with its 95 % t interval (* p < 0.05).", "",
             "| data set | label | defense | seeds | base | changed | change | per seed (base → changed) |",
             "|---|---|---|---|---:|---:|---|---|"]
    table = rows(pairs)
    for r in table:
        per = ", ".join(f"{b:.2f} → {c:.2f}" for b, c in zip(r["base"], r["changed"]))
        lines.append(f"| {r['dataset']} | {r['label']} | {r['defense']} | {','.join(map(str, r['seeds']))} | "
                     f"{fmt_stat(Stat.of(r['base']))} | {fmt_stat(Stat.of(r['changed']))} | {r['change']} | {per} |")
    lines += ["", "Each defense's clone minus Vanilla's (Welch's 95 % interval), under each:", "",
              "| data set | label | defense | seeds | base | changed |", "|---|---|---|---|---|---|"]
    for g in gaps(pairs):
        lines.append(f"| {g['dataset']} | {g['label']} | {g['defense']} | {','.join(map(str, g['seeds']))} | "
                     f"{g['base']} | {g['changed']} |")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "label", "defense", "seed", "base_clone_acc", "changed_clone_acc"])
    for (ds, label, defense), seeds in sorted(pairs.items()):
        for s in sorted(seeds):
            w.writerow([ds, label, defense, s, *seeds[s]])
    return "\n".join(lines) + "\n", buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.contrast", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the profile without the change (e.g. cpu)")
    ap.add_argument("--changed", required=True, help="the profile with it (e.g. cpu-probe-wide)")
    ap.add_argument("--results", type=Path, nargs="+", required=True,
                    help="folder(s) holding the two profiles' records/ (a run folder, or committed results)")
    ap.add_argument("--out", type=Path, required=True, help="the Markdown file to write (a .csv beside it)")
    a = ap.parse_args(argv)
    for folder in a.results:
        if not (folder / "records").is_dir():
            print(f"error: {folder} holds no records/ folder; pass a folder bench.run wrote or a results/ folder",
                  file=sys.stderr)
            return 2
    recs = [r for folder in a.results for r in R.load_all(folder)]
    try:
        md, table = render(recs, a.base, a.changed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_text(a.out, md)
    write_text(a.out.with_suffix(".csv"), table)
    print(f"wrote {a.out} and {a.out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
