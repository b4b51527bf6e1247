"""bench.check: per-group means over seeds, baseline update, pass within tolerance, fail beyond
it, calibration across platforms, missing/failed cells, bad input. The matrix runner is replaced by a fake writing synthetic records (not results)."""
import json
import math
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench import check  # noqa: E402
from bench import records as R  # noqa: E402

BASE = {("mnist", "vanilla", "knockoff", "soft"): 90.0, ("mnist", "vanilla", "jbda", "hard"): 70.0,
        ("mnist", "mad", "knockoff", "soft"): 80.0}
BENIGN = {"vanilla": 98.0, "mad": 97.0}
SPREAD = {0: -1.0, 1: 0.0, 2: 1.0}   # seed offsets: every group's seed sd is 1.0


@pytest.fixture
def matrix(monkeypatch):
    """Values the fake ci matrix will produce (per seed: value + SPREAD[seed]); tests edit them."""
    state = {"clone": dict(BASE), "benign": dict(BENIGN), "failed": set(), "calls": 0}

    def fake_run_matrix(profile, out, **kw):
        state["calls"] += 1
        state["kw"] = kw
        seeds = kw.get("seeds") or [0, 1, 2]
        recs = [S.victim("mnist", d, acc + SPREAD.get(s, 0), seed=s, profile=profile)
                for d, acc in state["benign"].items() for s in seeds]
        cells = [S.cell(ds, d, a, lb, acc + SPREAD.get(s, 0), state["benign"][d], seed=s, profile=profile,
                        status="failed" if (ds, d, a, lb) in state["failed"] else "ok")
                 for (ds, d, a, lb), acc in state["clone"].items() for s in seeds]
        S.write(recs + cells, Path(out))
        return cells

    def fake_profile(name):
        if name not in ("ci", "synth"):
            raise ValueError(f"unknown profile {name!r}. Valid profiles: ci")
    monkeypatch.setattr(check, "_run_matrix", fake_run_matrix)
    monkeypatch.setattr(check, "_get_profile", fake_profile)
    monkeypatch.setattr(check, "publish", lambda *a: None)   # rendering has its own tests
    monkeypatch.setattr(check, "git_commit", lambda: "start123")
    monkeypatch.setattr(check, "collect", load_records)      # no profile to look cache keys up in
    return state


def load_records(profile, src, slice_, seeds, dest=None):
    recs = R.load_all(src)
    return [r for r in recs if r.kind == "cell"], [r for r in recs if r.kind == "victim"]


def run(tmp_path, *args):
    return check.main(["--baseline", str(tmp_path / "ci" / "baseline.json"), *args])


def baseline_json(tmp_path):
    return json.loads((tmp_path / "ci" / "baseline.json").read_text())


# z * sd * sqrt(2 / n) with sd 1 and 3 seeds
TOL = round(4.0 * 1.0 * math.sqrt(2 / 3), 2)


@pytest.fixture
def baselined(matrix, tmp_path):
    assert run(tmp_path, "--update") == 0
    return matrix


def test_update_writes_per_seed_values_mean_and_tolerance(baselined, tmp_path):
    b = baseline_json(tmp_path)
    assert b["schema"] == 2 and b["profile"] == "ci" and b["commit"] == "start123"  # HEAD at start
    assert b["record_commits_other"] == ["abc123"] and b["seeds"] == [0, 1, 2]
    g = b["groups"]["mnist/vanilla/knockoff/soft"]
    assert g["values"] == {"0": 89.0, "1": 90.0, "2": 91.0} and g["mean"] == 90.0 and g["std"] == 1.0
    assert g["tolerance"] == TOL and g["noise"]["seed_sd"] == 1.0 and g["noise"]["df"] == 2
    assert b["groups"]["mnist/mad/victim"]["mean"] == 97.0
    assert len(b["groups"]) == 5


def test_same_numbers_pass(baselined, tmp_path, capsys):
    assert run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "5 groups checked (5 compared): 0 regressions" in out and "90.00 ± 1.00 (3)" in out


