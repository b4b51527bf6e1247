"""PRADA: detecting model extraction from one account's query stream (Juuti et al., "PRADA:
Protecting against DNN Model Stealing Attacks", EuroS&P 2019, Algorithm 1).

Serving is the identity; PRADA is a monitor (``new_monitor()``, one per account) that the oracle
(bench/oracle.py) feeds every query of the account, in order, before it answers. For each query
x with predicted class c = F(x) (the served top-1):
- the first query of class c starts its growing set: G_c = {x}, D_Gc = {0}, T_c = 0;
- any later one adds d_min = min_{y in G_c} ||x - y||_2 to the account's distance set D; if
  d_min > T_c, x joins G_c, d_min joins D_Gc and T_c = max(T_c, mean(D_Gc) - std(D_Gc));
- once |D| > min_set, D' = the values of D within 3 std of its mean, and the account is flagged
  when the Shapiro-Wilk statistic W(D') < delta. A flag latches: the oracle refuses the batch
  that raised it and every later one.

Defaults and where they come from:
- ``delta`` = 0.9: the authors' reference code serves with 0.9 (SSGAalto/prada-protecting-against-
  dnn-model-stealing-attacks, src/main.py: ``serve_model(0.9, ...)``). The paper sets delta per
  target model so that benign streams are not flagged; ``benign_fpr`` measures that here.
- ``min_set`` = 100: Algorithm 1 tests once |D| > 100 (the reference: len(D') > 100).
- 3-std outlier removal (two-sided, strict), population std, T_c from mean - std: the reference
  code (src/growing_set.py ``__reject_outliers(.., 3)``, src/growing_set_ops.py ``mean_dif_std``).
- ``test_every`` = 1: Algorithm 1 tests after every query; the reference code tests at every 10th
  (``test_every=10`` reproduces that) and also leaves out classes with fewer than 10 distances
  (not done here).
Distances are L2 on the images as the victim receives them (normalized); on one channel that is
pixel L2 / std, and W and the T_c comparisons are scale-free, so verdicts equal the pixel ones.
"""
from __future__ import annotations

import math

import torch

from defenses.base import PostProcessor, register_defense

# Royston's polynomial corrections of the two largest coefficients (AS R94, swilk.c c1/c2)
_C1 = (0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)
OUTLIER_STDS = 3.0
CHUNK = 256   # rows per nearest-neighbour batch in PradaMonitor.observe (memory: CHUNK x |G_c| doubles)


def _poly(c, u: float) -> float:
    return sum(ck * u ** k for k, ck in enumerate(c))


