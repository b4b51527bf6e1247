"""The run ledger (bench/ledger.py): each bench.run invocation's wall time, kept across stops."""
import json
from dataclasses import replace

import pytest

from bench import ledger
from bench import run as runner


@pytest.mark.usefixtures("one_thread")
def test_each_invocation_that_runs_something_leaves_an_entry(real_root, tiny_profile, tmp_path):
    p = replace(tiny_profile, attacks={"knockoff": {"budget": 300, "epochs": 1, "lr": 0.01}}, labels=("hard",))
    runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)
    (entry,) = ledger.load(tmp_path, "tiny")
    assert entry["status"] == "done" and entry["finished"] == {"victim": 1, "cell": 1} == entry["planned"]
    assert entry["wall_s"] > 0 and entry["ended"] and entry["git_commit"]
    (tmp_path / "profile.json").write_text('{"provenance": {"git_commit": "the run that made them"}}')
    runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)   # all cached: nothing to log
    assert len(ledger.load(tmp_path, "tiny")) == 1
    assert "the run that made them" in (tmp_path / "profile.json").read_text()   # not restamped


def test_an_interrupted_invocation_says_so_and_counts_its_finished_work(tmp_path, monkeypatch):
    """A cell raising KeyboardInterrupt (Ctrl-C, SIGTERM) closes the entry as interrupted."""
    from bench.profiles import get_profile
    p = replace(get_profile("smoke"), name="tiny", attacks={"knockoff": {}}, labels=("soft",))
    monkeypatch.setattr(runner, "cached_cell", lambda *a: None)
    monkeypatch.setattr(runner, "_victim_worker", lambda *a: None)

    def stop(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "_worker", stop)
    with pytest.raises(KeyboardInterrupt):
        runner.run_matrix(p, tmp_path, progress=False)
    (entry,) = ledger.load(tmp_path)
    assert entry["status"] == "interrupted" and entry["finished"] == {"victim": 1, "cell": 0}


def test_summary_adds_invocations_and_counts_killed_ones_to_their_last_item(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    base = {"profile": "cpu", "git_commit": "abc123", "cpu_model": "AMD EPYC"}
    entries = [{**base, "started": "2026-11-25T01:00:00Z", "ended": "2026-11-25T02:00:00Z", "status": "done",
                "wall_s": 3600.0, "last_progress": "2026-11-25T02:00:00Z"},
               {**base, "started": "2026-11-26T01:00:00Z", "ended": None, "status": "running",
                "wall_s": 1800.0, "last_progress": "2026-11-26T01:30:00Z"},
               {**base, "profile": "other", "started": "2026-11-27T01:00:00Z", "wall_s": 99999.0}]
    for i, e in enumerate(entries):
        (runs / f"{i}.json").write_text(json.dumps(e))
    (runs / "broken.json").write_text("{")
    line = ledger.summary(ledger.load(tmp_path, "cpu"))
    assert "1h30m over 2 invocation(s)" in line and "1 stopped before the end" in line
    assert "2026-11-26T01:30:00Z" in line and ledger.summary([]) is None
