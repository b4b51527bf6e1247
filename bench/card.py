"""``python -m bench.card --defense NAME``: a report card for one defense, beside every baseline.

Runs (or reuses) every cell the defense and the profile's baselines need on the same victims
and seeds, then writes one page (Markdown and HTML): benign-accuracy cost, clone accuracy and
fidelity per attack and label mode with 95% t-intervals over seeds, Welch's t-test against
Vanilla and against the strongest baseline (lowest clone accuracy), the budget curve where the
profile records one, and the serving and training cost ratios from ``bench.speed`` records.

    python -m bench.card --defense topk                  # the ci profile: 3 seeds, about 20 min
    python -m bench.card --defense topk --profile cpu    # every paper baseline (one seed: no intervals)

The default profile is ``ci``: its three seeds are what intervals and tests need. Cells that the
committed reference ``results/<profile>`` already holds (same cache key) are reused.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import paper as P
from .stats import interval, welch

ALPHA = 0.05


def reuse_reference(profile, out: Path, ref: Path) -> int:
    """Copy the reference's records whose cache keys this run plans (same code, same config)."""
    from .run import cell_record_path, plan, victim_key, victim_record_path
    from .keys import cell_key
    n = 0
    for ds, df, at, lb, sd in plan(profile):
        key = cell_key(profile, ds, df, at, lb, sd)
        src, dst = cell_record_path(ref, ds, df, at, lb, sd, key), cell_record_path(out, ds, df, at, lb, sd, key)
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            n += 1
        vk = victim_key(profile, ds, df, sd)
        vsrc, vdst = victim_record_path(ref, ds, df, sd, vk), victim_record_path(out, ds, df, sd, vk)
        if vsrc.exists() and not vdst.exists():
            vdst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(vsrc, vdst)
    return n


def values(records, kind, **match):
    """{seed: metric} of the records matching every field; metric chosen by ``kind``."""
    out = {}
    for r in records:
        if all(getattr(r, k) == v for k, v in match.items()):
            if kind == "benign_acc":
                out[r.seed] = r.benign_acc
            else:
                out[r.seed] = getattr(r, kind) if r.status == "ok" else None
    return out


def card_rows(records, defense, baselines) -> list[dict]:
    """One row per (data set, metric, attack, label): the defense's and each baseline's numbers."""
    cells = [r for r in records if r.kind == "cell"]
    rows = []
    keys = sorted({(r.dataset, r.attack, r.label) for r in cells})
    for ds in sorted({k[0] for k in keys}):
        rows.append(row(records, ds, "benign_acc", "", "", defense, baselines))
        for _, at, lb in (k for k in keys if k[0] == ds):
            for metric in ("clone_acc", "fidelity"):
                rows.append(row(cells, ds, metric, at, lb, defense, baselines))
    return rows


def row(records, ds, metric, attack, label, defense, baselines) -> dict:
    match = {"dataset": ds} | ({"attack": attack, "label": label} if attack else {})  # benign: one per victim and seed
    per = {d: values([r for r in records if r.defense == d], metric, **match) for d in [defense, *baselines]}
    mine = list(per[defense].values())
    means = {d: interval(per[d].values())[0] for d in baselines if d not in ("vanilla", defense) and per[d]}
    best = None
    if metric == "clone_acc" and means:   # the strongest baseline: the lowest mean clone accuracy
        best = min(means, key=lambda d: means[d] if means[d] is not None else 1e9)
    d_van, p_van = welch(mine, list(per.get("vanilla", {}).values())) if "vanilla" in per else (None, None)
    d_best, p_best = welch(mine, list(per[best].values())) if best else (None, None)
    return {"dataset": ds, "metric": metric, "attack": attack, "label": label,
            "stats": {d: interval(v.values()) + (len([x for x in v.values() if x is not None]),) for d, v in per.items()},
            "vs_vanilla": (d_van, p_van), "best": best, "vs_best": (d_best, p_best)}


def _num(m, h=None):
    if m is None:
        return "—"
    return f"{m:.2f} ± {h:.2f}" if h is not None else f"{m:.2f}"


def _test(d, p, lower_is_better=True):
    if d is None:
        return "—"
    if p is None:
        return f"{d:+.2f} (one seed: no test)"
    better = (d < 0) == lower_is_better
    verdict = ("significantly " + ("better" if better else "worse")) if p < ALPHA else "no significant difference"
    return f"{d:+.2f}, p = {p:.3f}: {verdict}"


