"""bench.check: baseline update, pass within tolerance, fail beyond it, missing/failed cells,
bad input. The matrix runner is replaced by a fake writing synthetic records (not results)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench import check  # noqa: E402

BASE = {("mnist", "vanilla", "knockoff", "soft"): 90.0, ("mnist", "vanilla", "jbda", "hard"): 70.0,
        ("mnist", "mad", "knockoff", "soft"): 80.0}
BENIGN = {"vanilla": 98.0, "mad": 97.0}


@pytest.fixture
def matrix(monkeypatch):
    """Values the fake ci matrix will produce; tests edit them between runs."""
    state = {"clone": dict(BASE), "benign": dict(BENIGN), "failed": set(), "calls": 0}

    def fake_run_matrix(profile, out, **kw):
        state["calls"] += 1
        state["kw"] = kw
        recs = [S.victim("mnist", d, acc, profile=profile) for d, acc in state["benign"].items()]
        cells = [S.cell(ds, d, a, lb, acc, state["benign"][d], profile=profile,
                        status="failed" if (ds, d, a, lb) in state["failed"] else "ok")
                 for (ds, d, a, lb), acc in state["clone"].items()]
        S.write(recs + cells, Path(out))
        return cells

    def fake_profile(name):
        if name not in ("ci", "synth"):
            raise ValueError(f"unknown profile {name!r}. Valid profiles: ci")
    monkeypatch.setattr(check, "_run_matrix", fake_run_matrix)
    monkeypatch.setattr(check, "_get_profile", fake_profile)
    monkeypatch.setattr(check, "publish", lambda *a: None)   # rendering has its own tests
    monkeypatch.setattr(check, "git_commit", lambda: "start123")
    return state


def run(tmp_path, *args):
    return check.main(["--baseline", str(tmp_path / "ci" / "baseline.json"), *args])


@pytest.fixture
def baselined(matrix, tmp_path):
    assert run(tmp_path, "--update") == 0
    return matrix


def test_update_writes_baseline_with_commit(baselined, tmp_path):
    b = json.loads((tmp_path / "ci" / "baseline.json").read_text())
    assert b["profile"] == "ci" and b["commit"] == "start123"      # HEAD when the run began
    assert b["record_commits_other"] == ["abc123"]                  # what the records say
    assert b["cells"]["mnist/vanilla/knockoff/soft/0"] == {"clone_acc": 90.0}
    assert b["cells"]["mnist/mad/victim/-/0"] == {"benign_acc": 97.0}
    assert len(b["cells"]) == 5


def test_same_numbers_pass(baselined, tmp_path, capsys):
    assert run(tmp_path) == 0
    assert "0 moved, 0 regressions" in capsys.readouterr().out


def test_move_within_tolerance_passes_and_is_listed(baselined, tmp_path, capsys):
    baselined["clone"][("mnist", "vanilla", "knockoff", "soft")] = 91.5
    assert run(tmp_path, "--tolerance", "2.0") == 0
    out = capsys.readouterr().out
    assert "mnist/vanilla/knockoff/soft/0" in out and "within" in out and "+1.50" in out


@pytest.mark.parametrize("delta", [2.5, -2.5])
def test_move_beyond_tolerance_fails(baselined, tmp_path, capsys, delta):
    baselined["clone"][("mnist", "mad", "knockoff", "soft")] = 80.0 + delta
    assert run(tmp_path, "--tolerance", "2.0") == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_benign_accuracy_is_checked(baselined, tmp_path, capsys):
    baselined["benign"]["vanilla"] = 94.0
    assert run(tmp_path) == 1
    assert "mnist/vanilla/victim/-/0" in capsys.readouterr().out


def test_per_cell_tolerance_overrides_default(baselined, tmp_path):
    path = tmp_path / "ci" / "baseline.json"
    b = json.loads(path.read_text())
    b["cells"]["mnist/mad/knockoff/soft/0"]["tolerance"] = 5.0
    path.write_text(json.dumps(b))
    baselined["clone"][("mnist", "mad", "knockoff", "soft")] = 84.0
    assert run(tmp_path) == 0
    baselined["clone"][("mnist", "mad", "knockoff", "soft")] = 86.0
    assert run(tmp_path) == 1
    assert run(tmp_path, "--update") == 0   # an update keeps the hand-set tolerance
    assert json.loads(path.read_text())["cells"]["mnist/mad/knockoff/soft/0"]["tolerance"] == 5.0


def test_missing_cell_is_a_regression(baselined, tmp_path, capsys):
    del baselined["clone"][("mnist", "vanilla", "jbda", "hard")]
    assert run(tmp_path) == 1
    assert "MISSING" in capsys.readouterr().out


def test_failed_cell_is_a_regression(baselined, tmp_path, capsys):
    baselined["failed"].add(("mnist", "vanilla", "jbda", "hard"))
    assert run(tmp_path) == 1
    assert "FAILED" in capsys.readouterr().out


def test_new_cell_is_listed_but_passes(baselined, tmp_path, capsys):
    baselined["clone"][("mnist", "vanilla", "knockoff", "hard")] = 85.0
    assert run(tmp_path) == 0
    assert "new" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--profile", "nope"], "unknown profile"),
    ([], "no baseline"),
    (["--tolerance", "-1"], "--tolerance"),
])
def test_bad_input_exits_2_before_running(matrix, tmp_path, capsys, args, needle):
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert matrix["calls"] == 0


def test_unreadable_baseline_exits_2(matrix, tmp_path, capsys):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "baseline.json").write_text("{not json")
    assert run(tmp_path) == 2
    assert "cannot read baseline" in capsys.readouterr().err


def test_out_with_old_records_is_refused(baselined, tmp_path, capsys):
    (tmp_path / "old" / "records").mkdir(parents=True)
    assert run(tmp_path, "--out", str(tmp_path / "old")) == 2
    assert "already holds records" in capsys.readouterr().err


def test_update_publishes_records_and_tables(matrix, tmp_path, monkeypatch):
    monkeypatch.undo()   # the real publish, with the fake runner again
    monkeypatch.setattr(check, "_run_matrix", matrix_runner(matrix))
    monkeypatch.setattr(check, "_get_profile", lambda name: None)
    assert run(tmp_path, "--update") == 0
    ci = tmp_path / "ci"
    assert (ci / "records" / "cells").is_dir() and (ci / "table2.md").exists()
    assert "90.00 (0.92×)" in (ci / "table2.md").read_text()


def matrix_runner(state):
    def fake(profile, out, **kw):
        cells = [S.cell(ds, d, a, lb, acc, state["benign"][d], profile=profile)
                 for (ds, d, a, lb), acc in state["clone"].items()]
        S.write(cells, Path(out))
        return cells
    return fake


def test_update_refuses_failed_cells_unless_allowed(matrix, tmp_path, capsys):
    matrix["failed"].add(("mnist", "vanilla", "jbda", "hard"))
    assert run(tmp_path, "--update") == 1
    assert "baseline not written" in capsys.readouterr().err
    assert not (tmp_path / "ci" / "baseline.json").exists()
    assert run(tmp_path, "--update", "--allow-failed") == 0
    b = json.loads((tmp_path / "ci" / "baseline.json").read_text())
    assert b["cells"]["mnist/vanilla/jbda/hard/0"] == {"clone_acc": None}
    assert run(tmp_path) == 0                      # still failing: unchanged, not a regression
    matrix["failed"].clear()
    assert run(tmp_path) == 0                      # fixed: listed as new
    assert "new" in capsys.readouterr().out


def test_slice_is_recorded_and_rerun(matrix, tmp_path, capsys):
    assert run(tmp_path, "--update", "--datasets", "mnist", "--defenses", "vanilla,mad") == 0
    b = json.loads((tmp_path / "ci" / "baseline.json").read_text())
    assert b["slice"] == {"datasets": ["mnist"], "defenses": ["vanilla", "mad"]}
    matrix["kw"] = None
    assert run(tmp_path) == 0                       # no options: the baseline's slice again
    assert matrix["kw"]["datasets"] == ["mnist"] and matrix["kw"]["defenses"] == ["vanilla", "mad"]
    assert "slice: datasets mnist; defenses vanilla,mad" in capsys.readouterr().out
    run(tmp_path, "--defenses", "vanilla")          # options given win over the baseline's
    assert matrix["kw"]["defenses"] == ["vanilla"] and "datasets" not in matrix["kw"]


def test_bad_slice_in_baseline_exits_2(matrix, tmp_path, capsys):
    p = tmp_path / "ci" / "baseline.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"profile": "ci", "cells": {}, "slice": {"models": ["x"]}}))
    assert run(tmp_path) == 2
    assert "'slice'" in capsys.readouterr().err


def test_update_from_a_finished_run(real_root, tiny_profile, tmp_path, monkeypatch):
    """--from takes the slice's numbers from existing records (a real seconds-scale run)."""
    from bench import profiles
    from bench import run as runner
    monkeypatch.setitem(profiles.PROFILES, "tiny", tiny_profile)
    monkeypatch.setenv("STEALBENCH_DATA", real_root)
    (rec,) = runner.run_matrix("tiny", tmp_path / "run", attacks=["knockoff"], labels=["hard"],
                               data_root=real_root, progress=False)
    base = tmp_path / "slice" / "baseline.json"
    args = ["--profile", "tiny", "--baseline", str(base), "--update", "--attacks", "knockoff",
            "--labels", "hard"]
    assert check.main(args + ["--from", str(tmp_path / "run")]) == 0
    b = json.loads(base.read_text())
    assert b["cells"]["mnist/vanilla/knockoff/hard/0"]["clone_acc"] == round(rec.clone_acc, 4)
    assert b["slice"] == {"attacks": ["knockoff"], "labels": ["hard"]}
    assert b["commit"] == rec.provenance["git_commit"]
    # soft-label cells were never run there: refused, nothing written
    assert check.main(args[:-1] + ["soft", "--from", str(tmp_path / "run")]) == 2
    assert check.main(["--profile", "tiny", "--baseline", str(base), "--from", "x"]) == 2


def test_calibrate_widens_tolerances_from_a_noise_run(baselined, tmp_path, capsys):
    """A second run that moved one value by 2.5 points: that value gets 2 x 2.5, others the floor."""
    baselined["clone"][("mnist", "vanilla", "jbda", "hard")] = 72.5
    assert run(tmp_path, "--out", str(tmp_path / "noise")) == 1   # moved by 2.5 > 2: a regression
    assert run(tmp_path, "--calibrate", str(tmp_path / "noise")) == 0
    b = json.loads((tmp_path / "ci" / "baseline.json").read_text())
    assert b["cells"]["mnist/vanilla/jbda/hard/0"]["tolerance"] == {"clone_acc": 5.0}
    assert b["cells"]["mnist/vanilla/knockoff/soft/0"]["tolerance"] == {"clone_acc": 4.0}
    assert b["calibration"]["moved"]["mnist/vanilla/jbda/hard/0:clone_acc"] == 2.5
    assert run(tmp_path) == 0                                       # now within
    baselined["clone"][("mnist", "vanilla", "jbda", "hard")] = 76.0
    assert run(tmp_path) == 1                                       # 6 points is still caught
    assert run(tmp_path, "--calibrate", str(tmp_path / "nowhere")) == 2
