"""Wall-clock timing of a repeated call on CPU or CUDA, without host syncs inside the loop;
the spread of repeated measurements; the host's load while measuring."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm


@dataclass
class Timing:
    """``runs`` timed calls: their total and per-call seconds."""
    runs: int
    warmup: int
    total_s: float
    per_run_s: list = field(default_factory=list)

    @property
    def mean_s(self) -> float:
        return self.total_s / self.runs

    def summary(self) -> dict:
        t = self.per_run_s
        q = statistics.quantiles(t, n=10) if len(t) >= 2 else [t[0]] * 9
        return {"runs": self.runs, "warmup": self.warmup, "total_s": self.total_s,
                "mean_s": self.mean_s, "median_s": statistics.median(t), "min_s": min(t),
                "p10_s": q[0], "p90_s": q[-1]}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn, runs: int, warmup: int = 0, device="cpu", desc: str = "",
              progress: bool = True) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times timed.

    On CUDA each call is bracketed by CUDA events recorded on the stream (no host sync
    between calls, so queued kernels overlap exactly as in serving); one synchronize at the
    end. On CPU, perf_counter around each call.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        fn()
    sync(device)
    cuda = torch.device(device).type == "cuda"
    bar = tqdm(total=runs, desc=desc, disable=not progress, leave=False, mininterval=0.5)
    if cuda:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(runs + 1)]
        events[0].record()
        for i in range(runs):
            fn()
            events[i + 1].record()
            bar.update(1)
        torch.cuda.synchronize(device)
        per = [events[i].elapsed_time(events[i + 1]) / 1000.0 for i in range(runs)]
        total = events[0].elapsed_time(events[-1]) / 1000.0
    else:
        per = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            per.append(time.perf_counter() - t0)
            bar.update(1)
        total = sum(per)  # excludes the progress bar's own time
    bar.close()
    return Timing(runs=runs, warmup=warmup, total_s=total, per_run_s=per)


def time_once(fn, device="cpu") -> float:
    """Seconds for one call of ``fn`` (a training run), synchronized on CUDA."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def spread(values) -> dict:
    """Median, quartiles, min and max of repeated measurements.

    Quartiles by ``statistics.quantiles(method="inclusive")`` (linear interpolation between
    order statistics, numpy's default percentile), so they stay within [min, max] for a few
    repeats; one value is its own median and quartiles.
    """
    v = sorted(values)
    if not v:
        raise ValueError("spread of no values")
    q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else v * 3
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1],
            "n": len(v)}


# The reading before a run includes nothing of ours; later ones include our own threads.
LOAD_RULE = ("loaded = the 1-minute load average exceeded the core count before the run, or "
             "exceeded cores + 0.5 between rounds or after it (those readings include this run's "
             "own threads, about `threads`)")


def load_reading() -> list[float] | None:
    """The host's 1, 5 and 15-minute load averages (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_record(before, during: list, after, threads: int) -> dict:
    """The load readings of a run and whether they make its timings suspect (LOAD_RULE)."""
    cores = os.cpu_count() or 1
    loaded = bool(before and before[0] > cores) or any(
        r and r[0] > cores + 0.5 for r in [*during, after])
    return {"before": before, "during": during, "after": after, "cpu_count": cores,
            "threads": threads, "loaded": loaded, "rule": LOAD_RULE}
