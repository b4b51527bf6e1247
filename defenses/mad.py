"""MAD (prediction poisoning, Orekondy et al. ICLR 2020) and its argmax-preserving variant.

Serves y' = (1 - a) y + a y*, where y* is the extreme point of the simplex that maximizes
the angular deviation || u/||u|| - v/||v|| ||^2 (u = G^T y*, v = G^T y) of the gradient the
attacker would get, G being the Jacobian of -log softmax of a randomly initialized surrogate
w.r.t. its last linear layer, and a the largest mixing weight with ||y - y'||_1 <= eps.

Two implementations of the same rule:
- ``impl="reference"``: one query at a time, C last-layer backward passes to build G and a
  loop over extreme points (``search_reference``), as the original code does;
- ``impl="batched"``: the spec's identity G^T y = vec((y - p) [h; 1]^T) turns the objective
  into || (y* - p)/||y* - p|| - (y - p)/||y - p|| ||^2, so one surrogate forward per batch
  and tensor ops over (batch x extreme points) suffice (``search_batched``).

``surrogate_bn`` is the surrogate's batch-norm mode:
- ``"train"`` (default): the original code never calls ``.eval()`` on its surrogate and feeds
  it one query at a time, so every BatchNorm normalizes with that one image's own statistics.
  The reference path does literally that; the batched path gets the same numbers by running
  each BatchNorm2d as instance normalization with BN's affine parameters (train-mode BN on a
  batch of one is exactly that), so a query's answer never depends on the rest of its batch.
- ``"eval"``: running statistics (fresh ones: mean 0, var 1), which makes a random network's
  logits tiny and p nearly uniform.
"""
from __future__ import annotations

import contextlib
import itertools
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from defenses.base import PostProcessor, register_defense

SURROGATE_SEED_OFFSET = 517    # the surrogate's init seed is ctx.seed * 1000 + this
ARGMAX_EXACT_MAX_CLASSES = 10  # above this, the argmax variant searches greedily (as the original)
ARGMAX_GREEDY_MAX_ITERS = 1024
TOP1_MARGIN = 1e-5             # added to the kept top-1 so it stays the strict argmax
NORM_FLOOR = 1e-12


def tie_tol(dtype) -> float:
    """Objective values this close count as tied; ties go to the first candidate, so that both
    implementations pick the same extreme point despite rounding (e.g. K=2, where all ties are exact)."""
    return 100 * torch.finfo(dtype).eps


# ---------------------------------------------------------------- reference (one query)
def last_layer_jacobian(net, x1: torch.Tensor) -> torch.Tensor:
    """G (C x D): row k = d(-log softmax_k)/d(fc.weight, fc.bias) for one input x1 (1, ...)."""
    params = [net.fc.weight, net.fc.bias]
    with torch.enable_grad():
        nll = -F.log_softmax(net(x1), dim=1)[0]
        rows = []
        for k in range(nll.shape[0]):  # one backward pass per class, as the original
            grads = torch.autograd.grad(nll[k], params, retain_graph=True)
            rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows).detach()


def _objective_ref(G: torch.Tensor, yt: torch.Tensor, y: torch.Tensor) -> float:
    u = G.t() @ yt
    v = G.t() @ y
    u = u / u.norm().clamp_min(NORM_FLOOR)
    v = v / v.norm().clamp_min(NORM_FLOOR)
    return float(((u - v) ** 2).sum())


