"""Figures from result records: KnockoffNets budget curves and Figure 3 (InI's PCGrad cosines)."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from . import paper as P
from .tables import LABELS, MISSING, Stat, Table, _csv_num, fmt_num, fmt_stat

# ------------------------------------------------------------------ budget curves
def curve_points(records) -> dict:
    """(arch, dataset, defense, label) -> {budget: [clone acc per seed]} for KnockoffNets cells
    that recorded a curve; the cell's own clone accuracy is the point at its full budget."""
    pts = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.kind != "cell" or r.attack != "knockoff" or r.status != "ok" or not r.curve:
            continue
        key = (r.arch, r.dataset, r.defense, r.label)
        for b, acc in r.curve.items():
            pts[key][int(b)].append(acc)
        full = r.budget or r.queries_used
        if full and r.clone_acc is not None and int(full) not in r.curve:
            pts[key][int(full)].append(r.clone_acc)
    return pts


def budget_curves(records, out: Path) -> tuple[Table | None, list[str]]:
    pts = curve_points(records)
    if not pts:
        return None, []
    budgets = sorted({b for v in pts.values() for b in v})
    keys = sorted(pts, key=lambda k: (k[0], list(P.DATASETS).index(k[1]) if k[1] in P.DATASETS
                                      else 99, P.defense_rank(k[2]), LABELS.index(k[3])
                                      if k[3] in LABELS else 9))
    rows, tidy = [], []
    for arch, ds, d, lb in keys:
        stats = {b: Stat.of(pts[(arch, ds, d, lb)][b]) for b in budgets if b in pts[(arch, ds, d, lb)]}
        rows.append([P.arch_label(arch), P.dataset_label(ds), P.defense_label(d), lb]
                    + [fmt_stat(stats.get(b)) for b in budgets])
        for b, st in stats.items():
            tidy.append({"arch": arch, "dataset": ds, "defense": d, "label": lb, "budget": b,
                         "clone_acc": _csv_num(st.mean), "std": _csv_num(st.std), "n_seeds": st.n})
    t = Table("budget_curves", "KnockoffNets budget curves: clone accuracy vs queries (extension)",
              ["Arch", "Dataset", "Defense", "label"] + [f"{b:,}" for b in budgets], rows, tidy,
              ["Not in the paper. Each clone is trained from scratch on the first N answers of "
               "one attack run; the largest budget is the cell's own clone.",
               f"{MISSING} = that budget was not evaluated for that cell."])
    return t, _plot_curves(pts, keys, out)


def _save(fig, out: Path, name: str, title: str, dpi: int = 120, **title_kw) -> str:
    """Title, tight layout, write the PNG, free the figure; returns the file name."""
    plt = _plt()
    fig.suptitle(title, **title_kw)
    fig.tight_layout()
    fig.savefig(out / name, dpi=dpi)
    plt.close(fig)
    return name


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_curves(pts, keys, out: Path) -> list[str]:
    plt = _plt()
    files = []
    for arch, ds in dict.fromkeys((k[0], k[1]) for k in keys):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
        defenses = list(dict.fromkeys(k[2] for k in keys if k[:2] == (arch, ds)))
        colors = plt.get_cmap("tab20").colors   # one colour per defense, more than 10 of them
        style = {d: {"color": colors[(2 * i) % 20 + (i >= 10)],
                     "linestyle": "--" if d in P.ABLATION_ONLY else "-"}
                 for i, d in enumerate(defenses)}
        for ax, lb in zip(axes, LABELS):
            for k in keys:
                if k[:2] == (arch, ds) and k[3] == lb:
                    bs = sorted(pts[k])
                    ax.plot(bs, [statistics.fmean(pts[k][b]) for b in bs], marker="o",
                            label=P.defense_label(k[2]), **style[k[2]])
            ax.set(title=f"{lb}-label", xlabel="queries", ylabel="clone accuracy (%)")
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, "no curve recorded", ha="center", transform=ax.transAxes)
        handles = {ln.get_label(): ln for ax in axes for ln in ax.lines}
        if handles:   # one legend beside both panels, clear of the lines
            fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(0.86, 0.5),
                       fontsize=8, frameon=False)
        fig.suptitle(f"KnockoffNets budget curve: {P.dataset_label(ds)}, {P.arch_label(arch)}")
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        name = f"budget_curve_{arch}_{ds}.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)
    return files


