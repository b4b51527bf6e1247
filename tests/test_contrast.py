"""bench.contrast: a controlled change's effect, from hand-made cell records (not real results)."""
from bench import contrast
from bench import records as R
from bench.stats import paired_interval


def cell(profile, defense, seed, acc, label="soft"):
    return R.CellRecord(profile=profile, dataset="mnist", arch="smallcnn", defense=defense, defense_label=defense,
                        defense_params={}, attack="knockoff", attack_label="KnockoffNets", attack_params={},
                        label=label, seed=seed, clone_acc=acc, victim_key=f"{defense}-{seed}",
                        provenance={"git_commit": "abc"})


def records():
    base = {"vanilla": [98.0, 98.2, 98.1], "ini": [90.0, 70.0, 80.0]}
    wide = {"vanilla": [98.1, 98.2, 98.3], "ini": [95.0, 79.0, 88.0]}
    recs = [cell("cpu", d, s, v) for d, vals in base.items() for s, v in enumerate(vals)]
    recs += [cell("wide", d, s, v) for d, vals in wide.items() for s, v in enumerate(vals)]
    recs.append(cell("wide", "ini", 5, 50.0))   # no base cell on its victim: left out
    return recs


def test_pairs_by_victim_and_tests_the_change_paired():
    pairs = contrast.paired(records(), "cpu", "wide")
    assert pairs[("mnist", "soft", "ini")] == {0: (90.0, 95.0), 1: (70.0, 79.0), 2: (80.0, 88.0)}
    diff, half, p = paired_interval([95.0, 79.0, 88.0], [90.0, 70.0, 80.0])
    assert abs(diff - 22 / 3) < 1e-9 and p < 0.05 and half < diff   # steady +5/+9/+8: resolved paired
    md, table = contrast.render(records(), "cpu", "wide")
    assert "| mnist | soft | ini | 0,1,2 | 80.00±10.00 | 87.33±8.02 | +7.33 [" in md and "]* |" in md
    assert "90.00 → 95.00" in md and table.count("\n") == 7   # header + 6 paired seeds


def test_no_common_victim_is_a_clear_error(tmp_path, capsys):
    R.save(tmp_path / "records" / "cells" / "a.json", cell("cpu", "ini", 0, 80.0))
    assert contrast.main(["--base", "cpu", "--changed", "wide", "--results", str(tmp_path),
                          "--out", str(tmp_path / "x.md")]) == 2
    assert "no cell of 'wide'" in capsys.readouterr().err
    assert contrast.main(["--base", "cpu", "--changed", "wide", "--results", str(tmp_path / "none"),
                          "--out", str(tmp_path / "x.md")]) == 2
