"""bench.speed: cost-model arithmetic, the timer, the measurement protocol (interleaved
rounds, medians and IQRs, per-round ratios, the load flag), the CLI on a tiny model, error exits.

All inputs are random tensors generated here (timing needs shapes, not real data); the
per-round timings and load readings in the protocol tests are made-up values.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import speed, speedtrain
from bench.timing import Timing, load_reading, load_record, spread, time_runs
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
    # a call longer than the whole budget is timed once: that first call is the run
    before = _StubDefense.calls
    t = speed.time_served(d, 2, runs=10 ** 6, warmup=5, device="cpu", desc="", progress=False,
                          cell_budget=1e-12)
    assert t.runs == 1 and t.warmup == 0 and _StubDefense.calls == before + 1 and t.total_s > 0


def test_variants_label_paper_style_and_ours():
    vs = speed.variants("mad")
    assert {(v.impl, v.style) for v in vs} == {("reference", "paper-style"), ("batched", "ours")}
    assert all(v.make().params["impl"] == v.impl for v in vs)
    assert [v.params for v in speed.variants("vanilla")] == [()]
    assert {v.kind for v in speed.variants("ini+mad")} == {"mad"}


# ------------------------------------------------------------------ the protocol (issue 14)
def _fake_timing(mean, runs=2):
    return Timing(runs=runs, warmup=0, total_s=mean * runs, per_run_s=[mean] * runs)


def _args(*argv):
    args = speed.parse_args(["--device", "cpu", "--arch", "smallcnn", "--quiet", *argv])
    speed.resolve_counts(args, "cpu")
    return args


def test_inference_rounds_interleave_cells(monkeypatch):
    """Every cell once per round, same order each round: A B C A B C A B C, not A A A B B B."""
    calls = []

    def fake(d, B, runs, warmup, device, desc, progress, cell_budget=0.0, x=None):
        calls.append(desc.split(" round ")[0])
        assert x is not None and len(x) == B  # one fixed input per batch size
        return _fake_timing(1e-3 * len(calls))

    monkeypatch.setattr(speed, "time_served", fake)
    monkeypatch.setattr(speed, "measure_primitives", lambda ctx, bs, *a: {b: {} for b in bs})
    args = _args("--runs", "2", "--repeats", "3", "--batch-sizes", "1,2")
    res = speed.run_inference(args, "cpu", ["vanilla", "mad"])
    one_round = [f"{c.label} B={c.batch_size}" for c in res["cells"]]
    assert len(one_round) == 6 and len(set(one_round)) == 6  # Vanilla + 2 MAD impls, 2 sizes
    assert calls == one_round * 3
    assert all(len(c.timings) == 3 for c in res["cells"])
    assert len(res["load_during"]) == 2  # read between rounds


def test_training_rounds_interleave_defenses(monkeypatch):
    calls = []
    secs = {"vanilla": [1.0, 2.0, 1.0, 1.0], "am": [3.0, 4.0, 3.3, 2.9], "edm": [9.0, 20.0, 8.0, 8.5],
            "ini": [12.0, 30.0, 11.0, 12.5]}

    def fake(name, ctx, device):
        calls.append(name)
        return name.upper(), {"unit": secs[name][calls.count(name) - 1]}

    monkeypatch.setattr(speedtrain, "fit_once", fake)
    args = _args("--train", "--repeats", "4", "--train-size", "8")
    rows = {r["defense"]: r for r in speed.run_training(args, "cpu", list(secs))["rows"]}
    assert calls == ["vanilla", "am", "edm", "ini"] * 4
    ini = rows["ini"]
    assert ini["seconds_per_round"] == secs["ini"]
    assert ini["seconds"] == statistics.median(secs["ini"]) == 12.25
    assert ini["seconds_range"] == [11.0, 30.0]
    per_round = [12.0, 15.0, 11.0, 12.5]          # ini / vanilla in the same round
    assert ini["ratio_per_round"] == pytest.approx(per_round)
    assert ini["ratio_to_vanilla"] == pytest.approx(statistics.median(per_round))  # 12.25
    q = statistics.quantiles(per_round, n=4, method="inclusive")
    assert ini["ratio_iqr"] == pytest.approx([q[0], q[2]]) and ini["ratio_range"] == [11.0, 15.0]
    assert rows["vanilla"]["ratio_per_round"] == [1.0] * 4
    # fewer than 4 rounds: min-max only
    calls.clear()
    args = _args("--train", "--repeats", "3", "--train-size", "8")
    assert "seconds_iqr" not in speed.run_training(args, "cpu", list(secs))["rows"][0]


def test_spread_matches_statistics_quantiles():
    vals = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    q = statistics.quantiles(vals, n=4, method="inclusive")
    s = spread(vals)
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"]) == (3.5, q[0], q[2], 1.0, 10.0)
    assert s["q1"] == pytest.approx(2.25) and s["q3"] == pytest.approx(4.75)
    assert spread([7.0]) == {"median": 7.0, "q1": 7.0, "q3": 7.0, "min": 7.0, "max": 7.0, "n": 1}


def _cell(name, label, kind, means, runs=(10,) * 5, requested=10):
    c = speed.Cell(name, label, "", "", kind, {}, 4, requested)
    c.timings = [_fake_timing(m, r) for m, r in zip(means, runs)]
    return c


def test_cell_rows_median_iqr_and_ratio_per_round():
    """Made-up per-round means: the ratio is taken per round, then its median (not the
    ratio of the medians)."""
    van = [1.0, 2.0, 1.5, 1.2, 5.0]
    am = [10.0, 30.0, 12.0, 11.0, 40.0]
    cells = [_cell("vanilla", "Vanilla", "vanilla", van),
             _cell("am", "AM", "am", am, runs=(10, 10, 3, 10, 10))]
    rows = speed.cell_rows({"cells": cells, "primitives": {4: {"M_f": 0.5}}})
    v, a = rows
    assert v["ratio_per_round"] == [1.0] * 5 and v["ratio_to_vanilla"] == 1.0
    assert a["per_round_s"] == pytest.approx(am)
    assert a["per_batch_s"] == pytest.approx(statistics.median(am)) and a["per_batch_s"] == pytest.approx(12.0)
    q = statistics.quantiles(am, n=4, method="inclusive")
    assert a["per_batch_iqr_s"] == pytest.approx([q[0], q[2]])
    assert a["total_s"] == pytest.approx(12.0 * 10)
    ratios = [x / y for x, y in zip(am, van)]
    assert a["ratio_per_round"] == pytest.approx(ratios)
    assert a["ratio_to_vanilla"] == pytest.approx(statistics.median(ratios))
    assert a["ratio_to_vanilla"] == pytest.approx(55 / 6)  # median ratio, not 12 / 1.5 = 8
    rq = statistics.quantiles(ratios, n=4, method="inclusive")
    assert a["ratio_iqr"] == pytest.approx([rq[0], rq[2]])
    assert a["extrapolated"] and not v["extrapolated"] and a["runs_timed_per_round"][2] == 3
    assert a["predictions"][0]["measured_over_predicted"] == pytest.approx(12.0 / 1.0)  # 2 M_f


@pytest.mark.parametrize("before, during, after, loaded", [
    ([0.5, 0, 0], [], [2.4, 0, 0], False),          # our own 2 threads after: not flagged
    ([2.1, 0, 0], [], [0.5, 0, 0], True),           # busy before we started
    ([0.5, 0, 0], [[3.0, 0, 0]], [0.5, 0, 0], True),  # a burst between rounds
    ([0.5, 0, 0], [], [2.6, 0, 0], True),           # after > cores + 0.5
    (None, [None], None, False)])                   # no getloadavg on this platform
def test_load_rule(before, during, after, loaded, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    rec = load_record(before, during, after, threads=2)
    assert rec["loaded"] is loaded and rec["cpu_count"] == 2 and rec["threads"] == 2


def test_load_reading_uses_getloadavg(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.234, 2.0, 3.0))
    assert load_reading() == [1.23, 2.0, 3.0]

    def missing():
        raise OSError
    monkeypatch.setattr(os, "getloadavg", missing)
    assert load_reading() is None


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--train", "--repeats", "-1"],
                                  ["--train", "--train-size", "0"]])
def test_bad_counts_exit_2_in_one_line(argv, capsys):
    assert speed.main(["--device", "cpu", "--quiet", "--arch", "smallcnn"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and argv[-2] in err and ">= 1" in err


def test_cli_end_to_end_loaded_host(tmp_path, monkeypatch):
    """Tiny inference run on a host made to look loaded (fake getloadavg): medians, IQRs,
    the warning in table4.md, and even-routed EDM built apart from the routed one."""
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 9.0, 9.0))
    threads_before = torch.get_num_threads()
    rc = speed.main(["--device", "cpu", "--arch", "smallcnn", "--batch-sizes", "1,2", "--runs", "2",
                     "--repeats", "2", "--defenses", "vanilla,mad,edm", "--out", str(tmp_path),
                     "--quiet", "--threads", "1"])
    assert torch.get_num_threads() == threads_before
    assert rc == 0
    rec = json.loads((tmp_path / "speed.json").read_text())
    assert rec["runs"] == 2 and rec["repeats"] == 2 and rec["batch_sizes"] == [1, 2]
    assert rec["loaded"] and rec["load"]["before"] == [99.0, 9.0, 9.0] and rec["load"]["threads"] == 1
    assert "random initialization" in rec["weights"] and rec["provenance"]["git_commit"]
    labels = {(r["label"], r["batch_size"]) for r in rec["rows"]}
    assert len(labels) == 12  # vanilla, 2 MAD, 2 EDM + EDM evenly routed; 2 batch sizes
    for r in rec["rows"]:
        assert r["runs_timed_per_round"] == [2, 2] and len(r["per_run_s"]) == 4
        assert len(r["per_round_s"]) == 2 and r["per_batch_s"] == pytest.approx(statistics.median(r["per_round_s"]))
        assert r["per_batch_iqr_s"][0] <= r["per_batch_s"] <= r["per_batch_iqr_s"][1]
        assert r["total_s"] == pytest.approx(2 * r["per_batch_s"])
        if r["defense"] == "vanilla":
            assert r["ratio_to_vanilla"] == 1.0 and r["ratio_iqr"] == [1.0, 1.0]
        assert r["predictions"][0]["predicted_per_batch_s"] > 0
    even = [r for r in rec["rows"] if "even routing" in r["label"]]
    assert len(even) == 2 and all(r.get("routing") == "forced even (instrumented)" for r in even)
    assert rec["primitives"]["2"]["S"] > 0
    table = (tmp_path / "table4.md").read_text()
    assert "MAD [reference, paper-style]" in table and "M_f + B(C·M_b + S)" in table
    assert "WARNING: LOADED RUN" in table and "2 round(s)" in table and "interleaved" in table
    assert "IQR" in table and "Below the protocol" in table  # 2 < 5 repeats
    assert (tmp_path / "figure4.png").stat().st_size > 10_000


def test_cli_train_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    rc = speed.main(["--train", "--device", "cpu", "--arch", "smallcnn", "--defenses", "vanilla,ini",
                     "--train-size", "64", "--repeats", "2", "--epochs", "1", "--out", str(tmp_path),
                     "--quiet", "--threads", "1"])
    assert rc == 0
    rec = json.loads((tmp_path / "train.json").read_text())
    assert rec["epochs"] == 1 and rec["repeats"] == 2 and rec["train_size"] == 64 and not rec["loaded"]
    van, ini = rec["rows"]
    assert van["ratio_per_round"] == [1.0, 1.0] and len(ini["seconds_per_round"]) == 2
    assert ini["seconds"] == pytest.approx(statistics.median(ini["seconds_per_round"]))
    assert ini["seconds_range"] == [min(ini["seconds_per_round"]), max(ini["seconds_per_round"])]
    table = (tmp_path / "tableB1.md").read_text()
    assert "1.00x (1.00-1.00)" in table and "2 round(s), defenses interleaved" in table
    assert "WARNING" not in table and "64 images (protocol: at least 10,000)" in table


def test_report_notes_rounds_and_load(tmp_path):
    """bench.report's speed tables say how many rounds and warn on a loaded record."""
    from bench.speedtables import protocol_notes
    notes = protocol_notes({"repeats": 5, "loaded": True}, "cpu", "table4.md")
    assert "5 interleaved rounds" in notes[0] and "LOADED" in notes[1]
    assert protocol_notes({}, "cpu", "table4.md") == []  # records from before issue 14


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


