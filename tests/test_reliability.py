"""Scale-out and reliability: Dask backend, failure isolation, SIGTERM and resume, bad input."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench import run as runner
from bench.profiles import PROFILES

REPO = Path(__file__).resolve().parents[1]


def metrics(records):
    return sorted((r.dataset, r.defense, r.attack, r.label, r.seed, r.status, r.benign_acc, r.clone_acc,
                   r.fidelity, r.queries_used) for r in records)


def record_files(out):
    return {p.name: p.read_bytes() for p in (Path(out) / "records" / "cells").glob("*.json")}


@pytest.fixture
def small(tiny_profile):
    return replace(tiny_profile, attacks={"knockoff": {"budget": 200, "epochs": 1},
                                          "jbda": {"seed_size": 10, "rounds": 2, "epochs_per_round": 1}})


def test_dask_local_cluster_matches_local_processes(real_root, small, tmp_path):
    pytest.importorskip("dask.distributed")
    local = runner.run_matrix(small, tmp_path / "local", jobs=2, data_root=real_root, progress=False)
    dask = runner.run_matrix(small, tmp_path / "dask", jobs=2, data_root=real_root, progress=False,
                             backend="dask")
    assert all(r.status == "ok" for r in local + dask)
    assert metrics(local) == metrics(dask)


def test_failed_cell_is_isolated(real_root, small, tmp_path, monkeypatch, capsys):
    import attacks.jbda
    monkeypatch.setattr(attacks.jbda.JBDA, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    monkeypatch.setitem(PROFILES, "tiny", small)
    rc = runner.main(["--matrix", "tiny", "--out", str(tmp_path), "--data-root", real_root, "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "FAILED mnist/vanilla/jbda/soft/s0: RuntimeError: boom" in err
    recs = [json.loads(p.read_text()) for p in (tmp_path / "records" / "cells").glob("*.json")]
    assert sorted(r["status"] for r in recs) == ["failed", "failed", "ok", "ok"]
    failed = [r for r in recs if r["status"] == "failed"]
    assert all("boom" in r["traceback"] for r in failed)
    # --retry-failed re-runs only the failed cells
    monkeypatch.undo()
    monkeypatch.setitem(PROFILES, "tiny", small)
    before = record_files(tmp_path)
    ok_names = [n for n, b in before.items() if json.loads(b)["status"] == "ok"]
    assert runner.main(["--matrix", "tiny", "--out", str(tmp_path), "--data-root", real_root,
                        "--no-progress", "--retry-failed"]) == 0
    after = record_files(tmp_path)
    assert all(after[n] == before[n] for n in ok_names)


SCRIPT = textwrap.dedent("""
    import sys
    from dataclasses import replace
    from bench.profiles import PROFILES, get_profile
    from bench.train import TrainConfig
    PROFILES["tiny"] = replace(get_profile("smoke"), name="tiny", train_size=1000, test_size=500,
        query_size=1000, ood_size=500, val_size=200, train={"mnist": TrainConfig(epochs=1, lr=0.05, step_every=1)},
        attacks={"knockoff": {"budget": 300, "epochs": 2}, "jbda": {"seed_size": 20, "rounds": 3, "epochs_per_round": 3}})
    from bench.run import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_then_resume(real_root, tmp_path):
    script = tmp_path / "run_tiny.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(script), "--matrix", "tiny", "--data-root", real_root, "--no-progress"]
    # reference: an uninterrupted run
    subprocess.run(cmd + ["--out", str(tmp_path / "ref")], env=env, check=True, capture_output=True, cwd=REPO)
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(record_files(out)) < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    finished = record_files(out)
    assert 1 <= len(finished) < 4, "expected to stop mid-run"
    assert proc.returncode == 130 and b"resume" in err
    assert not list(out.rglob("*.tmp")), "a partial file is visible"
    subprocess.run(cmd + ["--out", str(out)], env=env, check=True, capture_output=True, cwd=REPO)
    resumed = record_files(out)
    assert all(resumed[n] == b for n, b in finished.items()), "a finished cell was recomputed"
    ref = {n: json.loads(b) for n, b in record_files(tmp_path / "ref").items()}
    got = {n: json.loads(b) for n, b in resumed.items()}
    assert ref.keys() == got.keys()
    for n in ref:
        assert (ref[n]["clone_acc"], ref[n]["benign_acc"]) == (got[n]["clone_acc"], got[n]["benign_acc"])


def test_second_run_on_same_folder_is_refused(tmp_path, capsys):
    with runner.results_lock(tmp_path):
        assert runner.main(["--matrix", "smoke", "--out", str(tmp_path)]) == 2
    assert "another run is using" in capsys.readouterr().err


def test_git_commit_is_read_once_when_the_process_starts(monkeypatch):
    """A record names the code its process loaded, even if HEAD moves during a long run."""
    import subprocess
    from bench import io
    before = io.git_commit()

    def moved(*a, **k):
        raise AssertionError("git must not be asked again")
    monkeypatch.setattr(subprocess, "run", moved)
    assert io.git_commit() == before and io.provenance()["git_commit"] == before
