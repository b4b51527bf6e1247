"""The long run's active wall time, from its log (tools/cpu_run.sh), its heartbeat (alive.log, a
stamp a minute) and its ledger (runs/*.json).

A session stop kills the run without a word, so each stretch of running (a *segment*: from a
start, restart or resume line of the log to the next one) ends at the last sign of life inside
it: a heartbeat, a stamped log line, or a ledger entry's last finished item. Without a
heartbeat (the segments before it existed) that undercounts: epochs trained and kept after the
last finished victim or cell are not seen. Pauses (`paused` / `continued` lines: the test suite
run beside it) are subtracted. The time before the `=== cpu run complete` line is the `cpu`
profile's, the time after it `cpu-extended`'s.

    python tools/cpu_walltime.py [--state state/cpu-run]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
DATE = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d UTC \d{4}")   # `date` output
SEGMENT = re.compile(r"^=== (start|restart|resume)\b")
SPLIT = "=== cpu run complete"
PROGRESS = re.compile(r"^\[ *\d+/\d+\] ")                        # a finished victim or cell
EPOCH = re.compile(r"^  (\S+ \S+): epoch \d+/\d+.*\((\d+) s\)$")   # a unit's finished epoch


def _stamp(line: str):
    m = ISO.search(line)
    if m:
        return dt.datetime.strptime(m.group(), "%Y-%m-%dT%H:%M:%SZ")
    m = DATE.search(line)
    return dt.datetime.strptime(" ".join(m.group().split()), "%a %b %d %H:%M:%S UTC %Y") if m else None


def segments(log: str, alive: str = "", ledger: list[dict] = ()) -> list[dict]:
    """Each stretch of running: start, end, what the end rests on, seconds paused, and the split
    time (the `cpu` profile's completion) if it falls inside."""
    events, segs, split, pause_at = [], [], None, None
    for line in log.splitlines():
        if segs and PROGRESS.match(line):
            segs[-1]["tail"] = {}
        elif segs and EPOCH.match(line):
            unit, sec = EPOCH.match(line).groups()
            segs[-1]["tail"][unit] = segs[-1]["tail"].get(unit, 0) + int(sec)
        t = _stamp(line)
        if t is None:
            continue
        if SEGMENT.match(line):
            segs.append({"start": t, "end": t, "end_from": "log", "paused_s": 0.0, "pauses": [], "tail": {}})
        elif line.startswith(SPLIT) and split is None:   # a resume replays the cached cpu blocks
            split = t                                       # and prints the line again: the first counts
        if line.startswith("paused"):
            pause_at = t
        elif line.startswith("continued") and pause_at is not None and segs:
            segs[-1]["pauses"].append((pause_at, t))
            pause_at = None
        events.append((t, "log"))
    events += [(t, "heartbeat") for t in map(_stamp, alive.splitlines()) if t is not None]
    for e in ledger:
        events += [(_stamp(e[k]), "ledger") for k in ("started", "last_progress") if e.get(k)]
        events += [(_stamp(e["ended"]), "ledger: ended")] if e.get("ended") else []
    for i, s in enumerate(segs):
        nxt = segs[i + 1]["start"] if i + 1 < len(segs) else dt.datetime.max
        inside = [(t, src) for t, src in events if s["start"] <= t < nxt]
        if inside:
            s["end"], s["end_from"] = max(inside, key=lambda e: (e[0], e[1] == "heartbeat"))
        progress = [t for t, src in inside if src == "ledger"]
        if s["end_from"] == "ledger" and s["tail"] and progress:
            # killed: the epochs logged after the last finished item ran in parallel, so the run
            # lasted at least the longest unit's sum past it (and not into the next segment)
            late = min(nxt, max(progress) + dt.timedelta(seconds=max(s["tail"].values())))
            if late > s["end"]:
                s["end"], s["end_from"] = late, "ledger + later epochs"
        s["paused_s"] = sum((min(b, s["end"]) - a).total_seconds() for a, b in s["pauses"] if a < s["end"])
        s["active_s"] = (s["end"] - s["start"]).total_seconds() - s["paused_s"]
        s["split"] = split if split and s["start"] <= split <= s["end"] else None
    return segs, split


def per_profile(segs: list[dict], split) -> dict:
    """Active seconds of `cpu` (before the split) and `cpu-extended` (after)."""
    out = {"cpu": 0.0, "cpu-extended": 0.0}
    for s in segs:
        if split is None or s["end"] <= split:
            out["cpu"] += s["active_s"]
        elif s["start"] >= split:
            out["cpu-extended"] += s["active_s"]
        else:   # pauses are rare and short: charge them to the side they fall in
            before = (split - s["start"]).total_seconds()
            before -= sum((min(b, split) - a).total_seconds() for a, b in s["pauses"] if a < split)
            out["cpu"] += before
            out["cpu-extended"] += s["active_s"] - before
    return out


def _hm(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def render(segs: list[dict], split) -> str:
    rows = ["| # | start (UTC) | end (UTC) | end rests on | paused | active |", "|---|---|---|---|---|---|"]
    for i, s in enumerate(segs, 1):
        rows.append(f"| {i} | {s['start']:%Y-%m-%d %H:%M:%S} | {s['end']:%H:%M:%S} | {s['end_from']} | "
                    f"{s['paused_s'] / 60:.1f} min | {_hm(s['active_s'])} |")
    tot = per_profile(segs, split)
    lines = ["## Wall time of the long run (tools/cpu_walltime.py)", "",
             "Each row is one stretch of running on the 2-core machine, from a start or resume of "
             "tools/cpu_run.sh to its last sign of life (a heartbeat a minute; before heartbeats "
             "existed, the ledger's last finished victim or cell, which misses the epochs trained "
             "and kept after it). Pauses for the test suite are subtracted.", "", *rows, "",
             f"- `cpu`: {_hm(tot['cpu'])} active" + ("" if split else " so far (not complete)"),
             f"- `cpu-extended`: {_hm(tot['cpu-extended'])} active"]
    # a stamped log line (a pause, a re-pin, the completion) ends a segment exactly; only an end
    # read from the ledger misses the work done after the last finished item
    n_lo = sum(s["end_from"] in ("ledger", "ledger + later epochs") for s in segs)
    if n_lo:
        lines.append(f"- {n_lo} segment(s) were killed before heartbeats existed: their ends, and so "
                     "these totals, are lower bounds.")
    return "\n".join(lines) + "\n"


def load(state: Path, runs: Path | None = None):
    """(log, alive, ledger entries) from a run's state folder: cpu.log, alive.log and the ledger
    (runs/*.json, default results/cpu-new/runs under it)."""
    log = (state / "cpu.log").read_text()
    alive = (state / "alive.log").read_text() if (state / "alive.log").exists() else ""
    runs = runs or state / "results" / "cpu-new" / "runs"
    ledger = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    return log, alive, ledger


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", default=str(Path(__file__).resolve().parents[1] / "state" / "cpu-run"),
                   help="folder holding cpu.log, alive.log and results/cpu-new/runs (default: state/cpu-run)")
    a = p.parse_args(argv)
    state = Path(a.state)
    if not (state / "cpu.log").exists():
        print(f"error: {state}/cpu.log not found: pass the run's state folder with --state", file=sys.stderr)
        return 2
    print(render(*segments(*load(state))), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
