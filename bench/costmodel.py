"""The paper's Table 4 cost model: predicted seconds per served batch from measured primitives.

Used by ``python -m bench.speed`` (bench/speed.py times the defenses, this file predicts them).
Primitives are measured once per run (not in interleaved rounds): they feed predictions, not
the ratios to Vanilla.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.data import ImageSet
from bench.timing import time_runs
from bench.train import Context, TrainConfig

NUM_CLASSES, SHAPE = 10, (3, 32, 32)  # CIFAR-10, as in the paper
MAD_KINDS = {"mad": "S", "mad-argmax": "S_argmax"}  # kind -> its search primitive
PRIM_KEYS = ("M_f", "M_h", "M_f1", "M_b", "M_b_full", "S", "S_argmax")


# Random data of the paper's shape: what every speed measurement runs on.
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


def predict(kind: str, impl: str, prim: dict, B: int, C: int, n: int = 5) -> list[tuple]:
    """Predicted seconds per batch of B queries, as (seconds or None, formula) rows.

    prim (seconds): M_f, M_h per batch of B; M_f1 a forward of one query; M_b one backward
    of one query's class log-probability (last layer, as defenses/mad.py's reference does it),
    M_b_full the same w.r.t. every parameter (the original MAD code's max_grad_layer='all'
    option; its default, like ours, takes the last layer only);
    S / S_argmax MAD's search per query. The first row is the paper's formula; for MAD's
    reference extra rows show what the formula leaves out ('ours' formulas are marked).
    """
    Mf, Mh = prim.get("M_f"), prim.get("M_h")
    if kind in ("vanilla", "ini"):
        return [(Mf, "M_f")]
    if kind == "am":
        return [(2 * Mf, "2M_f")]
    if kind == "dcp":
        return [(Mf, "M_f (ours; DCP is not in the paper)")]
    if kind in MAD_KINDS:
        return _predict_mad(kind, impl, prim, B, C)
    if kind == "edm":
        if Mh is None:
            return [(None, "")]
        if impl == "routed":
            return [(Mf + Mh, "M_f + M_h")]
        return [(n * Mf + Mh, "nM_f + M_h")]
    return [(None, "")]


def _predict_mad(kind: str, impl: str, prim: dict, B: int, C: int) -> list[tuple]:
    Mf, Mb, S = prim.get("M_f"), prim.get("M_b"), prim.get(MAD_KINDS[kind])
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
