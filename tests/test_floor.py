"""bench.floor: the floor is the sum of timed primitives times their counts (random images)."""
import pytest

from bench import floor


def test_floor_is_counts_times_primitive_medians(monkeypatch):
    times = {"V_fwd": 1.0, "V_bwd": 2.0, "C_fwd": 0.5, "C_vjp": 0.25, "C_jvp": 1.5, "opt": 0.1,
             "vanilla_step": 3.0, "ini_step": 18.0, "edm_step": 30.0}
    order = iter(list(times) * 2)   # interleaved rounds call the primitives in this order
    monkeypatch.setattr(floor, "timed", lambda fn, d, n: times[next(order)])
    r = floor.measure_floors("smallcnn", 4, "cpu", repeats=2, calls=1)
    ini_floor = 2 * 1.0 + 4 * 2.0 + 2 * 0.5 + 3 * 0.25 + 2 * 1.5 + 0.1
    assert r["ini"]["floor_vanilla_steps"] == pytest.approx(ini_floor / 3.0)
    assert r["ini"]["step_over_floor"] == pytest.approx(18.0 / ini_floor)
    assert r["edm"]["floor_vanilla_steps"] == pytest.approx((10 * 1.0 + 10 * 2.0 + 5 * 0.1) / 3.0)


def test_cli_runs_end_to_end_small(tmp_path):
    assert floor.main(["--batch", "4", "--repeats", "1", "--calls", "1", "--out", str(tmp_path)]) == 0
    from bench.train import channels_last
    text = (tmp_path / f"floor_smallcnn{'_cl' if channels_last() else ''}.md").read_text()   # the default: _cl
    assert "| ini |" in text and "% of peak" in text
    assert floor.main(["--batch", "0"]) == 2
