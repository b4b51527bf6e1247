"""bench.speed: cost-model arithmetic, the timer, the CLI on a tiny model, error exits.

All inputs are random tensors generated here (timing needs shapes, not real data).
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import speed
from bench.timing import time_runs
from defenses.base import Defense

ROOT = Path(__file__).resolve().parents[1]
PRIM = {"M_f": 2.0, "M_h": 0.5, "M_b": 0.1, "S": 0.01, "M_f1": 0.3, "M_b_full": 1.0, "S_argmax": 0.2}


def first(kind, impl="", B=4, prim=PRIM):
    return speed.predict(kind, impl, prim, B, 10, 5)[0][0]


def test_cost_model_paper_formulas():
    assert first("vanilla") == 2.0 and first("ini") == 2.0          # M_f
    assert first("am") == 4.0                                      # 2 M_f
    assert first("edm", "batched") == 5 * 2.0 + 0.5                # n M_f + M_h
    assert first("edm", "routed") == 2.0 + 0.5                     # M_f + M_h
    assert first("mad", "reference") == pytest.approx(2.0 + 4 * (10 * 0.1 + 0.01))
    assert first("mad-argmax", "reference") == pytest.approx(2.0 + 4 * (10 * 0.1 + 0.2))
    assert first("mad", "batched") == 4.0
    assert first("unknown-defense") is None


def test_cost_model_mad_reference_extra_rows_and_batch_scaling():
    rows = speed.predict("mad", "reference", PRIM, 4, 10, 5)
    assert [t for t, _ in rows] == pytest.approx([6.04, 2.0 + 4 * (0.3 + 1.0 + 0.01), 2.0 + 4 * (10.0 + 0.01)])
    # per-query terms grow linearly with B, M_f does not
    t1, t8 = first("mad", "reference", B=1), first("mad", "reference", B=8)
    assert t8 - 2.0 == pytest.approx(8 * (t1 - 2.0))
    assert speed.predict("mad", "reference", {"M_f": 1.0}, 4, 10)[0][0] is None  # missing primitive


def test_time_runs_counts_warmup_and_runs():
    calls = []
    t = time_runs(lambda: calls.append(1), runs=3, warmup=2, progress=False)
    assert len(calls) == 5 and t.runs == 3 and len(t.per_run_s) == 3
    assert t.total_s == pytest.approx(sum(t.per_run_s))
    assert t.summary()["runs"] == 3
    with pytest.raises(ValueError):
        time_runs(lambda: None, runs=0)


class _StubDefense(Defense):
    """Unregistered stand-in: counts served calls."""
    name = "stub"
    calls = 0

    def _build(self, ctx):
        self.nets["m"] = torch.nn.Linear(1, 1)

    def _proba(self, x):
        type(self).calls += 1
        return torch.full((len(x), 10), 0.1)


def test_time_served_runs_and_cell_budget():
    ctx = speed.make_context("smallcnn", "cpu", n=8)
    d = _StubDefense()
    d.build(ctx)
    t = speed.time_served(d, 2, runs=3, warmup=2, device="cpu", desc="", progress=False)
    assert t.runs == 3 and _StubDefense.calls == 5  # 1 estimate + 1 more warm-up + 3 timed
    # a tiny budget cuts the timed runs (the cell is then extrapolated)
    t = speed.time_served(d, 2, runs=10 ** 6, warmup=0, device="cpu", desc="", progress=False,
                          cell_budget=1e-3)
    assert 1 <= t.runs < 10 ** 6


def test_variants_label_paper_style_and_ours():
    vs = speed.variants("mad")
    assert {(v.impl, v.style) for v in vs} == {("reference", "paper-style"), ("batched", "ours")}
    assert all(v.make().params["impl"] == v.impl for v in vs)
    assert [v.params for v in speed.variants("vanilla")] == [()]
    assert {v.kind for v in speed.variants("ini+mad")} == {"mad"}


def test_cli_tiny_model_three_runs(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    rc = speed.main(["--device", "cpu", "--arch", "smallcnn", "--batch-sizes", "1,2", "--runs", "3",
                     "--defenses", "vanilla,mad", "--out", str(tmp_path), "--quiet", "--threads", "1"])
    assert torch.get_num_threads() == threads_before
    assert rc == 0
    rec = json.loads((tmp_path / "speed.json").read_text())
    assert rec["runs"] == 3 and rec["batch_sizes"] == [1, 2]
    assert "random initialization" in rec["weights"] and rec["provenance"]["git_commit"]
    labels = {(r["label"], r["batch_size"]) for r in rec["rows"]}
    assert len(labels) == 6  # vanilla + 2 MAD implementations, 2 batch sizes
    for r in rec["rows"]:
        assert r["runs_timed"] == 3 and len(r["per_run_s"]) == 3 and r["total_s"] > 0
        if r["defense"] == "vanilla":
            assert r["ratio_to_vanilla"] == 1.0
        assert r["predictions"][0]["predicted_per_batch_s"] > 0
    assert rec["primitives"]["2"]["S"] > 0
    table = (tmp_path / "table4.md").read_text()
    assert "MAD [reference, paper-style]" in table and "M_f + B(C·M_b + S)" in table
    assert (tmp_path / "figure4.png").stat().st_size > 10_000


def test_cli_train_tiny(tmp_path):
    rc = speed.main(["--train", "--device", "cpu", "--arch", "smallcnn", "--defenses", "vanilla",
                     "--train-size", "16", "--epochs", "1", "--out", str(tmp_path), "--quiet",
                     "--threads", "1"])
    assert rc == 0
    rec = json.loads((tmp_path / "train.json").read_text())
    assert rec["epochs"] == 1 and rec["rows"][0]["ratio_to_vanilla"] == 1.0
    assert "1.00x" in (tmp_path / "tableB1.md").read_text()


def test_gpu_beyond_available_exits_2(capsys):
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert speed.main(["--gpu", str(n)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cpu" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_without_cuda_cli_exit_code():
    out = subprocess.run([sys.executable, "-m", "bench.speed", "--gpu", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "no CUDA device" in out.stderr and "--device cpu" in out.stderr


@pytest.mark.parametrize("argv, needle", [(["--defenses", "vanila"], "vanilla"),
                                          (["--arch", "resnet19"], "resnet18")])
def test_bad_names_exit_2_listing_valid_ones(argv, needle, capsys):
    assert speed.main(["--device", "cpu", "--quiet"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_published_numbers_match_reference_csv():
    path = Path(os.environ.get("STEALBENCH_SPEC", ROOT.parent / "shared" / "spec")) / "paper_reference.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    rows = {(r["table"], r["defense"], r["metric"]): float(r["value"]) for r in csv.DictReader(open(path))}
    assert rows[("4", "MAD", "infer_ratio")] == speed.PAPER_FIG4_RATIO["mad"]
    assert rows[("4", "MAD", "infer_2000_runs_s_rtx3080")] == speed.PAPER_FIG4_MAD_S
    assert rows[("4", "fastest other defense", "infer_ratio")] == speed.PAPER_FIG4_FASTEST_OTHER
    for name, label in [("vanilla", "Vanilla/MAD"), ("am", "AM"), ("edm", "EDM"), ("ini", "InI")]:
        assert rows[("B.1", label, "train_10ep_s_rtx3080")] == speed.PAPER_B1[name][0]
        assert rows[("B.1", label, "train_ratio")] == speed.PAPER_B1[name][1]