def test_mean_shift_within_tolerance_passes(baselined, tmp_path, capsys):
    baselined["clone"][("mnist", "vanilla", "knockoff", "soft")] = 90.0 + TOL - 0.1
    assert run(tmp_path) == 0
    assert "within" in capsys.readouterr().out


@pytest.mark.parametrize("sign", [1, -1])
def test_mean_shift_beyond_tolerance_fails(baselined, tmp_path, capsys, sign):
    baselined["clone"][("mnist", "mad", "knockoff", "soft")] = 80.0 + sign * (TOL + 0.1)
    assert run(tmp_path) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "worst group: mnist/mad/knockoff/soft" in out


def test_one_seed_alone_is_averaged_out(baselined, tmp_path, monkeypatch):
    """A single seed moving by 2 x tolerance moves the mean by 2/3 of it: not a regression."""
    monkeypatch.setitem(SPREAD, 2, 1.0 + 2 * TOL)
    assert run(tmp_path, "--seeds", "0,1,2") == 0


def test_benign_accuracy_is_checked(baselined, tmp_path, capsys):
    baselined["benign"]["vanilla"] = 94.0
    assert run(tmp_path) == 1
    assert "mnist/vanilla/victim" in capsys.readouterr().out


def test_fixed_tolerance_overrides_and_survives_update(baselined, tmp_path):
    path = tmp_path / "ci" / "baseline.json"
    b = baseline_json(tmp_path)
    b["groups"]["mnist/mad/knockoff/soft"]["tolerance_fixed"] = 5.0
    b["groups"]["mnist/mad/knockoff/soft"]["tolerance"] = 5.0
    path.write_text(json.dumps(b))
    baselined["clone"][("mnist", "mad", "knockoff", "soft")] = 84.0
    assert run(tmp_path) == 0
    baselined["clone"][("mnist", "mad", "knockoff", "soft")] = 86.0
    assert run(tmp_path) == 1
    assert run(tmp_path, "--update") == 0   # an update keeps the hand-set tolerance
    assert baseline_json(tmp_path)["groups"]["mnist/mad/knockoff/soft"]["tolerance"] == 5.0


def test_missing_group_is_a_regression(baselined, tmp_path, capsys):
    del baselined["clone"][("mnist", "vanilla", "jbda", "hard")]
    assert run(tmp_path) == 1
    assert "MISSING" in capsys.readouterr().out


def test_failed_cell_is_a_regression(baselined, tmp_path, capsys):
    baselined["failed"].add(("mnist", "vanilla", "jbda", "hard"))
    assert run(tmp_path) == 1
    assert "FAILED" in capsys.readouterr().out


def test_new_group_is_listed_but_passes(baselined, tmp_path, capsys):
    baselined["clone"][("mnist", "vanilla", "knockoff", "hard")] = 85.0
    assert run(tmp_path) == 0
    assert "new" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--profile", "nope"], "unknown profile"),
    ([], "no baseline"),
    (["--jobs", "0"], "--jobs"),
])
def test_bad_input_exits_2_before_running(matrix, tmp_path, capsys, args, needle):
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert matrix["calls"] == 0


def test_fewer_than_three_seeds_are_refused(matrix, tmp_path, capsys):
    assert run(tmp_path, "--update", "--seeds", "0,1") == 2
    assert "at least 3 seeds" in capsys.readouterr().err and matrix["calls"] == 0


def test_seeds_are_recorded_and_rerun(matrix, tmp_path):
    assert run(tmp_path, "--update", "--seeds", "3,4,5,6") == 0
    assert baseline_json(tmp_path)["seeds"] == [3, 4, 5, 6]
    assert run(tmp_path) == 0 and matrix["kw"]["seeds"] == [3, 4, 5, 6]