def _vertex(members, top: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Uniform mass on ``members`` with the top-1 slightly upweighted, normalized."""
    v = torch.zeros(size, dtype=like.dtype, device=like.device)
    v[list(members)] = 1.0
    v[top] += TOP1_MARGIN
    return v / v.sum()


def _first_max_ref(vals: list, dtype) -> int:
    top = max(vals)
    return next(i for i, v in enumerate(vals) if v >= top - tie_tol(dtype))


def _oracle_extreme_ref(G, y):
    vertices = []
    for k in range(len(y)):
        yk = torch.zeros_like(y)
        yk[k] = 1.0
        vertices.append(yk)
    vals = [_objective_ref(G, yk, y) for yk in vertices]
    return vertices[_first_max_ref(vals, y.dtype)]


def _oracle_argmax_ref(G, y):
    K, top = len(y), int(y.argmax())
    if K > ARGMAX_EXACT_MAX_CLASSES:
        return _oracle_argmax_greedy_ref(G, y)
    vertices, vals = [], []
    for bits in itertools.product([0, 1], repeat=K):  # every vertex set that keeps the top-1
        if not bits[top]:
            continue
        vertices.append(_vertex([i for i, b in enumerate(bits) if b], top, K, y))
        vals.append(_objective_ref(G, vertices[-1], y))
    return vertices[_first_max_ref(vals, y.dtype)]


def _oracle_argmax_greedy_ref(G, y):
    """Grow the vertex set one class at a time, keeping the best set seen (original heuristic)."""
    K, top = len(y), int(y.argmax())
    fixed, best, best_val, n_iters = [top], None, -1.0, 0
    while n_iters < ARGMAX_GREEDY_MAX_ITERS and len(fixed) < K:
        cands = [k for k in range(K) if k not in fixed]
        vals = [_objective_ref(G, _vertex(fixed + [k], top, K, y), y) for k in cands]
        i = _first_max_ref(vals, y.dtype)
        if vals[i] > best_val + tie_tol(y.dtype):
            best, best_val = _vertex(fixed + [cands[i]], top, K, y), vals[i]
        fixed.append(cands[i])
        n_iters += len(cands)
    return best


def _mix(y: torch.Tensor, ystar: torch.Tensor, eps: float) -> torch.Tensor:
    """Line search on the mixing weight: for L1 its optimum is closed form (original code)."""
    alpha = (eps / ((y - ystar).abs().sum(-1, keepdim=True) + 1e-7)).clamp(0.0, 1.0)
    return (1 - alpha) * y + alpha * ystar


def search_reference(G: torch.Tensor, y: torch.Tensor, eps: float, argmax: bool = False) -> torch.Tensor:
    """MAD's search S for one query: G (C x D) the Jacobian, y (C,) the probs; returns y'."""
    if eps <= 0:
        return y.clone()
    ystar = _oracle_argmax_ref(G, y) if argmax else _oracle_extreme_ref(G, y)
    return _mix(y, ystar, eps)


# ---------------------------------------------------------------- batched
def _objective_batched(p: torch.Tensor, y: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """Objective for candidates cands (B, M, C) given surrogate probs p and served probs y (B, C)."""
    dv = y - p
    dv = dv / dv.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
    du = cands - p.unsqueeze(1)
    du = du / du.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
    return ((du - dv.unsqueeze(1)) ** 2).sum(-1)


def _first_max(obj: torch.Tensor) -> torch.Tensor:
    """Per row, the first index within tie_tol of the row maximum (same rule as the reference)."""
    near = obj >= obj.max(1, keepdim=True).values - tie_tol(obj.dtype)
    return near.to(torch.uint8).argmax(1)


def _pick(cands: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    return cands[torch.arange(len(cands), device=cands.device), _first_max(obj)]


def _all_vertex_sets(K: int, device, dtype) -> torch.Tensor:
    """All 2^K binary vectors in itertools.product order (first class most significant)."""
    codes = torch.arange(2 ** K, device=device)
    shifts = torch.arange(K - 1, -1, -1, device=device)
    return ((codes.unsqueeze(1) >> shifts) & 1).to(dtype)


def _with_top_margin(sets: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """sets (B, M, C) binary; upweight each row's top-1 and normalize (rows lacking it are masked later)."""
    v = sets.clone()
    v[torch.arange(len(v), device=v.device), :, top] += TOP1_MARGIN
    return v / v.sum(-1, keepdim=True)


def _oracle_argmax_batched(p, y):
    B, K = y.shape
    top = y.argmax(1)
    if K > ARGMAX_EXACT_MAX_CLASSES:
        return _oracle_argmax_greedy_batched(p, y, top)
    sets = _all_vertex_sets(K, y.device, y.dtype).expand(B, -1, -1)
    cands = _with_top_margin(sets, top)
    obj = _objective_batched(p, y, cands)
    keeps_top = sets[torch.arange(B, device=y.device), :, top] > 0
    return _pick(cands, obj.masked_fill(~keeps_top, -float("inf")))


def _oracle_argmax_greedy_batched(p, y, top):
    B, K = y.shape
    rows = torch.arange(B, device=y.device)
    eye = torch.eye(K, dtype=y.dtype, device=y.device)
    fixed = F.one_hot(top, K).bool()
    best = torch.zeros_like(y)
    best_val = torch.full((B,), -1.0, dtype=y.dtype, device=y.device)
    n_fixed, n_iters = 1, 0
    while n_iters < ARGMAX_GREEDY_MAX_ITERS and n_fixed < K:  # same step count for every row
        cands = _with_top_margin(fixed.to(y.dtype).unsqueeze(1) + eye, top)
        obj = _objective_batched(p, y, cands).masked_fill(fixed, -float("inf"))
        idx = _first_max(obj)
        val = obj[rows, idx]
        better = val > best_val + tie_tol(y.dtype)
        best = torch.where(better.unsqueeze(1), cands[rows, idx], best)
        best_val = torch.where(better, val, best_val)
        fixed[rows, idx] = True
        n_iters += K - n_fixed
        n_fixed += 1
    return best


def search_batched(p: torch.Tensor, y: torch.Tensor, eps: float, argmax: bool = False) -> torch.Tensor:
    """MAD for a batch: p (B, C) surrogate softmax, y (B, C) served probs; returns y' (B, C)."""
    if eps <= 0:
        return y.clone()
    if argmax:
        ystar = _oracle_argmax_batched(p, y)
    else:
        eye = torch.eye(y.shape[1], dtype=y.dtype, device=y.device).expand(len(y), -1, -1)
        ystar = _pick(eye, _objective_batched(p, y, eye))
    return _mix(y, ystar, eps)


# ---------------------------------------------------------------- surrogate BN modes
def _instance_norm_forward(bn, x):
    return F.instance_norm(x, weight=bn.weight, bias=bn.bias, eps=bn.eps)


class per_query_bn_stats:
    """Inside: every BatchNorm2d of ``net`` normalizes each image with its own statistics
    (train-mode BN on a batch of one); running statistics are neither used nor updated."""

    def __init__(self, net: nn.Module):
        self.bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        other = [type(m).__name__ for m in self.bns if not isinstance(m, nn.BatchNorm2d)]
        if other:  # train-mode BN1d on one sample fails in the original code too
            raise ValueError(f"mad: surrogate_bn='train' needs BatchNorm2d layers only, found {other}; "
                             "use surrogate_bn='eval'")

    def __enter__(self):
        for bn in self.bns:  # an instance attribute shadows the class's forward
            bn.forward = types.MethodType(_instance_norm_forward, bn)
        return self

    def __exit__(self, *exc):
        for bn in self.bns:
            del bn.forward
        return False


class train_mode_one_at_a_time:
    """The original's setting for the reference path: the surrogate in train mode; its
    running statistics are restored afterwards so serving leaves no trace in the state."""

    def __init__(self, net: nn.Module):
        self.net = net

    def __enter__(self):
        self.saved = {k: v.clone() for k, v in self.net.named_buffers()}
        self.net.train()
        return self

    def __exit__(self, *exc):
        self.net.eval()
        with torch.no_grad():
            for k, v in self.net.named_buffers():
                v.copy_(self.saved[k])
        return False


# ---------------------------------------------------------------- the defense
@register_defense("mad")
class MAD(PostProcessor):
    label = "MAD"
    argmax = False
    IMPLS = ("batched", "reference")
    BN_MODES = ("train", "eval")
    knobs = {"eps": (0.0, 2.0)}
    defaults = {"eps": 0.5, "impl": "batched", "surrogate_bn": "train"}
    tune_knob = "eps"
    tune_grid = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
    tune_strongest = "high"

    def _check_params(self):
        super()._check_params()
        if self.params["impl"] not in self.IMPLS:
            raise ValueError(f"{self.name}: impl={self.params['impl']!r}; accepted: {list(self.IMPLS)}")
        if self.params["surrogate_bn"] not in self.BN_MODES:
            raise ValueError(f"{self.name}: surrogate_bn={self.params['surrogate_bn']!r}; "
                             f"accepted: {list(self.BN_MODES)}")

    def train_params(self):
        # impl and surrogate_bn change how y* is computed, not the (random) surrogate: one cache entry
        return {k: v for k, v in super().train_params().items() if k not in ("impl", "surrogate_bn")}

    def _build(self, ctx):
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the global RNG
            torch.manual_seed(ctx.seed * 1000 + SURROGATE_SEED_OFFSET)
            self.nets["surrogate"] = ctx.new_model()
        self.nets["surrogate"].eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if "surrogate" in self.nets:
            self.nets["surrogate"].eval()  # a fixed random model: BN must use its running stats
        return self

    def perturb(self, x, probs):
        eps = float(self.params["eps"])
        if eps <= 0:
            return probs
        sur = self.nets["surrogate"]
        per_query = self.params["surrogate_bn"] == "train"
        if self.params["impl"] == "batched":
            with per_query_bn_stats(sur) if per_query else contextlib.nullcontext():
                p = torch.softmax(sur(x), dim=1).to(probs.dtype)
            return search_batched(p, probs, eps, self.argmax)
        with train_mode_one_at_a_time(sur) if per_query else contextlib.nullcontext():
            return torch.stack([search_reference(last_layer_jacobian(sur, x[i:i + 1]).to(probs.dtype),
                                                 probs[i], eps, self.argmax) for i in range(len(x))])


@register_defense("mad-argmax")
class MADArgmax(MAD):
    """MAD restricted to extreme points that keep the top-1 label."""
    label = "MAD-argmax"
    argmax = True
