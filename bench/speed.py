"""``python -m bench.speed``: served-inference speed of every defense (paper Figure 4), the
Table 4 cost model (predicted vs measured), and training cost (Table B.1, ``--train``).

Weights are randomly initialized (nothing is trained for the inference test): serving time
depends on the architectures and the serving code, not on trained values. Both the
paper-style implementations (MAD one query at a time, EDM running all members) and ours
(batched MAD, routed EDM) are timed, picked through the defenses' own parameters.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import io
from bench.data import ImageSet
from bench.registry import DEFENSES, MODELS, UnknownNameError
from bench.timing import Timing, time_once, time_runs
from bench.train import Context, TrainConfig, seed_everything

NUM_CLASSES, SHAPE = 10, (3, 32, 32)  # CIFAR-10, as in the paper
WEIGHTS_NOTE = ("weights: random initialization (untrained); serving time depends on the "
                "architectures and serving code, not on trained values")

# Published numbers (shared/spec/paper_reference.csv; RTX 3080, 2,000 runs, batch size unpublished).
PAPER_FIG4_RATIO = {"vanilla": 1.0, "ini": 1.0, "mad": 25.4}
PAPER_FIG4_MAD_S = 471.7
PAPER_FIG4_FASTEST_OTHER = 1.98   # "other defenses 1.98x-25.4x"; not attributed in the text
PAPER_B1 = {"vanilla": (155.7, 1.00), "am": (551.1, 3.54), "edm": (1353.5, 8.69), "ini": (1892.1, 12.15)}
TRAIN_NOTE = "weights: random initialization, trained from scratch on random data (timing only)"
TRAIN_DEFENSES = ("vanilla", "am", "edm", "ini")

# Parameter values that select the paper's serving code or ours.
VARIANT_PARAMS = {
    "impl": {"reference": "paper-style", "batched": "ours"},   # MAD
    "serve": {"batched": "paper-style", "routed": "ours"},     # EDM
}


class SpeedError(Exception):
    """A bad command line (unknown name, missing device): one line, exit code 2."""


# ------------------------------------------------------------------ defenses and variants
@dataclass(frozen=True)
class Variant:
    name: str                  # registry name, e.g. "mad" or "ini+mad"
    params: tuple = ()         # ((key, value),) selecting the implementation
    style: str = ""            # "paper-style" | "ours" | ""

    @property
    def kind(self) -> str:
        """The serving part that decides the cost: the post-processor of a composition."""
        return self.name.rsplit("+", 1)[-1].lower()

    @property
    def impl(self) -> str:
        return str(self.params[0][1]) if self.params else ""

    def make(self):
        from defenses import get_defense
        return get_defense(self.name, **dict(self.params))

    def label(self, display: str) -> str:
        return f"{display} [{self.impl}, {self.style}]" if self.params else display


def variants(name: str) -> list[Variant]:
    """One Variant per implementation a defense offers (paper-style and ours), else one."""
    cls = DEFENSES.lookup(name.rsplit("+", 1)[-1])
    for key, styles in VARIANT_PARAMS.items():
        if key in getattr(cls, "defaults", {}):
            return [Variant(name, ((key, value),), style) for value, style in styles.items()]
    return [Variant(name)]


def default_defenses() -> list[str]:
    """All registered defenses, less bases that exist only to serve a post-processor (AM's)."""
    import defenses  # noqa: F401  registers every defense module
    from defenses.base import list_defenses, list_postprocessors
    bases = {getattr(DEFENSES.lookup(p), "default_base", None) for p in list_postprocessors()}
    bases.discard("vanilla")
    return [n for n in list_defenses() if n not in bases]


def default_train_defenses() -> list[str]:
    import defenses  # noqa: F401  registers every defense module
    return [n for n in TRAIN_DEFENSES if n in DEFENSES]


def parse_defenses(spec: str | None, default: list[str]) -> list[str]:
    """Validated names, Vanilla first (it is every ratio's reference)."""
    import defenses  # noqa: F401  registers every defense module
    names = [s.strip().lower() for s in spec.split(",") if s.strip()] if spec else list(default)
    for n in names:
        try:
            for v in variants(n):
                v.make()
        except (UnknownNameError, ValueError) as e:
            raise SpeedError(str(e)) from None
    return ["vanilla"] + [n for n in dict.fromkeys(names) if n != "vanilla"]


# ------------------------------------------------------------------ context and device
def random_set(n: int, name: str, seed: int, augment: bool = False) -> ImageSet:
    """Random CIFAR-10-shaped images and labels (no real data needed for timing)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return ImageSet(name, "random", x, y, NUM_CLASSES, (0.0,) * 3, (1.0,) * 3, augment)


def make_context(arch: str, device: str, n: int = 256, epochs: int = 1, seed: int = 0,
                 progress: bool = False) -> Context:
    return Context(arch=arch, num_classes=NUM_CLASSES, in_channels=SHAPE[0], input_size=SHAPE[1],
                   id_train=random_set(n, "random-id", seed, augment=True),
                   ood_train=random_set(n, "random-ood", seed + 1),
                   hash_set=random_set(n, "random-hash", seed + 2),
                   train=TrainConfig(epochs=epochs, batch_size=128), device=device, seed=seed,
                   progress=progress)


def resolve_device(gpu: int | None, device: str | None) -> str:
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu is not None:
        if gpu < 0 or gpu >= n_gpu:
            have = "no CUDA device is available" if n_gpu == 0 else f"only {n_gpu} CUDA device(s) here"
            raise SpeedError(f"--gpu {gpu} asked for, but {have}; use --device cpu")
        return f"cuda:{gpu}"
    device = device or "cpu"
    if device.startswith("cuda") and n_gpu == 0:
        raise SpeedError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return device


def build_served(v: Variant, ctx: Context):
    """A defense ready to serve: built on ctx with random weights, eval mode, on the device."""
    d = v.make()
    d.build(ctx)
    return d.to(ctx.device).eval()


# ------------------------------------------------------------------ Table 4 cost model
MAD_KINDS = {"mad": "S", "mad-argmax": "S_argmax"}  # kind -> its search primitive
PRIM_KEYS = ("M_f", "M_h", "M_f1", "M_b", "M_b_full", "S", "S_argmax")


def predict(kind: str, impl: str, prim: dict, B: int, C: int, n: int = 5) -> list[tuple]:
    """Predicted seconds per batch of B queries, as (seconds or None, formula) rows.

    prim (seconds): M_f, M_h per batch of B; M_f1 a forward of one query; M_b one backward
    of one query's class log-probability (last layer, as defenses/mad.py's reference does it),
    M_b_full the same w.r.t. every parameter (the original MAD code's max_grad_layer='all'
    option; its default, like ours, takes the last layer only);
    S / S_argmax MAD's search per query. The first row is the paper's formula; for MAD's
    reference extra rows show what the formula leaves out ('ours' formulas are marked).
    """
    Mf, Mh, Mb = prim.get("M_f"), prim.get("M_h"), prim.get("M_b")
    if kind in ("vanilla", "ini"):
        return [(Mf, "M_f")]
    if kind == "am":
        return [(2 * Mf, "2M_f")]
    if kind == "dcp":
        return [(Mf, "M_f (ours; DCP is not in the paper)")]
    if kind in MAD_KINDS:
        S = prim.get(MAD_KINDS[kind])
        if impl == "batched":
            return [(2 * Mf, "2M_f (ours: victim + surrogate forward, closed-form search)")]
        if Mb is None or S is None:
            return [(None, "M_f + B(C·M_b + S)")]
        rows = [(Mf + B * (C * Mb + S), "M_f + B(C·M_b + S)")]
        if prim.get("M_f1") is not None:
            rows.append((Mf + B * (prim["M_f1"] + C * Mb + S),
                         "M_f + B(M_f1 + C·M_b + S) (ours: + one surrogate forward per query)"))
        if prim.get("M_b_full") is not None:
            rows.append((Mf + B * (C * prim["M_b_full"] + S),
                         "M_f + B(C·M_b,full + S) (original code's max_grad_layer='all' option; default: last layer)"))
        return rows
    if kind == "edm":
        if Mh is None:
            return [(None, "")]
        if impl == "routed":
            return [(Mf + Mh, "M_f + M_h")]
        return [(n * Mf + Mh, "nM_f + M_h")]
    return [(None, "")]


def measure_forward(ctx: Context, arch: str | None, B: int, runs: int, warmup: int,
                    progress: bool = False) -> float:
    """Seconds for one no-grad forward of a random batch of B (M_f, M_h)."""
    model = ctx.new_model(arch).eval()
    x = torch.randn(B, *SHAPE, device=ctx.device)
    with torch.no_grad():
        return time_runs(lambda: model(x), runs, warmup, ctx.device,
                         f"{arch or ctx.arch} forward B={B}", progress).mean_s


def measure_backward(ctx: Context, runs: int, warmup: int, last_layer: bool) -> float:
    """M_b: one backward pass of one query's log-probability of one class (cycling over
    classes, graph retained as MAD does C times per query), w.r.t. the last linear layer
    or every parameter."""
    model = ctx.new_model().eval()
    params = [model.fc.weight, model.fc.bias] if last_layer else list(model.parameters())
    logp = F.log_softmax(model(torch.randn(1, *SHAPE, device=ctx.device)), dim=1)
    k = iter(range(10 ** 9))
    fn = lambda: torch.autograd.grad(logp[0, next(k) % NUM_CLASSES], params, retain_graph=True)  # noqa: E731
    return time_runs(fn, runs, warmup, ctx.device, progress=False).mean_s


def measure_search(ctx: Context, runs: int, eps: float, argmax: bool) -> float | None:
    """S: MAD's search for one query on a random last-layer Jacobian (None without MAD)."""
    try:
        from defenses.mad import search_reference
    except ImportError:
        return None
    model = ctx.new_model()
    dim = model.fc.weight.numel() + model.fc.bias.numel()
    g = torch.Generator().manual_seed(ctx.seed)
    G = torch.randn(NUM_CLASSES, dim, generator=g).to(ctx.device)
    y = torch.softmax(torch.randn(NUM_CLASSES, generator=g), 0).to(ctx.device)
    return time_runs(lambda: search_reference(G, y, eps, argmax=argmax), runs, 1, ctx.device,
                     progress=False).mean_s


