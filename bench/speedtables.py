"""Speed records rendered: Table 4 (cost model), Table B.1 (training cost), Figure 4."""
from __future__ import annotations

import json
from pathlib import Path

from . import paper as P
from .io import CorruptFileError
from .speedrender import protocol_lines
from .tables import MISSING, TIMES, Table, _csv_num, _ordered, fmt_num, with_rel

# ------------------------------------------------------------------ speed (Table 4, B.1, Figure 4)
def load_speed(speed_dir: Path) -> list[dict]:
    """Every speed record (JSON) under ``speed_dir/<device>/``, tagged with its device folder."""
    recs = []
    for p in sorted(Path(speed_dir).glob("*/**/*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CorruptFileError(f"corrupt speed record {p}: {e}") from e
        for item in d if isinstance(d, list) else [d]:
            if isinstance(item, dict):
                recs.append({**item, "_device_dir": p.relative_to(speed_dir).parts[0],
                             "_path": str(p)})
    return recs


def speed_tables(speed, paper, out: Path) -> tuple[list[Table], list[str], list[str]]:
    """Table 4 / Figure 4 (inference) and Table B.1 (training) per device, from the records of
    ``python -m bench.speed`` (``speed.json``, ``train.json``).

    Returns (tables, figure files, messages about what is missing)."""
    infer = [r for r in speed if r.get("kind") == "speed-inference" and r.get("rows")]
    train = [r for r in speed if r.get("kind") == "speed-train" and r.get("rows")]
    tables, figs, msgs = [], [], []
    for rec in infer:
        tables.append(table4(rec, paper))
        name = f"figure4_{rec['_device_dir']}.png"
        try:
            from .speedrender import render_figure4
            render_figure4(rec, out / name)
            figs.append(name)
        except Exception as e:  # the figure is optional; say why it is absent
            msgs.append(f"Figure 4 ({rec['_device_dir']}): not rendered ({type(e).__name__}: {e}).")
    tables += [table_b1(rec, paper) for rec in train]
    if not infer:
        msgs.append("Table 4 and Figure 4: no inference speed records under `results/speed/<device>/` "
                    "(run `python -m bench.speed`).")
    if not train:
        msgs.append("Table B.1: no training speed records under `results/speed/<device>/` "
                    "(run `python -m bench.speed --train`).")
    return tables, figs, msgs


def _secs(v) -> str:
    return MISSING if v is None else (f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.1f} s")


def protocol_notes(rec: dict, dev: str, md: str) -> list[str]:
    """How many interleaved rounds the medians come from, whether the run fell short of the
    protocol, and a warning for a loaded host."""
    notes = []
    if rec.get("repeats"):
        notes.append(f"Medians over {rec['repeats']} interleaved rounds (ratios to Vanilla taken "
                     f"per round); their spread is in `results/speed/{dev}/{md}`.")
    notes += [line.removeprefix("- ") for line in protocol_lines(rec)]
    if rec.get("loaded"):
        notes.append("WARNING: LOADED RUN: the host's load average exceeded its cores while "
                     "timing; these numbers are unreliable.")
    return notes


def table4(rec: dict, paper) -> Table:
    """Measured serving time of ``runs`` batches and its ratio to Vanilla, beside the paper's."""
    dev, rows = rec["_device_dir"], rec["rows"]
    bs = sorted({r["batch_size"] for r in rows})
    groups = list(dict.fromkeys((r["defense"], r.get("label", r["defense"]), r.get("style", ""))
                                for r in rows))
    if not any(g[0] == "mad" for g in groups):
        groups.append(("mad", "MAD", ""))     # the paper's one published row is never dropped
    p_s = paper.get("4", "resnet18", "CIFAR-10", "MAD", metric="infer_2000_runs_s_rtx3080")
    p_r = paper.get("4", "resnet18", "CIFAR-10", "MAD", metric="infer_ratio")
    out_rows, tidy = [], []
    for d, label, style in groups:
        pr, ps = (p_r, p_s) if d == "mad" else (None, None)
        line = [label, style or MISSING]
        for b in bs:
            r = next((x for x in rows if (x["defense"], x.get("label", x["defense"]),
                                          x.get("style", "")) == (d, label, style)
                      and x["batch_size"] == b), None)
            ratio = r.get("ratio_to_vanilla") if r else None
            star = "*" if r and r.get("extrapolated") else ""
            line.append(with_rel(_secs(r.get("total_s")) + star, fmt_num(ratio)) if r else MISSING)
            diff = ratio - pr if ratio is not None and pr is not None else None
            line.append(fmt_num(diff, signed=True) + (TIMES if diff is not None else ""))
            tidy.append({"device": dev, "defense": d, "label": label, "style": style,
                         "batch_size": b, "runs": rec.get("runs", ""),
                         "ours_total_s": _csv_num(r.get("total_s") if r else None),
                         "ours_ratio": _csv_num(ratio), "paper_total_s": _csv_num(ps),
                         "paper_ratio": _csv_num(pr), "diff_ratio": _csv_num(diff)})
        line.append(with_rel(_secs(ps), fmt_num(pr)))
        out_rows.append(line)
    header = ["Defense", "implementation"]
    for b in bs:
        header += [f"ours B={b}: {rec.get('runs', '?')} runs (ratio)", f"Δ ratio B={b}"]
    header.append("paper: 2,000 runs, RTX 3080 (ratio)")
    prov = rec.get("provenance", {})
    notes = [f"Device: {prov.get('device', dev)}; {rec.get('arch', '?')} on "
             f"{rec.get('input_shape', '?')} inputs, random weights; ratio = time / Vanilla "
             "measured in the same process; Δ = our ratio − the paper's.",
             "`*` = fewer runs timed (cell budget), total extrapolated from the mean.",
             "The paper publishes only MAD's time (471.7 s = 25.4× Vanilla/InI) and says the "
             "other defenses take 1.98×-25.4×; its batch size is not stated.",
             f"Cost model and primitives: `results/speed/{dev}/table4.md`."] + protocol_notes(rec, dev, "table4.md")
    return Table(f"table4_{dev}", f"Table 4 / Figure 4: served inference time ({dev})", header,
                 out_rows, tidy, notes)


def table_b1(rec: dict, paper) -> Table:
    dev, rows = rec["_device_dir"], {r["defense"]: r for r in rec["rows"]}
    names = _ordered(["vanilla", "mad", "am", "edm", "ini"],
                     set(rows) | {"vanilla", "am", "edm", "ini"})
    out_rows, tidy = [], []
    for d in names:
        r = rows.get(d)
        prow = P.TRAIN_ROWS.get(d)
        ps = paper.get("B.1", "resnet18", "CIFAR-10", prow, metric="train_10ep_s_rtx3080")
        pr = paper.get("B.1", "resnet18", "CIFAR-10", prow, metric="train_ratio")
        ratio = r.get("ratio_to_vanilla") if r else None
        diff = ratio - pr if ratio is not None and pr is not None else None
        out_rows.append([r.get("label", d) if r else P.defense_label(d),
                         with_rel(_secs(r.get("seconds")) if r else MISSING, fmt_num(ratio)),
                         with_rel(_secs(ps), fmt_num(pr)),
                         fmt_num(diff, signed=True) + (TIMES if diff is not None else "")])
        tidy.append({"device": dev, "defense": d, "epochs": rec.get("epochs", ""),
                     "ours_s": _csv_num(r.get("seconds") if r else None),
                     "ours_ratio": _csv_num(ratio), "paper_row": prow or "",
                     "paper_s": _csv_num(ps), "paper_ratio": _csv_num(pr),
                     "diff_ratio": _csv_num(diff)})
    prov = rec.get("provenance", {})
    header = ["Defense", f"ours: {rec.get('epochs', '?')} epoch(s) (ratio)",
              "paper: 10 epochs, RTX 3080 (ratio)", "Δ ratio"]
    notes = [f"Device: {prov.get('device', dev)}; {rec.get('arch', '?')}, "
             f"{rec.get('train_size', '?')} random CIFAR-10-shaped images per set; "
             "ratio = time / Vanilla; Δ = our ratio − the paper's.",
             "MAD trains nothing beyond Vanilla (the paper's row is \"ND/MAD\")."] + protocol_notes(rec, dev, "tableB1.md")
    return Table(f"tableB1_{dev}", f"Table B.1: training time ({dev})", header, out_rows, tidy,
                 notes)
