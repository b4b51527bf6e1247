"""What a stream detector costs honest users: its false-positive rate on benign accounts.

Each benign account queries ``length`` test images in its own random order, in batches, through
a fresh oracle (one oracle = one account), so the victim's own monitors (``new_monitor()`` on
any layer, bench/oracle.py) watch it exactly as they watch an attacker.
"""
from __future__ import annotations

import torch

from .oracle import Oracle, Refused, stream_monitors


def has_monitor(victim) -> bool:
    return bool(stream_monitors(victim))


def benign_fpr(victim, images: torch.Tensor, streams: int = 10, length: int = 1000, seed: int = 0,
               batch: int = 100, device="cpu", make_monitors=None) -> dict:
    """The share of benign accounts flagged, and where each was (None: never).
    ``make_monitors()`` replaces the victim's own monitors (e.g. other detector settings)."""
    if not 0 < length <= len(images):
        raise ValueError(f"benign_fpr: length must lie in [1, {len(images)}], got {length}")
    g = torch.Generator().manual_seed(seed)
    flagged_at, last = [], []
    for _ in range(streams):
        order = torch.randperm(len(images), generator=g)[:length]
        oracle = Oracle(victim, length, "soft", device, monitors=make_monitors() if make_monitors else None)
        try:
            for i in range(0, length, batch):
                oracle.query(images[order[i:i + batch]])
            flagged_at.append(None)
        except Refused as r:
            flagged_at.append(r.verdict.get("at"))
        last.append([getattr(m, "last_w", None) for m in oracle.monitors])
    return {"fpr": sum(a is not None for a in flagged_at) / streams, "flagged_at": flagged_at,
            "last_stat": last, "streams": streams, "length": length}
