"""``python -m bench.speed``: served-inference speed of every defense (paper Figure 4), the
Table 4 cost model (predicted vs measured), and training cost (Table B.1, ``--train``).

Protocol. Inference: every served variant is built once, then --repeats rounds (default 5);
each round times every cell (defense x batch size) in the same order, so defenses are
interleaved (A B C A B C ...) and a burst of background load hits all of them. A cell is
--runs timed calls after warm-up (--cell-budget applies per round). Per cell: the median and
interquartile range over rounds of the mean time per batch, and of the ratio to Vanilla taken
per round (cell / Vanilla in the same round). Training (--train): --repeats rounds (default 3);
round r fits vanilla, am, edm, ini, each freshly built, for --epochs full epochs over
--train-size images (default 10,000 on CPU, 50,000 = CIFAR-10's training set on CUDA); per
defense the median, min-max (and IQR from 4 rounds) and the per-round ratio to Vanilla.
Load: os.getloadavg() before the run, between rounds and after, with os.cpu_count() and the
torch threads used. A run is flagged LOADED (``loaded`` in the record, a warning line in
table4.md / tableB1.md) when the 1-minute load average exceeded the core count before the run
(that reading includes nothing of ours), or exceeded cores + 0.5 between rounds or after it
(those readings include our own threads, about --threads).

Weights are randomly initialized (nothing is trained for the inference test): serving time
depends on the architectures and the serving code, not on trained values. Both the
paper-style implementations (MAD one query at a time, EDM running all members) and ours
(batched MAD, routed EDM) are timed, picked through the defenses' own parameters. Rendering:
bench/speedrender.py; the Table 4 cost model: bench/costmodel.py; training (Table B.1):
bench/speedtrain.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import io
from bench.costmodel import (MAD_KINDS, NUM_CLASSES, PRIM_KEYS, SHAPE,  # noqa: F401  re-exported
                             make_context, measure_primitives, predict, random_set)
from bench.registry import DEFENSES, MODELS, UnknownNameError
from bench.speedrender import (PAPER_B1, PAPER_FIG4_FASTEST_OTHER, PAPER_FIG4_MAD_S,  # noqa: F401
                               PAPER_FIG4_RATIO, TRAIN_NOTE, WEIGHTS_NOTE, _fmt_s, header,
                               render_figure4, render_table4, render_tableB1)
from bench.timing import Timing, load_reading, load_record, spread, time_once, time_runs
from bench.speedtrain import default_train_defenses, run_training, warmup_size  # noqa: F401
from bench.train import Context, seed_everything

DEFAULT_REPEATS = {"inference": 5, "train": 3}
DEFAULT_CELL_BUDGET = 30.0   # seconds per cell and round

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


# ------------------------------------------------------------------ device
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
    seed_everything(ctx.seed)  # a variant's weights do not depend on what was built before it
    d = v.make()
    d.build(ctx)
    return d.to(ctx.device).eval()


# ------------------------------------------------------------------ the Figure 4 protocol
@dataclass
class Cell:
    """One defense variant at one batch size, timed once per round."""
    name: str
    label: str
    style: str
    impl: str
    kind: str
    params: dict
    batch_size: int
    runs_requested: int
    defense: object = field(default=None, repr=False)  # built once, served every round
    n_members: int | None = None
    extra: dict = field(default_factory=dict)
    timings: list = field(default_factory=list)  # one Timing per round

    @property
    def per_round_s(self) -> list[float]:
        return [t.mean_s for t in self.timings]

    @property
    def per_batch_s(self) -> float:
        return statistics.median(self.per_round_s)

    @property
    def total_s(self) -> float:
        """Seconds for the requested runs (extrapolated from the mean if fewer were timed)."""
        return self.per_batch_s * self.runs_requested


def time_served(d, B: int, runs: int, warmup: int, device: str, desc: str, progress: bool,
                cell_budget: float = 0.0, x: torch.Tensor | None = None) -> Timing:
    """Time ``d(x)`` on one batch (random unless given); with a cell budget, fewer runs for
    slow defenses."""
    x = torch.randn(B, *SHAPE, device=device) if x is None else x
    first = time_once(lambda: d(x), device)  # also the first warm-up call
    if cell_budget > 0:
        if first >= cell_budget:   # one call fills the budget: it is the timed run (a call this
            return Timing(runs=1, warmup=0, total_s=first, per_run_s=[first])   # long dwarfs warm-up)
        runs = max(1, min(runs, int(cell_budget // max(first, 1e-9))))
        warmup = min(warmup, int(cell_budget / 4 // max(first, 1e-9)))
    return time_runs(lambda: d(x), runs, max(warmup - 1, 0), device, desc, progress)


def routing(d, B: int, device: str) -> dict:
    """EDM: the share of queries each member answers (random weights route unlike trained ones)."""
    if not hasattr(d, "member_share"):
        return {}
    return {"member_share": d.member_share(torch.randn(max(B, 256), *SHAPE, device=device))}


def even_routing(d):
    """Routed EDM with queries spread evenly over the members (random weights send almost
    every query to one member; a trained hash net spreads them). Instrumented, timing only."""
    n = d.params["n_members"]
    d.route = lambda x: torch.arange(len(x), device=x.device) % n
    return d


def build_cells(names: list[str], ctx: Context, batch_sizes: list[int], runs: int) -> list[Cell]:
    """Every served variant built once (routed EDM twice: as is and evenly routed), one cell
    per (variant, batch size), batch-size major."""
    served = []
    for name in names:
        for v in variants(name):
            d = build_served(v, ctx)
            label = v.label(d.display)
            served.append((v, d, label, False))
            if d.params.get("serve") == "routed" and hasattr(d, "route"):
                even = f"{label[:-1]}, even routing]" if label.endswith("]") else f"{label} (even routing)"
                served.append((v, even_routing(build_served(v, ctx)), even, True))
    cells = []
    for B in batch_sizes:
        for v, d, label, even in served:
            n = d.params.get("n_members")
            extra = ({"member_share": [round(1 / n, 4)] * n, "routing": "forced even (instrumented)"}
                     if even else routing(d, B, ctx.device))
            cells.append(Cell(v.name, label, v.style, v.impl, v.kind, dict(v.params), B, runs,
                              d, n, extra))
    return cells


def run_rounds(cells: list, repeats: int, time_cell, loads: list) -> None:
    """Interleaved rounds: every cell once per round, always in the same order (A B C A B C),
    so a burst of background load lands on all of them; the load read between rounds."""
    for r in range(repeats):
        if r:
            loads.append(load_reading())
        for c in cells:
            c.timings.append(time_cell(c, r))


def run_inference(args, device: str, names: list[str]) -> dict:
    ctx = make_context(args.arch, device, n=256, seed=args.seed)
    warmup = args.warmup if args.warmup is not None else (10 if device.startswith("cuda") else 2)
    prim_runs = max(3, min(args.runs, 50))
    cells = build_cells(names, ctx, args.batch_sizes, args.runs)
    g = torch.Generator().manual_seed(args.seed)
    inputs = {B: torch.randn(B, *SHAPE, generator=g).to(device) for B in args.batch_sizes}

    def time_cell(c: Cell, r: int) -> Timing:
        return time_served(c.defense, c.batch_size, args.runs, warmup, device,
                           f"{c.label} B={c.batch_size} round {r + 1}/{args.repeats}",
                           not args.quiet, args.cell_budget, x=inputs[c.batch_size])

    loads = []
    run_rounds(cells, args.repeats, time_cell, loads)
    eps = next((c.defense.params.get("eps", 0.5) for c in cells if c.kind in MAD_KINDS), 0.5)
    for c in cells:
        c.defense = None  # free the models before the primitives
    seed_everything(args.seed)
    kinds = {c.kind for c in cells}
    prims = measure_primitives(ctx, args.batch_sizes, prim_runs, warmup, eps, kinds, not args.quiet)
    return {"cells": cells, "primitives": prims, "warmup": warmup, "prim_runs": prim_runs,
            "load_during": loads}


def _pooled(timings: list[Timing]) -> Timing:
    return Timing(runs=sum(t.runs for t in timings), warmup=timings[0].warmup,
                  total_s=sum(t.total_s for t in timings),
                  per_run_s=[s for t in timings for s in t.per_run_s])


def cell_rows(result: dict) -> list[dict]:
    """JSON rows: per cell the median over rounds (and IQR) of the time per batch and of the
    per-round ratio to Vanilla, and the cost model's prediction."""
    rows = []
    for c in result["cells"]:
        ref = next(x for x in result["cells"] if x.name == "vanilla" and x.batch_size == c.batch_size)
        ratios = [a / b for a, b in zip(c.per_round_s, ref.per_round_s)]
        per, rat = spread(c.per_round_s), spread(ratios)
        preds = predict(c.kind, c.impl, result["primitives"][c.batch_size], c.batch_size,
                        NUM_CLASSES, c.n_members or 5)
        runs = [t.runs for t in c.timings]
        rows.append({"defense": c.name, "label": c.label, "style": c.style, "impl": c.impl,
                     "params": c.params, "batch_size": c.batch_size,
                     "runs_requested": c.runs_requested, "runs_timed": min(runs),
                     "runs_timed_per_round": runs,
                     "extrapolated": min(runs) < c.runs_requested,
                     "total_s": per["median"] * c.runs_requested, "per_batch_s": per["median"],
                     "per_batch_iqr_s": [per["q1"], per["q3"]],
                     "per_batch_range_s": [per["min"], per["max"]], "per_round_s": c.per_round_s,
                     "ratio_to_vanilla": rat["median"], "ratio_iqr": [rat["q1"], rat["q3"]],
                     "ratio_range": [rat["min"], rat["max"]], "ratio_per_round": ratios,
                     "predictions": [{"formula": f, "predicted_per_batch_s": t,
                                      "measured_over_predicted": per["median"] / t if t else None}
                                     for t, f in preds],
                     "timing": _pooled(c.timings).summary(), **c.extra,
                     "per_run_s": [round(t, 7) for t in _pooled(c.timings).per_run_s]})
    return rows


