"""How long a run took, across the processes that made it: one small file per invocation of
``bench.run`` under ``<out>/runs/``.

A long profile is run in pieces (sessions end, runs resume), so the records' own wall times do not
add up to the run's: a resumed victim's record knows only its last process. Each invocation writes
``runs/<start>-<pid>.json`` when it starts and rewrites it (atomically) after every finished victim
or cell and at the end, so an invocation that was killed still says when it last finished
something. The run's wall time is the sum over invocations of (end, or last progress) - start:
work in flight when a process was killed is lost and not counted.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import time
from pathlib import Path

from .io import git_commit, platform_info, write_json


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    """One invocation's entry; ``step`` after each finished item, ``close`` at the end."""

    def __init__(self, out, profile, jobs: int, device: str, planned: dict):
        self.t0 = time.time()
        self.path = Path(out) / "runs" / f"{_stamp(self.t0).replace(':', '')}-{os.getpid()}.json"
        self.entry = {"profile": profile.name, "seeds": list(profile.seeds), "jobs": jobs, "device": device,
                      "git_commit": git_commit(), "cpu_model": platform_info(device).get("cpu_model"),
                      "started": _stamp(self.t0), "last_progress": _stamp(self.t0), "ended": None,
                      "status": "running", "wall_s": 0.0, "planned": planned, "finished": {"victim": 0, "cell": 0}}
        self._write()

    def step(self, what: str) -> None:
        self.entry["finished"][what] += 1
        self.entry["last_progress"] = _stamp(time.time())
        self.entry["wall_s"] = round(time.time() - self.t0, 1)
        self._write()

    def close(self, status: str) -> None:
        self.entry.update(status=status, ended=_stamp(time.time()), wall_s=round(time.time() - self.t0, 1))
        self._write()

    def _write(self) -> None:
        write_json(self.path, self.entry)


def load(results_dir, profile_name: str | None = None) -> list[dict]:
    """The invocations recorded under ``results_dir/runs`` (of one profile), oldest first."""
    out = []
    for p in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        try:
            e = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            continue
        if profile_name is None or e.get("profile") == profile_name:
            out.append(e)
    return out


def summary(entries: list[dict]) -> str | None:
    """One line: the run's wall time over its invocations, and what was still running."""
    if not entries:
        return None
    total = sum(float(e.get("wall_s") or 0.0) for e in entries)
    killed = sum(1 for e in entries if e.get("status") == "running")
    commits = sorted({(e.get("git_commit") or "?")[:12] for e in entries})
    cpus = sorted({e.get("cpu_model") or "?" for e in entries})
    h, m = int(total // 3600), int(total % 3600 // 60)
    return (f"Wall time of the run: {h}h{m:02d}m over {len(entries)} invocation(s) of `bench.run` "
            f"({entries[0]['started']} to {entries[-1].get('ended') or entries[-1]['last_progress']}; "
            f"{killed} stopped before the end, counted to their last finished item); commit(s) "
            f"{', '.join(commits)}; {', '.join(cpus)} (`runs/`).")
