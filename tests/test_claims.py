"""bench/claims.py judges the paper's claims from seeds' values. The numbers here are made up
(generated to sit clearly on one side of each rule), not results."""
import pytest

from bench import claims as C
from bench.stats import welch_interval
from bench.tables import Stat

ARCH = "smallcnn"


def stats_of(table: dict) -> dict:
    """{(dataset, defense, attack, label): [values]} -> collect()'s layout; benign when attack ''."""
    return {(ARCH, ds, d, at, lb, "benign_acc" if at == "" else "clone_acc"): Stat.of(v)
            for (ds, d, at, lb), v in table.items()}


@pytest.mark.parametrize("kind,diff,half,want", [
    ("lower", -10.0, 3.0, C.HOLDS),     # [-13, -7]: below 0
    ("lower", -1.0, 3.0, C.FAILS),      # [-4, 2]: a cut of 5 or more ruled out
    ("lower", -4.0, 3.0, C.HOLDS),      # [-7, -1]: a small cut, but below 0
    ("lower", -3.0, 4.0, C.UNSURE),     # [-7, 1]: neither
    ("little", -1.0, 3.0, C.HOLDS),     # [-4, 2]: above -5
    ("little", -12.0, 3.0, C.FAILS),    # [-15, -9]: below -5
    ("little", -5.0, 3.0, C.UNSURE),    # [-8, -2]
    ("within", -0.3, 0.5, C.HOLDS),     # [-0.8, 0.2]: above -1
    ("within", -3.0, 0.5, C.FAILS),     # [-3.5, -2.5]
    ("within", -1.0, 0.5, C.UNSURE),
    ("lower", -10.0, None, C.UNSURE),   # one seed: no interval
    ("little", None, None, C.UNSURE),
])
def test_verdict_rules(kind, diff, half, want):
    assert C.verdict(kind, diff, half) == want


def test_judge_uses_welch_over_seeds():
    st = stats_of({("mnist", "ini", "knockoff", "soft"): [20.0, 22.5, 21.0],
                   ("mnist", "vanilla", "knockoff", "soft"): [50.0, 52.0, 49.5]})
    r = C.judge(st, ARCH, C.Comparison("lower", "mnist", "ini", "vanilla", "knockoff", "soft"))
    d, h, p = welch_interval([20.0, 22.5, 21.0], [50.0, 52.0, 49.5])
    assert (r["diff"], r["half"], r["p"]) == (d, h, p) and r["n"] == (3, 3)
    assert r["verdict"] == C.HOLDS


def test_combine_and_summary():
    assert C.combine([C.HOLDS, C.HOLDS]) == C.HOLDS
    assert C.combine([C.HOLDS, C.UNSURE]) == C.UNSURE
    assert C.combine([C.UNSURE, C.FAILS, C.HOLDS]) == C.FAILS
    assert C.combine([]) == C.UNSURE
    judged = {"parts": [{"name": "AM", "verdict": C.HOLDS}, {"name": "InI", "verdict": C.FAILS}]}
    assert C.summary(judged) == "holds for AM; does not hold for InI"


def test_claim_one_per_defense_from_records():
    """EDM cuts the clone with benign accuracy kept: holds; InI's clone equals Vanilla's: does not
    hold; AM cuts the clone but costs 4 points of benign accuracy: does not hold."""
    van = [60.0, 62.0, 61.0]
    table = {("fashionmnist", "vanilla", "knockoff", lb): van for lb in ("soft", "hard")}
    table[("fashionmnist", "vanilla", "", "")] = [92.0, 92.2, 91.9]
    for lb in ("soft", "hard"):
        table[("fashionmnist", "edm", "knockoff", lb)] = [30.0, 32.0, 31.0]
        table[("fashionmnist", "ini", "knockoff", lb)] = [61.0, 60.5, 62.0]
        table[("fashionmnist", "am", "knockoff", lb)] = [20.0, 21.0, 19.5]
    table[("fashionmnist", "edm", "", "")] = [91.8, 92.0, 91.7]
    table[("fashionmnist", "ini", "", "")] = [91.5, 91.9, 91.6]
    table[("fashionmnist", "am", "", "")] = [88.0, 88.1, 87.8]
    [one] = [j for j in C.judge_all(stats_of(table), ARCH) if j["claim"].number == 1]
    got = {p["name"]: p["verdict"] for p in one["parts"]}
    assert got == {"AM": C.FAILS, "EDM": C.HOLDS, "InI": C.FAILS}
    assert C.summary(one) == "does not hold for AM; holds for EDM; does not hold for InI"


def test_ablations_with_one_seed_cannot_tell():
    table = {("mnist", "ini", "knockoff", "soft"): [20.0, 21.0, 22.0],
             ("mnist", "ini-iso", "knockoff", "soft"): [40.0]}
    [five] = [j for j in C.judge_all(stats_of(table), ARCH) if j["claim"].number == 5]
    iso = five["parts"][0]
    assert iso["verdict"] == C.UNSURE and iso["rows"][0]["half"] is None


def test_render_lists_every_claim():
    md, lines = C.render(stats_of({("mnist", "vanilla", "knockoff", "soft"): [50.0, 51.0]}), ARCH)
    assert len(lines) == 5 and all(f"## {n}." in md for n in range(1, 6))