def measure_primitives(ctx: Context, batch_sizes, runs: int, warmup: int, eps: float,
                       kinds: set, progress: bool) -> dict:
    """Every primitive the cost model needs, per batch size (per-query ones repeated)."""
    per_query = {"M_f1": measure_forward(ctx, None, 1, runs, warmup),
                 "M_b": measure_backward(ctx, max(NUM_CLASSES, runs), warmup, last_layer=True),
                 "M_b_full": measure_backward(ctx, max(NUM_CLASSES, min(runs, 20)), 1, last_layer=False)}
    for kind, key in MAD_KINDS.items():
        if kind in kinds:
            per_query[key] = measure_search(ctx, runs, eps, argmax=kind == "mad-argmax")
    return {B: {"M_f": measure_forward(ctx, None, B, runs, warmup, progress),
                "M_h": measure_forward(ctx, "hashnet", B, runs, warmup, progress), **per_query}
            for B in batch_sizes}


# ------------------------------------------------------------------ the Figure 4 protocol
@dataclass
class Cell:
    name: str
    label: str
    style: str
    impl: str
    kind: str
    params: dict
    batch_size: int
    runs_requested: int
    timing: Timing
    n_members: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def per_batch_s(self) -> float:
        return self.timing.mean_s

    @property
    def total_s(self) -> float:
        """Seconds for the requested runs (extrapolated from the mean if fewer were timed)."""
        return self.timing.mean_s * self.runs_requested