def test_unreadable_or_old_baseline_exits_2(matrix, tmp_path, capsys):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "baseline.json").write_text("{not json")
    assert run(tmp_path) == 2
    assert "cannot read baseline" in capsys.readouterr().err
    (tmp_path / "ci" / "baseline.json").write_text(json.dumps({"profile": "ci", "cells": {}}))
    assert run(tmp_path) == 2
    assert "schema-2" in capsys.readouterr().err


def test_out_with_old_records_is_refused(baselined, tmp_path, capsys):
    (tmp_path / "old" / "records").mkdir(parents=True)
    assert run(tmp_path, "--out", str(tmp_path / "old")) == 2
    assert "already holds records" in capsys.readouterr().err


def test_resume_goes_on_in_a_stopped_runs_folder(baselined, tmp_path, capsys):
    (tmp_path / "old" / "records").mkdir(parents=True)
    assert run(tmp_path, "--resume", "--out", str(tmp_path / "old")) == 0
    assert baselined["kw"] and baselined["calls"] == 2
    assert run(tmp_path, "--resume") == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_update_publishes_records_and_tables(matrix, tmp_path, monkeypatch):
    monkeypatch.undo()   # the real publish, with the fake runner again
    monkeypatch.setattr(check, "_run_matrix", matrix_runner(matrix))
    monkeypatch.setattr(check, "_get_profile", lambda name: None)
    assert run(tmp_path, "--update") == 0
    ci = tmp_path / "ci"
    assert (ci / "records" / "cells").is_dir() and (ci / "table2.md").exists()


def matrix_runner(state):
    def fake(profile, out, **kw):
        cells = [S.cell(ds, d, a, lb, acc, state["benign"][d], seed=s, profile=profile)
                 for (ds, d, a, lb), acc in state["clone"].items() for s in kw["seeds"]]
        S.write(cells, Path(out))
        return cells
    return fake


def test_update_refuses_failed_cells_unless_allowed(matrix, tmp_path, capsys):
    matrix["failed"].add(("mnist", "vanilla", "jbda", "hard"))
    assert run(tmp_path, "--update") == 1
    assert "baseline not written" in capsys.readouterr().err
    assert not (tmp_path / "ci" / "baseline.json").exists()
    assert run(tmp_path, "--update", "--allow-failed") == 0
    assert baseline_json(tmp_path)["groups"]["mnist/vanilla/jbda/hard"]["mean"] is None
    assert run(tmp_path) == 0                      # still failing: unchanged, not a regression
    matrix["failed"].clear()
    assert run(tmp_path) == 0                      # fixed: listed as new
    assert "new" in capsys.readouterr().out


def test_slice_is_recorded_and_rerun(matrix, tmp_path, capsys):
    assert run(tmp_path, "--update", "--datasets", "mnist", "--defenses", "vanilla,mad") == 0
    assert baseline_json(tmp_path)["slice"] == {"datasets": ["mnist"], "defenses": ["vanilla", "mad"]}
    matrix["kw"] = None
    assert run(tmp_path) == 0                       # no options: the baseline's slice again
    assert matrix["kw"]["datasets"] == ["mnist"] and matrix["kw"]["defenses"] == ["vanilla", "mad"]
    assert "slice: datasets mnist; defenses vanilla,mad" in capsys.readouterr().out
    run(tmp_path, "--defenses", "vanilla")          # options given win over the baseline's
    assert matrix["kw"]["defenses"] == ["vanilla"] and "datasets" not in matrix["kw"]