# ------------------------------------------------------------------ CLI
def parse_args(argv=None):
    intro, protocol = __doc__.split("\n\n")[:2]
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=intro, epilog=protocol,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    dev = p.add_mutually_exclusive_group()
    dev.add_argument("--gpu", type=int, help="CUDA device index")
    dev.add_argument("--device", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--defenses", help="comma-separated registry names, e.g. vanilla,mad,ini+mad "
                   "(default: all registered; with --train: vanilla,am,edm,ini)")
    p.add_argument("--arch", default="resnet18", help="victim architecture (default resnet18)")
    p.add_argument("--batch-sizes", default="128", help="comma-separated (default 128)")
    p.add_argument("--runs", type=int, default=2000, help="timed runs per cell and round (paper: 2000)")
    p.add_argument("--repeats", type=int, help="interleaved rounds (default 5; with --train 3)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 10 on CUDA, 2 on CPU); with --train: "
                   "untimed warm-up rounds on a few batches (default 1 on CUDA, 0 on CPU)")
    p.add_argument("--cell-budget", type=float, default=DEFAULT_CELL_BUDGET,
                   help=f"seconds per cell and round; slower cells time fewer runs and extrapolate, "
                   f"marked * (default {DEFAULT_CELL_BUDGET:g}: 2,000 runs of MAD-argmax's per-query "
                   "reference at B=128 take 10 hours on an H100; 0: off, every run timed)")
    p.add_argument("--train", action="store_true", help="time training instead (Table B.1)")
    p.add_argument("--epochs", type=int, help="--train epochs (default 1 on CPU, 10 on CUDA)")
    p.add_argument("--train-size", type=int, help="--train: random images per set "
                   "(default 10,000 on CPU, 50,000 on CUDA)")
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