def shapiro_w(values, presorted: bool = False) -> float | None:
    """The Shapiro-Wilk W of ``values`` (Royston 1995, AS R94: the coefficients SciPy's
    ``shapiro`` uses; W only, no p-value). None for fewer than 3 values; 1.0 when they are all
    equal (as SciPy, which warns). ``presorted``: the values are already ascending."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    x = x if presorted else x.sort().values
    n = len(x)
    if n < 3:
        return None
    ss = float(((x - x.mean()) ** 2).sum())
    if x[-1] == x[0] or ss <= 0.0:
        return 1.0
    if n == 3:
        a = torch.tensor([-math.sqrt(0.5), 0.0, math.sqrt(0.5)], dtype=torch.float64)
    else:
        i = torch.arange(1, n + 1, dtype=torch.float64)
        m = torch.special.ndtri((i - 0.375) / (n + 0.25))
        summ2 = float((m ** 2).sum())
        u = 1.0 / math.sqrt(n)
        a = torch.empty(n, dtype=torch.float64)
        top = float(m[-1]) / math.sqrt(summ2) + _poly(_C1, u)
        if n > 5:
            top2 = float(m[-2]) / math.sqrt(summ2) + _poly(_C2, u)
            fac = math.sqrt((summ2 - 2 * float(m[-1]) ** 2 - 2 * float(m[-2]) ** 2)
                            / (1 - 2 * top ** 2 - 2 * top2 ** 2))
            a[2:-2] = m[2:-2] / fac
            a[1], a[-2] = -top2, top2
        else:
            fac = math.sqrt((summ2 - 2 * float(m[-1]) ** 2) / (1 - 2 * top ** 2))
            a[1:-1] = m[1:-1] / fac
        a[0], a[-1] = -top, top
    return min(1.0, float((a * x).sum()) ** 2 / ss)


class PradaMonitor:
    """One account's state in Algorithm 1; bench/oracle.py calls ``observe`` with each batch."""
    name = "prada"

    def __init__(self, delta: float = 0.9, min_set: int = 100, test_every: int = 1):
        self.delta, self.min_set, self.test_every = delta, min_set, test_every
        self.sets: dict = {}         # class -> [growing set rows (capacity doubles), size]
        self.set_dists: dict = {}    # class -> D_Gc
        self.threshold: dict = {}    # class -> T_c
        self.set_stats: dict = {}    # class -> Welford (count, mean, M2) of D_Gc, for T_c
        self.dists = torch.empty(1024, dtype=torch.float64)   # D, first self.n_dists values
        self.sorted = torch.empty(1024, dtype=torch.float64)  # D in ascending order
        self.d_stats = [0, 0.0, 0.0]                          # Welford (count, mean, M2) of D
        self.n_dists = 0
        self.seen = 0                # queries observed, the stream position
        self.last_w: float | None = None
        self.verdict: dict | None = None

    def observe(self, x: torch.Tensor, probs: torch.Tensor) -> dict | None:
        """Feed a batch (queries in order, served probabilities); a verdict dict once flagged.

        Queries are taken one at a time, as Algorithm 1 does; only the nearest-neighbour search is
        batched: one matrix product per class against G_c as it stood before the batch, and one
        within the batch for the rows that join G_c during it. The product (|a|^2 + |b|^2 - 2ab,
        float64) only picks the nearest row; its distance is then computed directly, so that a
        repeated query is at distance 0 exactly (it must not join G_c while T_c = 0). A stream of
        100,000 noise queries, each joining G_c, took hours one row at a time (O(n^2) row reads).
        A large batch is taken in chunks of CHUNK rows (the within-batch matrix is CHUNK^2)."""
        for i in range(0, len(x), CHUNK):
            if self.verdict is None:
                self._observe(x[i:i + CHUNK], probs[i:i + CHUNK])
        return self.verdict

    def _observe(self, x: torch.Tensor, probs: torch.Tensor) -> None:
        rows = x.detach().reshape(len(x), -1).to(torch.float64)
        classes = probs.argmax(1).tolist()
        sq = (rows * rows).sum(1)
        before = self._nearest_in_sets(rows, sq, classes)
        within = sq[:, None] + sq[None, :] - 2.0 * (rows @ rows.T)   # for rows that join during the batch
        joined: dict = {}   # class -> indices of this batch's rows that joined G_c so far
        for i, c in enumerate(classes):
            self.seen += 1
            if c not in self.sets:   # first query of class c: G_c = {x}, D_Gc = {0}, T_c = 0
                self.sets[c] = [rows.new_empty((16, rows.shape[1])), 0]
                self._grow(c, rows[i])
                self.set_dists[c], self.threshold[c] = [0.0], 0.0
                self.set_stats[c] = [1, 0.0, 0.0]
                joined[c] = [i]
            else:
                nearest, best = before.get(i, (None, math.inf))
                new = joined.get(c, [])
                if new:
                    k = int(within[i, new].argmin())
                    if float(within[i, new[k]]) < best:
                        nearest = rows[new[k]]
                d_min = float(((rows[i] - nearest) ** 2).sum().sqrt())
                if self._add_distance(c, d_min):
                    self._grow(c, rows[i])
                    joined.setdefault(c, []).append(i)
            if (self.seen - 1) % self.test_every == 0 and self._flag():
                self.verdict = {"monitor": self.name, "at": self.seen, "W": self.last_w,
                                "distances": self.n_dists, "delta": self.delta}
                return

    def _nearest_in_sets(self, rows, sq, classes) -> dict:
        """Row index -> (nearest row of its class's growing set before this batch, squared
        distance by the matrix product); rows of classes with no set yet are left out."""
        out = {}
        by_class: dict = {}
        for i, c in enumerate(classes):
            if c in self.sets:
                by_class.setdefault(c, []).append(i)
        for c, idx in by_class.items():
            buf, size = self.sets[c]
            g = buf[:size]
            d2 = sq[idx, None] + (g * g).sum(1)[None, :] - 2.0 * (rows[idx] @ g.T)
            best, arg = d2.min(1)
            for i, b, a in zip(idx, best.tolist(), arg.tolist()):
                out[i] = (g[a], b)
        return out

    def _add_distance(self, c: int, d_min: float) -> bool:
        """D gets d_min; True when the query joins G_c (farther than T_c), updating D_Gc and T_c.
        Means and stds are running (Welford) and D is kept sorted, so that a query costs O(|D|)
        memory moves, not a sort and a pass over D and D_Gc (quadratic over a long stream)."""
        if self.n_dists == len(self.dists):
            self.dists = torch.cat([self.dists, torch.empty_like(self.dists)])
            self.sorted = torch.cat([self.sorted, torch.empty_like(self.sorted)])
        n = self.n_dists
        self.dists[n] = d_min
        pos = int(torch.searchsorted(self.sorted[:n], d_min))
        self.sorted[pos + 1:n + 1] = self.sorted[pos:n].clone()
        self.sorted[pos] = d_min
        self.n_dists += 1
        _welford(self.d_stats, d_min)
        if d_min <= self.threshold[c]:
            return False
        self.set_dists[c].append(d_min)
        st = _welford(self.set_stats[c], d_min)
        self.threshold[c] = max(self.threshold[c], st[1] - math.sqrt(st[2] / st[0]))
        return True

    def _grow(self, c: int, row: torch.Tensor) -> None:
        buf, size = self.sets[c]
        if size == len(buf):
            buf = torch.cat([buf, torch.empty_like(buf)])
        buf[size] = row
        self.sets[c] = [buf, size + 1]

    def _flag(self) -> bool:
        if self.n_dists <= self.min_set:
            return False
        count, mean, m2 = self.d_stats
        k = OUTLIER_STDS * math.sqrt(m2 / count)
        d = self.sorted[:self.n_dists]   # D' = D within 3 std of its mean (strict): a slice of sorted D
        lo = int(torch.searchsorted(d, mean - k, right=True))
        hi = int(torch.searchsorted(d, mean + k, right=False))
        self.last_w = shapiro_w(d[lo:hi], presorted=True)
        return self.last_w is not None and self.last_w < self.delta