def test_bad_slice_in_baseline_exits_2(matrix, tmp_path, capsys):
    p = tmp_path / "ci" / "baseline.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"schema": 2, "profile": "ci", "groups": {}, "slice": {"models": ["x"]}}))
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
    args = ["--profile", "tiny", "--baseline", str(base), "--seeds", "0", "--allow-few-seeds",
            "--update", "--attacks", "knockoff", "--labels", "hard"]
    assert check.main(args + ["--from", str(tmp_path / "run")]) == 0
    b = json.loads(base.read_text())
    assert b["groups"]["mnist/vanilla/knockoff/hard"]["values"] == {"0": round(rec.clone_acc, 4)}
    assert b["slice"] == {"attacks": ["knockoff"], "labels": ["hard"]}
    assert b["commit"] == rec.provenance["git_commit"]
    # soft-label cells were never run there: refused, nothing written
    assert check.main(args[:-1] + ["soft", "--from", str(tmp_path / "run")]) == 2
    assert check.main(["--profile", "tiny", "--baseline", str(base), "--seeds", "0", "--allow-few-seeds",
                       "--from", str(tmp_path / "nowhere")]) == 2
    # without --update: a check of the finished run's records, nothing re-run
    assert check.main(["--profile", "tiny", "--baseline", str(base), "--seeds", "0", "--allow-few-seeds",
                       "--from", str(tmp_path / "run")]) == 0
    # the profile defaults to the one the baseline names (before: always ci, refused with exit 2)
    assert check.main(["--baseline", str(base), "--seeds", "0", "--allow-few-seeds",
                       "--from", str(tmp_path / "run")]) == 0


def test_calibrate_widens_tolerances_from_platform_runs(baselined, tmp_path, capsys):
    """A run on another platform moved one group's mean by 2 x TOL: its tolerance becomes
    1.5 x that, and that platform passes; other groups keep the seed-spread tolerance."""
    baselined["clone"][("mnist", "vanilla", "jbda", "hard")] = 70.0 + 2 * TOL
    assert run(tmp_path, "--out", str(tmp_path / "noise")) == 1   # a regression before calibrating
    assert run(tmp_path, "--calibrate", str(tmp_path / "noise")) == 0
    b = baseline_json(tmp_path)
    g = b["groups"]["mnist/vanilla/jbda/hard"]
    assert g["noise"]["platform_dev"] == pytest.approx(2 * TOL) and g["noise"]["df"] == 4
    assert g["tolerance"] == pytest.approx(1.5 * 2 * TOL)
    assert b["groups"]["mnist/vanilla/knockoff/soft"]["tolerance"] == TOL
    assert len(b["calibration"]["runs"]) == 1
    table = (tmp_path / "ci" / "calibration.md").read_text()
    assert "| mnist/vanilla/jbda/hard" in table and "- P1: " in table
    assert run(tmp_path) == 0                                       # now within
    baselined["clone"][("mnist", "vanilla", "jbda", "hard")] = 70.0 + 3.1 * TOL
    assert run(tmp_path) == 1                                       # further is still caught
    assert run(tmp_path, "--calibrate", str(tmp_path / "nowhere")) == 2


def test_calibration_pools_the_seed_spread(baselined, tmp_path, monkeypatch):
    """A platform whose seeds spread 3x wider widens every tolerance through the pooled sd."""
    for s, off in {0: -3.0, 1: 0.0, 2: 3.0}.items():
        monkeypatch.setitem(SPREAD, s, off)
    assert run(tmp_path, "--out", str(tmp_path / "wide")) == 0
    assert run(tmp_path, "--calibrate", str(tmp_path / "wide")) == 0
    g = baseline_json(tmp_path)["groups"]["mnist/mad/victim"]
    assert g["noise"]["seed_sd"] == pytest.approx(math.sqrt((2 + 18) / 4), abs=1e-3)
    assert g["tolerance"] == pytest.approx(4.0 * math.sqrt(5) * math.sqrt(2 / 3), abs=0.01)


def test_calibrate_can_set_the_rule(baselined, tmp_path):
    assert run(tmp_path, "--out", str(tmp_path / "same")) == 0
    assert run(tmp_path, "--calibrate", str(tmp_path / "same"), "--floor", "5", "--z", "2") == 0
    b = baseline_json(tmp_path)
    assert b["rule"] == {"z": 2.0, "floor": 5.0, "margin": 1.5}
    assert b["groups"]["mnist/mad/victim"]["tolerance"] == 5.0       # the floor wins over 2 x 0.82


