"""The report card: numbers, intervals and tests from synthetic records (generated numbers)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench import card
from bench.profiles import get_profile


def records():
    recs = []
    for seed, (van, mad, new) in enumerate([(75.0, 60.0, 40.0), (76.0, 62.0, 41.0), (74.0, 61.0, 39.5)]):
        for d, v in (("vanilla", van), ("mad", mad), ("topk", new)):
            recs.append(S.cell("mnist", d, "knockoff", "soft", v, 98.0, seed=seed))
            recs.append(S.victim("mnist", d, 98.0 - (0.5 if d == "topk" else 0.0) + 0.1 * seed, seed=seed))
    return recs


def test_rows_intervals_and_tests():
    rows = card.card_rows(records(), "topk", ["vanilla", "mad"])
    by = {(r["metric"], r["attack"]): r for r in rows}
    clone = by[("clone_acc", "knockoff")]
    m, h, n = clone["stats"]["topk"]
    assert m == pytest.approx(40.1667, abs=1e-3) and n == 3 and 1.0 < h < 3.0   # t(0.975, 2) = 4.30
    assert clone["best"] == "mad"
    d, p = clone["vs_vanilla"]
    assert d == pytest.approx(40.1667 - 75.0, abs=1e-3) and p < 0.001
    benign = by[("benign_acc", "")]
    assert benign["vs_vanilla"][0] == pytest.approx(-0.5)


def test_markdown_says_which_is_better_and_html_renders():
    rows = card.card_rows(records(), "topk", ["vanilla", "mad"])
    text = card.render_markdown("topk", get_profile("ci"), rows, ["vanilla", "mad"], [], [0, 1, 2])
    assert "significantly better" in text and "(MAD)" in text and "No `bench.speed` record" in text
    page = card.render_html(text, "card")
    assert page.count("<table>") == 1 and "<code>bench.speed</code>" in page


def test_one_seed_has_no_test():
    recs = [r for r in records() if r.seed == 0]
    rows = card.card_rows(recs, "topk", ["vanilla", "mad"])
    clone = [r for r in rows if r["metric"] == "clone_acc"][0]
    assert clone["vs_vanilla"][1] is None and "one seed: no test" in card._test(*clone["vs_vanilla"])


def test_unknown_defense_is_one_line_and_exit_2(capsys):
    assert card.main(["--defense", "topkk"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "topk" in err