def time_served(d, B: int, runs: int, warmup: int, device: str, desc: str, progress: bool,
                cell_budget: float = 0.0) -> Timing:
    """Time ``d(x)`` on one random batch; with a cell budget, fewer runs for slow defenses."""
    x = torch.randn(B, *SHAPE, device=device)
    first = time_once(lambda: d(x), device)  # also the first warm-up call
    if cell_budget > 0:
        runs = max(1, min(runs, int(cell_budget // max(first, 1e-9))))
        warmup = min(warmup, int(cell_budget / 4 // max(first, 1e-9)))
    return time_runs(lambda: d(x), runs, max(warmup - 1, 0), device, desc, progress)


def routing(d, B: int, device: str) -> dict:
    """EDM: the share of queries each member answers (random weights route unlike trained ones)."""
    if not hasattr(d, "member_share"):
        return {}
    return {"member_share": d.member_share(torch.randn(max(B, 256), *SHAPE, device=device))}


def time_even_routing(d, v: Variant, label: str, B: int, args, warmup: int, device: str) -> Cell:
    """Routed EDM again with queries spread evenly over the members (random weights send
    almost every query to one member; a trained hash net spreads them)."""
    n = d.params["n_members"]
    d.route = lambda x: torch.arange(len(x), device=x.device) % n  # instrumented, timing only
    label = f"{label[:-1]}, even routing]" if label.endswith("]") else f"{label} (even routing)"
    t = time_served(d, B, args.runs, warmup, device, f"{label} B={B}", not args.quiet, args.cell_budget)
    return Cell(v.name, label, v.style, v.impl, v.kind, dict(v.params), B, args.runs, t, n,
                {"member_share": [round(1 / n, 4)] * n, "routing": "forced even (instrumented)"})


def run_inference(args, device: str, names: list[str]) -> dict:
    ctx = make_context(args.arch, device, n=256, seed=args.seed)
    cells = []
    warmup = args.warmup if args.warmup is not None else (10 if device.startswith("cuda") else 2)
    prim_runs = max(3, min(args.runs, 50))
    eps = 0.5
    for B in args.batch_sizes:
        for name in names:
            for v in variants(name):
                seed_everything(args.seed)
                d = build_served(v, ctx)
                label = v.label(d.display)
                t = time_served(d, B, args.runs, warmup, device, f"{label} B={B}",
                                not args.quiet, args.cell_budget)
                cells.append(Cell(v.name, label, v.style, v.impl, v.kind, dict(v.params), B,
                                  args.runs, t, d.params.get("n_members"), routing(d, B, device)))
                if d.params.get("serve") == "routed" and hasattr(d, "route"):
                    cells.append(time_even_routing(d, v, label, B, args, warmup, device))
                if v.kind in MAD_KINDS:
                    eps = d.params.get("eps", eps)
                del d
    seed_everything(args.seed)
    kinds = {c.kind for c in cells}
    prims = measure_primitives(ctx, args.batch_sizes, prim_runs, warmup, eps, kinds, not args.quiet)
    return {"cells": cells, "primitives": prims, "warmup": warmup, "prim_runs": prim_runs}


def cell_rows(result: dict) -> list[dict]:
    """JSON rows: each timing with its ratio to Vanilla and the cost model's prediction."""
    rows = []
    for c in result["cells"]:
        ref = next(x for x in result["cells"] if x.name == "vanilla" and x.batch_size == c.batch_size)
        preds = predict(c.kind, c.impl, result["primitives"][c.batch_size], c.batch_size,
                        NUM_CLASSES, c.n_members or 5)
        rows.append({"defense": c.name, "label": c.label, "style": c.style, "impl": c.impl,
                     "params": c.params, "batch_size": c.batch_size,
                     "runs_requested": c.runs_requested, "runs_timed": c.timing.runs,
                     "extrapolated": c.timing.runs < c.runs_requested,
                     "total_s": c.total_s, "per_batch_s": c.per_batch_s,
                     "ratio_to_vanilla": c.per_batch_s / ref.per_batch_s,
                     "predictions": [{"formula": f, "predicted_per_batch_s": t,
                                      "measured_over_predicted": c.per_batch_s / t if t else None}
                                     for t, f in preds],
                     "timing": c.timing.summary(), **c.extra,
                     "per_run_s": [round(t, 7) for t in c.timing.per_run_s]})
    return rows


# ------------------------------------------------------------------ rendering
def _fmt_s(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def header(title: str, rec: dict, note: str = WEIGHTS_NOTE) -> list[str]:
    p = rec["provenance"]
    return [f"# {title}", "",
            f"- device: {p['device']}; torch {p['versions']['torch']}, CUDA {p['versions']['cuda']}; "
            f"commit {p['git_commit']}",
            f"- {note}",
            f"- command: `{rec['command']}`; wall time {rec['wall_time_s']:.0f} s; "
            f"host load average at start {rec.get('load_avg', '?')} (other processes share the machine)", ""]


def render_table4(rec: dict) -> str:
    rows, Bs = rec["rows"], rec["batch_sizes"]
    lines = header(f"Inference speed (Figure 4) and the Table 4 cost model: {rec['arch']}, "
                   f"input {rec['input_shape']}, {NUM_CLASSES} classes", rec)
    lines += [f"Random input batches; each cell serves one batch {rec['runs']} times after "
              f"{rec['warmup']} warm-up call(s). Total seconds for {rec['runs']} runs and the "
              "ratio to Vanilla measured in the same process. Cells marked * timed fewer runs "
              "(cell budget) and extrapolate their mean.", "",
              "## Measured: total time for the runs (ratio to Vanilla)", "",
              "| defense | implementation | " + " | ".join(f"B={b}" for b in Bs) + " |",
              "|---|---|" + "---:|" * len(Bs)]
    for label, style in dict.fromkeys((r["label"], r["style"]) for r in rows):
        cells = []
        for b in Bs:
            r = next(x for x in rows if x["label"] == label and x["batch_size"] == b)
            star = "*" if r["extrapolated"] else ""
            cells.append(f"{_fmt_s(r['total_s'])}{star} ({r['ratio_to_vanilla']:.2f}x)")
        lines.append(f"| {label} | {style or '–'} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost-model primitives (measured separately)", "",
              "M_f: one forward of a batch of B (victim architecture); M_h: EDM's hash net forward "
              "of a batch of B; per query: M_f1 one forward of a single query, M_b one backward of "
              "one class's log-probability w.r.t. the last layer (as `defenses/mad.py`'s reference "
              "does, C per query), M_b,full the same w.r.t. every parameter (the original "
              "MAD code's `max_grad_layer='all'` option; its default, like ours, takes the last layer only), S / S_argmax MAD's search (`search_reference`) on a "
              "random Jacobian.", "",
              "| B | " + " | ".join(PRIM_KEYS) + " |", "|---:|" + "---:|" * len(PRIM_KEYS)]
    for b in Bs:
        p = rec["primitives"][str(b)]
        lines.append(f"| {b} | " + " | ".join(_fmt_s(p.get(k)) for k in PRIM_KEYS) + " |")
    lines += ["", "## Table 4: predicted vs measured time per batch", "",
              "| defense | formula | B | predicted | measured | measured / predicted |",
              "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        for q in r["predictions"]:
            ratio = f"{q['measured_over_predicted']:.2f}" if q["measured_over_predicted"] else "–"
            lines.append(f"| {r['label']} | {q['formula'] or '–'} | {r['batch_size']} | "
                         f"{_fmt_s(q['predicted_per_batch_s'])} | {_fmt_s(r['per_batch_s'])} | {ratio} |")
    shares = {r["label"]: r["member_share"] for r in rows if r.get("member_share")}
    for label, share in shares.items():
        lines += ["", f"{label}: share of random queries routed to each member with these random "
                  f"weights: {share} (trained hash nets spread queries differently, so routed "
                  "serving may run more members per batch than here)."]
    lines += ["", f"Published (paper, RTX 3080, 2,000 runs, batch size not stated): MAD "
              f"{PAPER_FIG4_MAD_S} s = {PAPER_FIG4_RATIO['mad']}x Vanilla/InI; the other defenses "
              f"{PAPER_FIG4_FASTEST_OTHER}x-{PAPER_FIG4_RATIO['mad']}x.", ""]
    return "\n".join(lines)


def render_figure4(rec: dict, path: Path) -> None:
    """Bars of the ratio to Vanilla per defense, one panel per batch size, paper bars beside."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, Bs = rec["rows"], rec["batch_sizes"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    colours = {"paper-style": "#d95f02", "ours": "#1b9e77", "": "#7570b3"}
    panel_w = max(3.2, 0.42 * len(labels))
    fig, axes = plt.subplots(1, len(Bs), figsize=(1.2 + panel_w * len(Bs), 5.8), sharey=True, squeeze=False)
    top = max(r["ratio_to_vanilla"] for r in rows + [{"ratio_to_vanilla": PAPER_FIG4_RATIO["mad"]}])
    for ax, b in zip(axes[0], Bs):
        for i, label in enumerate(labels):
            r = next(x for x in rows if x["label"] == label and x["batch_size"] == b)
            y = r["ratio_to_vanilla"]
            ax.bar(i - 0.2, y, 0.4, color=colours.get(r["style"], "#7570b3"))
            ax.text(i - 0.2, y * 1.08, f"{y:.2f}x", ha="center", va="bottom", fontsize=8, rotation=90)
            paper = PAPER_FIG4_RATIO.get(r["defense"].rsplit("+", 1)[-1]) if r["style"] != "ours" else None
            if paper is not None:
                ax.bar(i + 0.2, paper, 0.4, color="#cccccc", hatch="//", edgecolor="#666666")
                ax.text(i + 0.2, paper * 1.08, f"{paper:g}x", ha="center", va="bottom", fontsize=8,
                        rotation=90, color="#444444")
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 6)
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([lab.replace(" [", "\n[") for lab in labels], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"batch size {b}")
    axes[0][0].set_ylabel("served time / Vanilla (log scale)")
    from matplotlib.patches import Patch
    handles = [Patch(color=colours["paper-style"], label="ours, paper-style implementation"),
               Patch(color=colours["ours"], label="ours, our implementation"),
               Patch(color=colours[""], label="ours (single implementation)"),
               Patch(facecolor="#cccccc", hatch="//", edgecolor="#666666",
                     label=f"paper (RTX 3080); others {PAPER_FIG4_FASTEST_OTHER}x-25.4x")]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False)
    p = rec["provenance"]
    fig.suptitle(f"Figure 4 protocol: {rec['arch']}, {rec['runs']} runs/cell, {p['device']}; "
                 "random weights", y=0.94, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def render_tableB1(rec: dict) -> str:
    lines = header(f"Training cost (Table B.1): {rec['arch']}, {rec['epochs']} epoch(s) on "
                   f"{rec['train_size']} random CIFAR-10-shaped images", rec, TRAIN_NOTE)
    lines += ["Each defense is built with random weights and every trained unit fitted "
              "(`for u in d.units(): u.fit(ctx)`); OOD and hash sets are random images of the same size.",
              "", "| defense | seconds | ratio to Vanilla | paper: 10 epochs, RTX 3080 (ratio) |",
              "|---|---:|---:|---:|"]
    for r in rec["rows"]:
        paper = PAPER_B1.get(r["defense"])
        ref = f"{paper[0]} s ({paper[1]:.2f}x)" if paper else "–"
        lines.append(f"| {r['label']} | {r['seconds']:.1f} | {r['ratio_to_vanilla']:.2f}x | {ref} |")
    return "\n".join(lines + [""])


# ------------------------------------------------------------------ Table B.1
def run_training(args, device: str, names: list[str]) -> list[dict]:
    epochs = args.epochs or (10 if device.startswith("cuda") else 1)
    args.epochs = epochs
    ctx = make_context(args.arch, device, n=args.train_size, epochs=epochs, seed=args.seed,
                       progress=not args.quiet)
    rows = []
    for name in names:
        seed_everything(args.seed)
        d = Variant(name).make()
        d.build(ctx)
        units = {}
        for u in d.units():
            units[u.name] = units.get(u.name, 0.0) + time_once(lambda u=u: u.fit(ctx), device)
        rows.append({"defense": name, "label": d.display, "seconds": sum(units.values()),
                     "units_s": units})
    ref = rows[0]["seconds"]
    for r in rows:
        r["ratio_to_vanilla"] = r["seconds"] / ref
    return rows


# ------------------------------------------------------------------ CLI
def load_avg() -> str | None:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):  # not on every platform
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    dev = p.add_mutually_exclusive_group()
    dev.add_argument("--gpu", type=int, help="CUDA device index")
    dev.add_argument("--device", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--defenses", help="comma-separated registry names, e.g. vanilla,mad,ini+mad "
                   "(default: all registered; with --train: vanilla,am,edm,ini)")
    p.add_argument("--arch", default="resnet18", help="victim architecture (default resnet18)")
    p.add_argument("--batch-sizes", default="128", help="comma-separated (default 128)")
    p.add_argument("--runs", type=int, default=2000, help="timed runs per cell (paper: 2000)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 10 on CUDA, 2 on CPU)")
    p.add_argument("--cell-budget", type=float, default=0.0,
                   help="seconds per cell; slower cells time fewer runs and extrapolate (0: off)")
    p.add_argument("--train", action="store_true", help="time training instead (Table B.1)")
    p.add_argument("--epochs", type=int, help="--train epochs (default 1 on CPU, 10 on CUDA)")
    p.add_argument("--train-size", type=int, default=512, help="--train: random images per set")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; "
                   "1 gives steadier numbers on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default results/speed/<cpu|gpu>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.runs < 1:
        p.error("--batch-sizes and --runs must be positive")
    return args


def main(argv=None) -> int:
    threads = torch.get_num_threads()
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into a caller (tests)


def _main(argv=None) -> int:
    args = parse_args(argv)
    command = "python -m bench.speed " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        device = resolve_device(args.gpu, args.device)
        MODELS.lookup(args.arch)
        names = parse_defenses(args.defenses, default_train_defenses() if args.train else default_defenses())
    except (SpeedError, UnknownNameError) as e:
        print(f"bench.speed: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/speed/{'gpu' if device.startswith('cuda') else 'cpu'}")
    torch.backends.cudnn.benchmark = device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    base = {"arch": args.arch, "input_shape": "x".join(map(str, SHAPE)), "num_classes": NUM_CLASSES,
            "weights": WEIGHTS_NOTE, "provenance": io.provenance(device), "command": command,
            "threads": torch.get_num_threads(), "seed": args.seed, "load_avg": load_avg()}
    if args.train:
        rows = run_training(args, device, names)
        rec = {**base, "weights": TRAIN_NOTE, "kind": "speed-train", "epochs": args.epochs, "train_size": args.train_size,
               "rows": rows, "wall_time_s": time.perf_counter() - t0}
        io.write_json(out / "train.json", rec)
        io.write_text(out / "tableB1.md", render_tableB1(rec))
        print(render_tableB1(rec))
        return 0
    result = run_inference(args, device, names)
    rec = {**base, "kind": "speed-inference", "runs": args.runs, "warmup": result["warmup"],
           "cell_budget_s": args.cell_budget, "prim_runs": result["prim_runs"],
           "batch_sizes": args.batch_sizes, "rows": cell_rows(result),
           "primitives": {str(b): p for b, p in result["primitives"].items()},
           "wall_time_s": time.perf_counter() - t0}
    io.write_json(out / "speed.json", rec)
    io.write_text(out / "table4.md", render_table4(rec))
    render_figure4(rec, out / "figure4.png")
    print(render_table4(rec))
    print(f"wrote {out}/speed.json, table4.md, figure4.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