def test_training_warmup_rounds_are_untimed(monkeypatch):
    """--warmup N with --train: N untimed rounds on a small set before the timed ones (on CUDA
    the first fit pays cuDNN autotuning); the rows hold only the timed rounds."""
    calls = []

    def fake(name, ctx, device):
        calls.append((name, len(ctx.id_train.x)))
        return name, {"unit": 1.0}

    monkeypatch.setattr(speedtrain, "fit_once", fake)
    args = _args("--train", "--repeats", "2", "--train-size", "1000", "--warmup", "1")
    rows = speed.run_training(args, "cpu", ["vanilla", "ini"])["rows"]
    small = speed.warmup_size(1000, 128)
    assert small == 2 * 128 + 1000 % 128 == 360 and speed.warmup_size(100, 128) == 100
    assert calls == [("vanilla", small), ("ini", small)] + [("vanilla", 1000), ("ini", 1000)] * 2
    assert all(len(r["seconds_per_round"]) == 2 for r in rows)
    assert _args("--train").warmup == 0       # CPU default: none


def test_default_cell_budget_bounds_a_round():
    """The default run must end: with no budget, the slowest paper-style cell (MAD-argmax's
    per-query loop, 17.9 s per batch of 128 on an H100) would time 2,000 runs per round."""
    assert speed.parse_args([]).cell_budget == speed.DEFAULT_CELL_BUDGET > 0
    assert speed.parse_args(["--cell-budget", "0"]).cell_budget == 0


def test_mad_full_backward_row_is_the_originals_option_not_its_default():
    """Issue 13 item 9: the original MAD code differentiates w.r.t. the last layer by default;
    the whole-network backward is its max_grad_layer='all' option, and the row must say so."""
    from bench.costmodel import MAD_KINDS, _predict_mad
    rows = _predict_mad(next(iter(MAD_KINDS)), "reference", PRIM, B=2, C=10)
    full = [label for _, label in rows if "M_b,full" in label]
    assert full and "max_grad_layer='all'" in full[0] and "default: last layer" in full[0]
    assert not any("whole-network" in label for _, label in rows)