def test_a_narrower_slice_checks_only_its_groups(baselined, tmp_path, capsys):
    baselined["clone"] = {k: v for k, v in baselined["clone"].items() if k[1] == "mad"}
    baselined["benign"] = {"mad": 97.0}
    assert run(tmp_path, "--defenses", "mad") == 0
    out = capsys.readouterr().out
    assert "2 groups checked" in out and "vanilla" not in out.split("baseline:")[0]
    assert check.in_slice("mnist/mad/victim", {"defenses": ["mad"], "labels": ["soft"]})
    assert not check.in_slice("mnist/mad/knockoff/hard", {"labels": ["soft"]})


def test_update_replaces_an_old_schema_baseline(matrix, tmp_path, capsys):
    p = tmp_path / "ci" / "baseline.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"schema": 1, "profile": "ci", "cells": {}}))
    assert run(tmp_path, "--update") == 0
    assert "replacing" in capsys.readouterr().err and baseline_json(tmp_path)["schema"] == 2


def test_check_runs_in_the_baselines_memory_format(matrix, tmp_path, monkeypatch):
    """The memory format moves short-run numbers like a kernel path: a check re-runs the matrix in
    the baseline's (older baselines: NCHW), whatever the caller's environment says, and restores it."""
    seen = []
    fake = check._run_matrix
    def spy(*a, **kw):
        seen.append(os.environ.get("STEALBENCH_CHANNELS_LAST"))
        return fake(*a, **kw)
    monkeypatch.setattr(check, "_run_matrix", spy)
    monkeypatch.setenv("STEALBENCH_CHANNELS_LAST", "1")
    assert run(tmp_path, "--update") == 0
    b = baseline_json(tmp_path)
    assert seen == ["1"] and b["memory_format"] == "contiguous"   # synthetic records name no format
    assert run(tmp_path) == 0 and seen[-1] == "0"
    b["memory_format"] = "channels_last"
    (tmp_path / "ci" / "baseline.json").write_text(json.dumps(b))
    monkeypatch.delenv("STEALBENCH_CHANNELS_LAST")
    assert run(tmp_path) == 0 and seen[-1] == "1"
    assert "STEALBENCH_CHANNELS_LAST" not in os.environ
    del b["memory_format"]   # a baseline from before the field: NCHW
    (tmp_path / "ci" / "baseline.json").write_text(json.dumps(b))
    assert run(tmp_path) == 0 and seen[-1] == "0"


def test_memory_format_of_records():
    from bench.baseline import memory_format_of

    def rec(platform):
        r = S.cell("mnist", "vanilla", "knockoff", "soft", 90.0, 98.0)
        r.provenance["platform"] = platform
        return r
    assert memory_format_of([rec({"memory_format": "channels_last"})]) == "channels_last"
    assert memory_format_of([rec({"env": {"STEALBENCH_CHANNELS_LAST": "1"}})]) == "channels_last"
    assert memory_format_of([rec({"env": {}}), rec({})]) == "contiguous"


def test_another_torch_than_the_baselines_is_named(baselined, tmp_path, capsys, monkeypatch):
    """The tolerances hold for the kernels they were calibrated on: a run on another torch says so."""
    monkeypatch.setattr(check, "torch_of", lambda records: "x")
    b = baseline_json(tmp_path)
    b["versions"] = {"torch": "x"}
    (tmp_path / "ci" / "baseline.json").write_text(json.dumps(b))
    assert run(tmp_path) == 0
    assert "not the baseline's" not in capsys.readouterr().out
    b["versions"] = {"torch": "2.14.1+cu130"}
    (tmp_path / "ci" / "baseline.json").write_text(json.dumps(b))
    assert run(tmp_path) == 0
    assert "torch x is not the baseline's 2.14.1+cu130" in capsys.readouterr().out


def test_torch_of_reads_the_records_provenance():
    recs = [S.victim("mnist", "vanilla", 98.0), S.victim("mnist", "mad", 97.0)]
    assert check.torch_of(recs) is None
    recs[1].provenance["versions"] = {"torch": "2.14.1+cu130"}
    assert check.torch_of(recs) == "2.14.1+cu130"
