import io

from bench.progress import LineProgress, hms


def test_lines_count_up_with_an_eta():
    out = io.StringIO()
    p = LineProgress(3, "cell", stream=out)
    p.done("a", "ok")
    p.done("b")
    lines = out.getvalue().splitlines()
    assert lines[0] == "3 cells to run"
    assert lines[1].startswith("[1/3] cell a: ok | ") and "ETA" in lines[1]
    assert lines[2].startswith("[2/3] cell b | ")


def test_disabled_or_empty_prints_nothing():
    out = io.StringIO()
    LineProgress(3, "cell", enabled=False, stream=out).done("a")
    LineProgress(0, "victim", stream=out)
    assert out.getvalue() == ""


def test_hms():
    assert hms(59.6) == "1m00s" and hms(3725) == "1h02m" and hms(0) == "0m00s"
