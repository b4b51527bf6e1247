"""A run beside the committed reference: verdicts against measured noise (synthetic records)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench import compare as C


def reference(tmp_path, values, baseline=None):
    recs = [S.cell("mnist", "vanilla", "knockoff", "soft", v, 98.0, seed=i) for i, v in enumerate(values)]
    recs += [S.victim("mnist", "vanilla", 98.0 + 0.1 * i, seed=i) for i in range(len(values))]
    S.write(recs, tmp_path)
    if baseline:
        (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    return tmp_path


def by_group(rows):
    return {r["group"]: r for r in rows}


def test_same_seed_compared_and_read_against_the_seed_spread(tmp_path):
    ref = reference(tmp_path, [60.0, 64.0, 62.0])           # seed sd 2.0
    run = [S.cell("mnist", "vanilla", "knockoff", "soft", 66.0, 98.2, seed=0)]
    r = by_group(C.compare(run, ref, "synth"))["mnist/vanilla/knockoff/soft"]
    assert r["reference"] == 60.0 and r["diff"] == 6.0          # seed 0 against seed 0
    assert r["tolerance"] == round(4 * 2.0 * 2 ** 0.5, 2) and r["verdict"] == "within noise"
    far = [S.cell("mnist", "vanilla", "knockoff", "soft", 75.0, 98.2, seed=0)]
    assert by_group(C.compare(far, ref, "synth"))["mnist/vanilla/knockoff/soft"]["verdict"] == "OUTSIDE noise"


def test_one_seed_everywhere_says_there_is_no_estimate(tmp_path):
    ref = reference(tmp_path, [60.0])
    rows = C.compare([S.cell("mnist", "vanilla", "knockoff", "soft", 61.0, 98.0, seed=0)], ref, "synth")
    assert by_group(rows)["mnist/vanilla/knockoff/soft"]["verdict"] == "no noise estimate"
    text = C.render(rows, ref, "abc123")
    assert "without a noise estimate" in text and "commit abc123" in text


def test_calibrated_tolerance_used_when_the_run_has_the_baselines_seeds(tmp_path):
    g = {"tolerance": 1.25, "noise": {"seed_sd": 0.1, "df": 4, "platform_dev": 0.2}}
    base = {"seeds": [0, 1, 2], "rule": {"margin": 1.5}, "groups": {"mnist/vanilla/knockoff/soft": g}}
    ref = reference(tmp_path, [60.0, 61.0, 62.0], base)
    run = [S.cell("mnist", "vanilla", "knockoff", "soft", v, 98.0, seed=i) for i, v in enumerate([62.0, 63.0, 62.5])]
    r = by_group(C.compare(run, ref, "synth"))["mnist/vanilla/knockoff/soft"]
    assert r["tolerance"] == 1.25 and r["how"].startswith("calibrated") and r["verdict"] == "OUTSIDE noise"


def test_no_reference_folder(tmp_path):
    assert C.compare([], tmp_path / "nothing", "synth") == []
    assert "no committed reference" in C.render([], tmp_path / "nothing", None)


def test_run_defaults_to_runs_folder(capsys):
    from bench import run
    assert run.main(["--matrix", "smoke", "--dry-run"]) == 0
    assert run.RUNS.name == "runs" and run.REFERENCE == Path(run.__file__).resolve().parents[1] / "results"