# ------------------------------------------------------------------ Figure 3 (PCGrad cosines)
def find_cosines(fit_log) -> dict | None:
    """The ``pcgrad_cosines`` dict of a victim's fit log, at the top or one unit down."""
    if not isinstance(fit_log, dict):
        return None
    if isinstance(fit_log.get("pcgrad_cosines"), dict):
        return fit_log["pcgrad_cosines"]
    for v in fit_log.values():
        if isinstance(v, dict) and isinstance(v.get("pcgrad_cosines"), dict):
            return v["pcgrad_cosines"]
    return None


def figure3(records, out: Path) -> tuple[Table | None, list[str]]:
    found = [(r, c) for r in records if r.kind == "victim"
             for c in [find_cosines(r.extra.get("fit_log"))] if c]
    if not found:
        return None, []
    # ini, ini+mad and ini+am serve one trained InI: draw its log once, under the plainest name
    unique = {}
    for r, c in sorted(found, key=lambda x: (len(x[0].defense), x[0].defense)):
        unique.setdefault((r.arch, r.dataset, r.seed, json.dumps(c, sort_keys=True)), (r, c))
    found = list(unique.values())
    plt = _plt()
    rows, tidy, files = [], [], []
    for r, cos in sorted(found, key=lambda x: (x[0].arch, x[0].dataset, x[0].defense, x[0].seed)):
        pairs = sorted(cos)
        fig, axes = plt.subplots(1, len(pairs), figsize=(max(3.2 * len(pairs), 8), 3.4),
                                 squeeze=False)
        for ax, pair in zip(axes[0], pairs):
            before, after = cos[pair].get("before", []), cos[pair].get("after", [])
            bins = [i / 10 for i in range(-10, 11)]
            ax.hist(before, bins=bins, alpha=0.7, color="tab:blue", label="before PCGrad")
            ax.hist(after, bins=bins, alpha=0.7, color="tab:orange", label="after PCGrad")
            ax.set(title=pair.replace("|", " vs "), xlabel="cosine similarity")
            row = [P.dataset_label(r.dataset), P.defense_label(r.defense), r.seed,
                   pair.replace("|", " vs ")]
            for xs in (before, after):
                row += [len(xs), fmt_num(statistics.fmean(xs) if xs else None, 3),
                        fmt_num(100 * sum(x < 0 for x in xs) / len(xs) if xs else None, 1)]
            rows.append(row)
            tidy.append({"arch": r.arch, "dataset": r.dataset, "defense": r.defense, "seed": r.seed,
                         "pair": pair, "n_before": len(before),
                         "mean_before": _csv_num(statistics.fmean(before) if before else None),
                         "neg_before_pct": _csv_num(100 * sum(x < 0 for x in before) / len(before)
                                                    if before else None),
                         "n_after": len(after),
                         "mean_after": _csv_num(statistics.fmean(after) if after else None),
                         "neg_after_pct": _csv_num(100 * sum(x < 0 for x in after) / len(after)
                                                   if after else None)})
        axes[0][0].set_ylabel("steps")
        axes[0][-1].legend(fontsize=8)
        files.append(_save(fig, out, f"figure3_{r.arch}_{r.dataset}_{r.defense}_s{r.seed}.png",
                           f"Figure 3: objective-gradient cosines, {P.defense_label(r.defense)} on "
                           f"{P.dataset_label(r.dataset)} ({P.arch_label(r.arch)}, seed {r.seed})"))
    t = Table("figure3", "Figure 3: cosine similarity of objective gradients before/after PCGrad",
              ["Dataset", "Defense", "seed", "pair", "n before", "mean before", "% < 0 before",
               "n after", "mean after", "% < 0 after"], rows, tidy,
              ["The paper publishes Figure 3 as histograms only (no numbers): conflicts "
               "(negative cosines) before the gradient surgery, fewer after it."])
    return t, files


# ------------------------------------------------------------------ training curves
def loss_curves(records) -> dict:
    """(arch, dataset, unit) -> {term: [per-epoch means, one list per seed]} from the victims'
    fit logs; a unit shared by several victims (InI under ini, ini+mad, ini+am) counts once."""
    seen, out = set(), defaultdict(lambda: defaultdict(list))
    for r in records:
        logs = r.extra.get("fit_log") if r.kind == "victim" else None
        for unit, log in (logs or {}).items():
            curves = log.get("epoch_losses") if isinstance(log, dict) else None
            if not isinstance(curves, dict) or (r.arch, r.dataset, unit, r.seed) in seen:
                continue
            seen.add((r.arch, r.dataset, unit, r.seed))
            for term, ys in curves.items():
                if ys:
                    out[(r.arch, r.dataset, unit)][term].append([float(y) for y in ys])
    return out


