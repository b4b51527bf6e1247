"""tools/cpu_walltime.py: the long run's active time from a made-up log, heartbeat and ledger."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tools_module import load_tool  # noqa: E402


def _tool():
    return load_tool("cpu_walltime")


LOG = """=== start Wed Nov 25 09:00:00 UTC 2026 session 10
=== block seed 0 mnist start 2026-11-25T09:00:00Z
  mnist/s0 vanilla: epoch 1/6: ce 0.3 (100 s)
[ 1/2] victim mnist/vanilla/0: ready | 1m elapsed
paused 2026-11-25T09:10:00Z
continued 2026-11-25T09:15:00Z
  mnist/s0 ini: epoch 1/6 (300 s)
  mnist/s0 ini: epoch 2/6 (300 s)
  mnist/s0 edm: epoch 1/6 (200 s)
=== resume 2026-11-25T11:00:00Z on AMD EPYC
=== block seed 0 mnist start 2026-11-25T11:00:00Z
=== cpu run complete 2026-11-25T11:30:00Z
"""
LEDGER = [{"started": "2026-11-25T09:00:01Z", "last_progress": "2026-11-25T09:20:00Z", "ended": None},
          {"started": "2026-11-25T11:00:01Z", "last_progress": "2026-11-25T11:29:00Z",
           "ended": "2026-11-25T11:29:59Z"}]
ALIVE = "2026-11-25T11:01:00Z\n2026-11-25T11:59:00Z\n"


def test_killed_segment_ends_after_its_logged_epochs_and_pauses_are_subtracted():
    t = _tool()
    segs, split = t.segments(LOG, ALIVE, LEDGER)
    assert len(segs) == 2
    first, second = segs
    # killed: last finished item 09:20:00, then ini logged 600 s (edm 200 s in parallel)
    assert first["end_from"] == "ledger + later epochs"
    assert first["end"].strftime("%H:%M:%S") == "09:30:00"
    assert first["paused_s"] == 300
    assert first["active_s"] == 30 * 60 - 300
    assert second["end_from"] == "heartbeat" and second["end"].strftime("%H:%M") == "11:59"
    assert split.strftime("%H:%M") == "11:30"
    tot = t.per_profile(segs, split)
    assert tot["cpu"] == 25 * 60 + 30 * 60
    assert tot["cpu-extended"] == 29 * 60


def test_a_resume_replaying_the_cached_cpu_blocks_does_not_move_the_split():
    """Every resume reruns the cpu blocks (all cached) and prints the completion line again:
    the profile finished at the first one, and the time after it is cpu-extended's."""
    t = _tool()
    log = LOG + "=== resume 2026-11-25T13:00:00Z on AMD EPYC\n=== cpu run complete 2026-11-25T13:00:05Z\n"
    segs, split = t.segments(log, ALIVE + "2026-11-25T14:00:00Z\n", LEDGER)
    assert split.strftime("%H:%M") == "11:30" and len(segs) == 3
    tot = t.per_profile(segs, split)
    assert tot["cpu"] == 25 * 60 + 30 * 60
    assert tot["cpu-extended"] == 29 * 60 + 60 * 60


def test_without_heartbeat_or_epochs_the_ledger_bounds_the_end_and_the_render_says_so():
    t = _tool()
    segs, split = t.segments(LOG.split("  mnist/s0 ini")[0], "", LEDGER[:1])
    assert segs[0]["end_from"] == "ledger" and segs[0]["end"].strftime("%H:%M") == "09:20"
    text = t.render(segs, split)
    assert "lower bounds" in text and "not complete" in text
    # a segment ended by a stamped log line (a pause, a re-pin, the completion) is exact
    exact = t.segments("=== start 2026-11-25T09:00:00Z\npaused 2026-11-25T09:30:00Z\n", "", [])
    assert exact[0][0]["end_from"] == "log" and "lower bounds" not in t.render(*exact)


def test_main_refuses_a_folder_without_a_log(tmp_path, capsys):
    assert _tool().main(["--state", str(tmp_path)]) == 2
    assert "cpu.log not found" in capsys.readouterr().err


def test_finalize_writes_the_wall_time_beside_the_records(tmp_path, monkeypatch):
    """cpu_finalize.main with a fake run: wall_time.md from the state folder's log; report stubbed."""
    fin = load_tool("cpu_finalize")
    state = tmp_path / "state"
    src = state / "results" / "cpu-new"
    (src / "records").mkdir(parents=True)
    (state / "cpu.log").write_text(LOG)
    monkeypatch.setattr(fin, "copy_profile", lambda *a: {})
    monkeypatch.setattr(fin.subprocess, "run", lambda *a, **k: None)
    assert fin.main(["--src", str(src), "--profiles", "cpu", "--dest-root", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "cpu" / "wall_time.md").read_text()
    assert "| 1 | 2026-11-25 09:00:00 |" in text