def render_markdown(defense, profile, rows, baselines, speed, seeds) -> str:
    from tabulate import tabulate
    label = P.defense_label(defense)
    lines = [f"# Report card: {label} (`{defense}`), profile `{profile.name}`", "",
             f"Seeds {', '.join(map(str, seeds))}; every baseline on the same victims and seeds. Numbers are "
             "mean ± half-width of the 95% t-interval over seeds (% on the victim's test set). Tests: Welch's "
             f"t-test, two-sided, alpha {ALPHA}. Clone accuracy and fidelity: lower is a better defense; "
             "benign accuracy: higher is better.", ""]
    head = ["data set", "metric", "attack", "label", label] + [P.defense_label(b) for b in baselines] + \
           ["vs Vanilla", "vs strongest baseline"]
    table = []
    for r in rows:
        st = r["stats"]
        lower = r["metric"] != "benign_acc"
        best = f" ({P.defense_label(r['best'])})" if r["best"] else ""
        table.append([P.dataset_label(r["dataset"]), r["metric"], P.ATTACKS.get(r["attack"], r["attack"]), r["label"],
                      _num(*st[defense][:2])] + [_num(*st[b][:2]) for b in baselines] +
                     [_test(*r["vs_vanilla"], lower), (_test(*r["vs_best"], lower) + best) if r["best"] else "—"])
    lines += [tabulate(table, head, tablefmt="github"), "", "## Cost", ""]
    lines += speed or ["No `bench.speed` record times this defense yet: `python -m bench.speed --device cpu "
                       f"--defenses vanilla,{defense}` measures its serving cost as a ratio to Vanilla."]
    lines += ["", "## Deviations of the profile from the paper", ""] + [f"- {d}" for d in profile.deviations]
    return "\n".join(lines) + "\n"


def speed_lines(defense, speed_root: Path) -> list[str]:
    """The defense's serving (and training) time as a ratio to Vanilla in each speed record."""
    from .report import load_speed
    out = []
    for rec in load_speed(speed_root) if speed_root.is_dir() else []:
        what = "training" if "train" in rec.get("kind", "") else "serving"
        for row in rec.get("rows", []):
            if row.get("defense") == defense and row.get("ratio_to_vanilla") is not None:
                style = f", {row['style']}" if row.get("style") else ""
                out.append(f"- {what}, {rec['_device_dir']} ({rec.get('arch', '?')}{style}): "
                           f"{row['ratio_to_vanilla']:.2f}x Vanilla at batch {row.get('batch_size', '?')}")
    return out


def render_html(markdown_text: str, title: str) -> str:
    import html
    import re
    body = []
    in_table = False
    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            tag = "th" if not in_table else "td"
            body.append(("<table>" if not in_table else "") + "<tr>" +
                        "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            body.append(f"<h{n}>{html.escape(line.lstrip('# '))}</h{n}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(line))
            body.append(f"<p>{text}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:3px 7px;white-space:nowrap}"
             "th{background:#f6f8fa}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.card", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--defense", required=True, help="registry name of the defense (e.g. topk, vanilla+topk)")
    ap.add_argument("--profile", default="ci", help="profile (default ci: three seeds)")
    ap.add_argument("--baselines", help="comma-separated baselines (default: the profile's defenses)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the profile's)")
    ap.add_argument("--out", help="run folder (default runs/<profile>)")
    ap.add_argument("--card-dir", help="where the card goes (default runs/cards)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel workers")
    ap.add_argument("--data-root", help="data root (default $STEALBENCH_DATA)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    from defenses import get_defense

    from .profiles import get_profile
    from .run import REFERENCE, RUNS, UsageError, run_matrix, select
    try:
        get_defense(a.defense)
        base = get_profile(a.profile)
        baselines = [b for b in (a.baselines.split(",") if a.baselines else base.defenses_for(next(iter(base.roles))))
                     if b != a.defense]
        seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
        profile = select(base, defenses=[*baselines, a.defense], seeds=seeds)
    except (ValueError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .data import DataMissingError
    from .io import CorruptFileError
    from .run import check_data_root
    out = Path(a.out or RUNS / profile.name)
    try:
        check_data_root(a.data_root)
        reused = reuse_reference(profile, out, REFERENCE / profile.name)
        if reused:
            print(f"reusing {reused} cells of the committed reference {REFERENCE / profile.name}")
        records = run_matrix(profile, out, jobs=a.jobs, data_root=a.data_root, device=a.device,
                             progress=not a.no_progress)
    except (UsageError, DataMissingError, CorruptFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from . import records as R
    victims = [r for r in R.load_all(out) if r.kind == "victim" and r.profile == profile.name]
    rows = card_rows(records + victims, a.defense, baselines)
    text = render_markdown(a.defense, profile, rows, baselines,
                           speed_lines(a.defense, REFERENCE / "speed"), profile.seeds)
    card = Path(a.card_dir or RUNS / "cards") / f"{a.defense.replace('+', '_')}-{profile.name}"
    from .io import write_text
    write_text(card.with_suffix(".md"), text)
    write_text(card.with_suffix(".html"), render_html(text, f"Report card: {a.defense}"))
    print(text)
    print(f"wrote {card}.md and {card}.html")
    return 1 if any(r.status != "ok" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