def last_epoch_change(ys: list[float]) -> float | None:
    """|L_E - L_{E-1}| / |L_1 - L_E|: how much of the way the last epoch still moved (0: flat)."""
    if len(ys) < 2:
        return None
    total = abs(ys[0] - ys[-1])
    return abs(ys[-1] - ys[-2]) / total if total > 1e-12 else 0.0


def training_curves(records, out: Path) -> tuple[Table | None, list[str]]:
    """Each trained unit's objectives per epoch (mean over seeds, min-max band), one PNG per
    data set, and a table of first/last values and how much the last epoch still moved."""
    curves = loss_curves(records)
    if not curves:
        return None, []
    plt = _plt()
    rows, tidy, files = [], [], []
    for arch, ds in sorted({(a, d) for a, d, _ in curves}):
        units = sorted(u for a, d, u in curves if (a, d) == (arch, ds))
        ncols = min(4, len(units))
        nrows = -(-len(units) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
        for ax in axes.flat[len(units):]:
            ax.axis("off")
        for ax, unit in zip(axes.flat, units):
            for term, runs in sorted(curves[(arch, ds, unit)].items()):
                n = min(len(y) for y in runs)
                mean = [statistics.fmean(y[e] for y in runs) for e in range(n)]
                xs = list(range(1, n + 1))
                ax.plot(xs, mean, marker="o", ms=3, label=term)
                if len(runs) > 1:
                    ax.fill_between(xs, [min(y[e] for y in runs) for e in range(n)],
                                    [max(y[e] for y in runs) for e in range(n)], alpha=0.2)
                change = last_epoch_change(mean)
                rows.append([P.dataset_label(ds), unit, term, len(runs), n, fmt_num(mean[0], 4),
                             fmt_num(mean[-1], 4), fmt_num(None if change is None else 100 * change, 1)])
                tidy.append({"arch": arch, "dataset": ds, "unit": unit, "term": term, "seeds": len(runs),
                             "epochs": n, "first": _csv_num(mean[0]), "last": _csv_num(mean[-1]),
                             "last_epoch_change_pct": _csv_num(None if change is None else 100 * change)})
            ax.set(title=unit, xlabel="epoch")
            ax.legend(fontsize=7)
        for row in axes:
            row[0].set_ylabel("epoch mean (as weighted)")
        files.append(_save(fig, out, f"training_curves_{arch}_{ds}.png",
                           f"Training objectives per epoch, {P.dataset_label(ds)} ({P.arch_label(arch)})", 110))
    t = Table("training_curves", "Training objectives per epoch (have they flattened?)",
              ["Dataset", "unit", "objective", "seeds", "epochs", "first epoch", "last epoch",
               "last epoch's move, % of the total"], rows, tidy,
              ["Mean over seeds of each objective's epoch mean, as the defense weights it in training "
               "(InI: ben, iso, ind, gradnorm; EDM: ce = sum over members, div; AM: ce, oe for the "
               "defender, mis for the misinformation model). The last column is |L_E - L_E-1| / "
               "|L_1 - L_E|: near 0 means the objective had flattened."])
    return t, files


# ------------------------------------------------------------------ Figure D.1 (t-SNE)
def figure_d1(records, out: Path) -> list[str]:
    """Per data set: rows Vanilla / InI (first seed that has an embedding), columns ID / OOD."""
    found = {}
    for r in sorted(records, key=lambda r: (r.seed, r.defense)):
        t = r.extra.get("tsne") if r.kind == "victim" else None
        if t and "id" in t:
            found.setdefault((r.arch, r.dataset), {}).setdefault(r.defense, (r, t))
    files = []
    plt = _plt()
    for (arch, ds), by_def in sorted(found.items()):
        defs = sorted(by_def, key=P.defense_rank)
        fig, axes = plt.subplots(len(defs), 2, figsize=(7, 3.3 * len(defs)), squeeze=False)
        for row, d in zip(axes, defs):
            r, t = by_def[d]
            for ax, part, name in ((row[0], "id", t["id_set"]), (row[1], "ood", t["ood_set"])):
                pts = t[part]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="tab10",
                           vmin=0, vmax=9, s=3)
                ax.set(title=f"{P.defense_label(d)}: {name} ({len(pts)}, seed {r.seed})", xticks=[], yticks=[])
        files.append(_save(fig, out, f"figureD1_{arch}_{ds}.png",
                           f"Figure D.1: t-SNE of penultimate features, colour = predicted class "
                           f"({P.dataset_label(ds)}, {P.arch_label(arch)})", 110, fontsize=10))
    return files