def resolve_counts(args, device: str) -> None:
    """Fill the device-dependent defaults; a count below 1 is a SpeedError."""
    cuda = device.startswith("cuda")
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS["train" if args.train else "inference"]
    if args.train and args.warmup is None:
        args.warmup = 1 if cuda else 0   # training: untimed warm-up rounds
    args.epochs = args.epochs if args.epochs is not None else (10 if cuda else 1)
    args.train_size = args.train_size if args.train_size is not None else (50_000 if cuda else 10_000)
    for flag, v in (("--repeats", args.repeats), ("--epochs", args.epochs), ("--train-size", args.train_size)):
        if v < 1:
            raise SpeedError(f"{flag} must be >= 1, got {v}")


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
        resolve_counts(args, device)
        MODELS.lookup(args.arch)
        names = parse_defenses(args.defenses, default_train_defenses() if args.train else default_defenses())
    except (SpeedError, UnknownNameError) as e:
        print(f"bench.speed: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/speed/{'gpu' if device.startswith('cuda') else 'cpu'}")
    torch.backends.cudnn.benchmark = device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0, before = time.perf_counter(), load_reading()
    result = (run_training if args.train else run_inference)(args, device, names)
    load = load_record(before, result["load_during"], load_reading(), torch.get_num_threads())
    base = {"arch": args.arch, "input_shape": "x".join(map(str, SHAPE)), "num_classes": NUM_CLASSES,
            "weights": WEIGHTS_NOTE, "provenance": io.provenance(device), "command": command,
            "threads": torch.get_num_threads(), "seed": args.seed, "repeats": args.repeats,
            "interleaved": True, "load": load, "loaded": load["loaded"],
            "load_avg": " ".join(f"{v:.2f}" for v in before) if before else None}
    if args.train:
        rec = {**base, "weights": TRAIN_NOTE, "kind": "speed-train", "epochs": args.epochs,
               "train_size": args.train_size, "warmup_rounds": args.warmup, "rows": result["rows"],
               "wall_time_s": time.perf_counter() - t0}
        io.write_json(out / "train.json", rec)
        io.write_text(out / "tableB1.md", render_tableB1(rec))
        print(render_tableB1(rec))
        return 0
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