def _welford(st: list, x: float) -> list:
    """Add x to a running [count, mean, M2] (population variance = M2 / count)."""
    st[0] += 1
    delta = x - st[1]
    st[1] += delta / st[0]
    st[2] += delta * (x - st[1])
    return st


@register_defense("prada")
class PRADA(PostProcessor):
    """Serves its base unchanged and offers the oracle a PRADA monitor per account."""
    label = "PRADA"
    knobs = {"delta": (0.0, 1.0)}
    defaults = {"delta": 0.9, "min_set": 100, "test_every": 1}

    def _check_params(self):
        super()._check_params()
        for k, low in (("min_set", 3), ("test_every", 1)):
            v = self.params[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{self.name}: {k} must be an integer >= {low}, got {v!r}")

    def perturb(self, x, probs):
        return probs

    def new_monitor(self) -> PradaMonitor:
        return PradaMonitor(**self.params)


def benign_fpr(victim, images: torch.Tensor, streams: int = 10, length: int = 1000, seed: int = 0,
               batch: int = 100, device="cpu", **params) -> dict:
    """PRADA's false-positive rate on benign accounts (bench/detection.py) with these PRADA
    params on any victim: the rate, each account's flag position (None: never flagged) and W."""
    from bench.detection import benign_fpr as fpr
    p = {**PRADA.defaults, **params}
    out = fpr(victim, images, streams, length, seed, batch, device, make_monitors=lambda: [PradaMonitor(**p)])
    out["last_w"] = [w[0] for w in out.pop("last_stat")]
    return {**out, "params": p}
