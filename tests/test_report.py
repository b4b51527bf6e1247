"""bench.report renders the paper's tables from records: layout (golden files), missing cells,
README preservation. Records are synthetic (tests/synthetic_records.py), not results."""
import csv
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench import paper as P
from bench import report

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_FILES = ["table1.md", "table2.md", "table3.md", "table5.md", "budget_curves.md",
                "figure3.md", "table2.csv", "README.md", "claims.md"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = S.write(S.handful(), tmp_path_factory.mktemp("synth"))
    out = root / "out"
    speed = root / "no-speed"   # absent: speed tables must be reported missing
    report.render(root, out, "synth", speed_dir=speed)
    return out


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_layout(rendered, name):
    got = (rendered / name).read_text()
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text(), f"{name} differs from {path}; UPDATE_GOLDEN=1 to accept"


def _rows(out, name):
    with open(out / name) as f:
        return list(csv.DictReader(f))


def test_missing_cells_are_marked_not_dropped(rendered):
    t2 = (rendered / "table2.md").read_text()
    # every paper row and data set is present even without any record of ours
    for label in ["Vanilla", "MAD", "AM", "EDM", "InI", "InI + MAD", "InI + AM"]:
        assert f"| {label} " in t2
    for ds in ["MNIST soft", "FashionMNIST hard", "CIFAR-100 soft"]:
        assert ds in t2
    rows = _rows(rendered, "table2.csv")
    fm = [r for r in rows if r["dataset"] == "fashionmnist" and r["metric"] == "clone_acc"]
    assert fm and all(r["ours"] == "" and r["n_seeds"] == "0" and r["paper"] for r in fm)
    mad_hard = next(r for r in rows if (r["defense"], r["label"], r["metric"])
                    == ("mad", "hard", "clone_acc") and r["dataset"] == "mnist")
    assert (mad_hard["ours"], mad_hard["n_failed"], mad_hard["diff"]) == ("", "1", "")
    mad_line = next(line for line in t2.splitlines() if line.startswith("| MAD "))
    assert "| failed " in mad_line and report.MISSING in mad_line


def test_values_and_differences(rendered):
    rows = _rows(rendered, "table2.csv")
    v = next(r for r in rows if (r["dataset"], r["defense"], r["label"], r["metric"])
             == ("mnist", "vanilla", "soft", "clone_acc"))
    assert float(v["ours"]) == pytest.approx(91.0)          # mean of seeds 90 and 92
    assert float(v["paper"]) == pytest.approx(99.39)        # Table 2, ResNet-18
    assert float(v["diff"]) == pytest.approx(91.0 - 99.39)
    assert v["n_seeds"] == "2"


def test_ablation_rows_stay_out_of_main_tables(rendered):
    assert "L_iso" not in (rendered / "table2.md").read_text()
    t5 = (rendered / "table5.md").read_text()
    assert "88.00 (0.91×)" in t5 and "paper (ResNet-18, CIFAR-10)" in t5


def test_no_vgg_tables_without_vgg_records(rendered):
    assert not (rendered / "tableE1.md").exists()


def test_vgg_records_give_appendix_tables(tmp_path):
    root = S.write([S.victim("cifar10", "vanilla", 90.0, arch="vgg16")], tmp_path)
    report.render(root, tmp_path / "out", "synth", speed_dir=tmp_path / "none")
    e1 = (tmp_path / "out" / "tableE1.md").read_text()
    assert "paper (VGG-16)" in e1 and "93.24" in e1 and "90.00" in e1
    assert (tmp_path / "out" / "tableE3.tex").exists()


def test_readme_keeps_human_text_and_lists_deviations(tmp_path, monkeypatch):
    prof = SimpleNamespace(deviations=("architecture: tiny",),
                           roles={"mnist": SimpleNamespace(substitutes=("queries: FashionMNIST",))})
    monkeypatch.setattr(report, "get_profile", lambda name: prof)
    root = S.write(S.handful(), tmp_path)
    out = tmp_path / "out"
    report.render(root, out, "synth", speed_dir=tmp_path / "none")
    readme = out / "README.md"
    text = readme.read_text()
    assert "- architecture: tiny" in text and "- MNIST: queries: FashionMNIST" in text
    readme.write_text("Intro by hand.\n" + text.replace("(Written by hand; kept across re-renders.)",
                                                         "Our analysis: InI wins."))
    report.render(root, out, "synth", speed_dir=tmp_path / "none")
    again = readme.read_text()
    assert again.startswith("Intro by hand.\n" + report.BEGIN)
    assert "Our analysis: InI wins." in again and again.count(report.BEGIN) == 1


def test_paper_reference_is_the_shared_copy():
    shared = Path(__file__).resolve().parents[2] / "shared" / "spec" / "paper_reference.csv"
    if shared.exists():
        assert P.REFERENCE_CSV.read_text() == shared.read_text()
    ref = P.load_paper()
    assert ref.get("2", "resnet18", "CIFAR-100", "InI", "knockoff", "soft") == 9.71
    assert ref.get("5", "resnet18", "CIFAR-10", "InI w/o grad-norm", "jbda", "hard") == 25.15


def test_cli_without_records_is_bad_input(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path)]) == 2
    assert "no records/" in capsys.readouterr().err


def test_speed_tables_from_speed_records(tmp_path):
    root = S.write(S.handful(), tmp_path)
    S.speed(tmp_path / "speed")
    out = tmp_path / "out"
    report.render(root, out, "synth", speed_dir=tmp_path / "speed")
    t4 = (out / "table4_cpu.md").read_text()
    mad = next(line for line in t4.splitlines() if line.startswith("| MAD [reference"))
    assert "60.0 s* (30.00×)" in mad and "+4.60×" in mad and "471.7 s (25.40×)" in mad
    b1 = (out / "tableB1_cpu.md").read_text()
    ini = next(line for line in b1.splitlines() if line.startswith("| InI "))
    assert "100.0 s (10.00×)" in ini and "1892.1 s (12.15×)" in ini and "-2.15×" in ini
    edm = next(line for line in b1.splitlines() if line.startswith("| EDM "))
    assert edm.split("|")[2].strip() == report.MISSING      # paper row kept, ours missing
    assert (out / "figure4_cpu.png").exists()
    assert "Table 4" in (out / "README.md").read_text()


def test_figure3_draws_a_shared_ini_once(tmp_path):
    """ini and ini+mad serve one trained InI: one histogram, under the plain name."""
    from bench import report
    cos = {"pcgrad_cosines": {"ben|iso": {"before": [-0.5, 0.2], "after": [0.1, 0.2]}}}
    other = {"pcgrad_cosines": {"ben|iso": {"before": [-0.4, 0.2], "after": [0.1, 0.3]}}}
    recs = [S.victim("mnist", d, 96.0, extra={"fit_log": {"ini": c}})
            for d, c in [("ini+mad", cos), ("ini", cos), ("ini+am", cos), ("ini", other)]]
    recs[3].seed = 1
    table, files = report.figure3(recs, tmp_path)
    assert files == ["figure3_smallcnn_mnist_ini_s0.png", "figure3_smallcnn_mnist_ini_s1.png"]
    assert len(table.rows) == 2


def test_clone_metric_best_shows_the_best_epoch_and_says_so(tmp_path, capsys):
    recs = S.handful()
    for r in recs:
        if r.kind == "cell" and r.status == "ok" and r.defense != "mad":
            r.clone_acc_best = r.clone_acc + 1.5    # synthetic: best epoch 1.5 points above the last
    root = S.write(recs, tmp_path)
    report.render(root, tmp_path / "final", "synth", speed_dir=tmp_path / "none")
    report.render(root, tmp_path / "best", "synth", speed_dir=tmp_path / "none", clone_metric="best")
    assert "1 cells have no best-epoch accuracy" in capsys.readouterr().err   # mad soft: recorded without it
    final, best = (tmp_path / "final" / "table2.md").read_text(), (tmp_path / "best" / "table2.md").read_text()
    assert "last epoch or round" in final and "max(acc_list)" in best
    rows = {(r["defense"], r["label"], r["metric"]): r for r in _rows(tmp_path / "best", "table2.csv")
            if r["dataset"] == "mnist"}
    assert float(rows[("vanilla", "soft", "clone_acc")]["ours"]) == pytest.approx(92.5)   # mean of 91.5, 93.5
    assert float(rows[("vanilla", "hard", "relative")]["ours"]) == pytest.approx(86.5 / 98.0, abs=1e-3)
    assert main_args_reject_bad_metric()


def main_args_reject_bad_metric():
    with pytest.raises(SystemExit) as e:
        report.parse_args(["--profile", "cpu", "--clone-metric", "max"])
    return e.value.code == 2


def test_training_curves_average_seeds_count_shared_units_once_and_flag_unflat(tmp_path):
    """Synthetic fit logs: ini's log appears under ini and ini+mad (one trained unit)."""
    from bench.figures import last_epoch_change, training_curves
    log = lambda s: {"ini": {"epoch_losses": {"ben": [2.0, 1.0, 0.5 + 0.1 * s], "iso": [0.5, 0.4, 0.39]}}}
    recs = [S.victim("mnist", d, 98.0, seed=s, extra={"fit_log": log(s)}) for d in ("ini", "ini+mad")
            for s in (0, 2)]
    recs.append(S.victim("mnist", "vanilla", 99.0, extra={"fit_log": {"vanilla": {"epoch_losses": {"ce": [1.0, 0.1]}}}}))
    t, files = training_curves(recs, tmp_path)
    assert files == ["training_curves_smallcnn_mnist.png"] and (tmp_path / files[0]).stat().st_size > 0
    rows = {(r["unit"], r["term"]): r for r in t.tidy}
    assert rows[("ini", "ben")]["seeds"] == 2            # two seeds, not four victims
    assert float(rows[("ini", "ben")]["last"]) == 0.6    # mean of 0.5 and 0.7
    assert float(rows[("ini", "ben")]["last_epoch_change_pct"]) == pytest.approx(100 * 0.4 / 1.4, abs=1e-3)
    assert last_epoch_change([0.5, 0.4, 0.4]) == 0.0 and last_epoch_change([1.0]) is None
    assert training_curves([S.victim("mnist", "vanilla", 99.0)], tmp_path) == (None, [])


def test_table_c1_shows_the_adversarial_surrogate_rows_beside_the_paper(tmp_path):
    """Synthetic records: ini-adv rows go to Table C.1 (with benign and KnockoffNets soft), not Table 1."""
    recs = []
    for d, benign, clone in [("vanilla", 91.0, 50.0), ("ini", 89.0, 40.0), ("ini-adv", 90.0, 45.0),
                             ("ini-adv-strong", 70.0, 30.0)]:
        recs += [S.victim("fashionmnist", d, benign), S.cell("fashionmnist", d, "knockoff", "soft", clone, benign)]
    root = S.write(recs, tmp_path)
    report.render(root, tmp_path / "out", "synth", speed_dir=tmp_path / "none")
    c1 = (tmp_path / "out" / "tableC1.md").read_text()
    assert "Adv. training 2 (strong C)" in c1 and "64.95" in c1 and "40.40" in c1   # the paper's row
    assert "70.00" in c1 and "30.00" in c1
    assert "Adv." not in (tmp_path / "out" / "table1.md").read_text()


def test_detection_table_counts_refusals_and_shows_benign_fpr(tmp_path):
    """Synthetic records: prada refused seed 0 after 150 answers, not seed 1; 10% benign FPR."""
    v = [S.victim("mnist", "prada", 98.0, seed=s, extra={"benign_fpr": {"fpr": 0.1 * s}}) for s in (0, 1)]
    for r in v:
        r.key = f"v{r.seed}"
    cells = [S.cell("mnist", "prada", "jbda", "soft", 40.0 + s, 98.0, seed=s) for s in (0, 1)]
    for c in cells:
        c.victim_key, c.budget = f"v{c.seed}", 9450
    cells[0].detected_at, cells[0].detection = 150, {"monitor": "prada", "at": 179}
    from bench.beyond import table_detection
    t = table_detection(v + cells + [S.cell("mnist", "vanilla", "jbda", "soft", 80.0, 98.0)])
    (row,) = t.tidy
    assert row["detected"] == 1 and row["seeds"] == 2 and float(row["answered_before_detection"]) == 150
    assert float(row["flagged_at_query"]) == 179
    assert float(row["clone_acc_at_detection"]) == 40.0 and float(row["benign_fpr_pct"]) == 5.0
    assert table_detection([S.cell("mnist", "vanilla", "jbda", "soft", 80.0, 98.0)]) is None


def test_a_clone_refused_before_it_existed_reads_refused_not_failed():
    """PRADA refused DFME in its first batch (no clone, status ok): the attacks table says
    "refused"; a crashed cell still says "failed"; one refused seed beside a scored one: ‡."""
    from bench.beyond import table_attacks
    from bench.tables import collect, fmt_stat
    refused = [S.cell("mnist", "prada", "dfme", "soft", 1.0, 98.0, seed=s) for s in (0, 1)]
    for c in refused:
        c.clone_acc = c.relative = c.fidelity = None
        c.detected_at = 0
    crashed = S.cell("mnist", "prada", "knockoff", "soft", 0.0, 98.0, status="failed")
    base = [S.cell("mnist", "vanilla", a, "soft", 97.0, 99.0) for a in ("dfme", "knockoff")]
    stats = collect(refused + [crashed] + base)
    assert fmt_stat(stats[("smallcnn", "mnist", "prada", "dfme", "soft", "clone_acc")]) == "refused"
    assert fmt_stat(stats[("smallcnn", "mnist", "prada", "knockoff", "soft", "clone_acc")]) == "failed"
    row = next(r for r in table_attacks(stats).rows if r[1] == "PRADA")
    assert "refused" in row and "failed" in row
    scored = S.cell("mnist", "prada", "dfme", "soft", 50.0, 98.0, seed=2)
    st = collect(refused + [scored])[("smallcnn", "mnist", "prada", "dfme", "soft", "clone_acc")]
    assert (st.n, st.failed, st.refused) == (1, 0, 2) and fmt_stat(st) == "50.00‡"


def test_adaptive_table_measures_recovery_against_knockoff_on_the_same_defense(tmp_path):
    """Synthetic records, 3 seeds: Vanilla's clone ~98, MAD's ~88 (a 10-point cut), the adaptive
    attacker on MAD ~93 (half of it back); AM's adaptive cell fell back to KnockoffNets."""
    recs = []
    for s in (0, 1, 2):
        jitter = (-0.5, 0.0, 0.5)[s]
        recs += [S.cell("mnist", "vanilla", "knockoff", "soft", 98.0 + jitter, 99.0, seed=s),
                 S.cell("mnist", "mad", "knockoff", "soft", 88.0 - jitter, 99.0, seed=s),
                 S.cell("mnist", "mad", "adaptive", "soft", 93.0 + jitter, 99.0, seed=s),
                 S.cell("mnist", "am", "knockoff", "soft", 80.0 + jitter, 99.0, seed=s)]
        fallback = S.cell("mnist", "am", "adaptive", "soft", 80.0, 99.0, seed=s)
        fallback.attack_log = {"fallback": "KnockoffNets on the raw answers"}
        recs.append(fallback)
    from bench.beyond import table_adaptive
    from bench.tables import collect
    t = table_adaptive(collect(recs), recs)
    rows = {r["defense"]: r for r in t.tidy}
    assert set(rows) == {"mad", "am"}
    mad = rows["mad"]
    assert float(mad["cut"]) == 10.0 and float(mad["recovered"]) == 5.0
    assert float(mad["share_recovered_pct"]) == 50.0 and float(mad["recovered_p"]) < 0.05
    assert rows["am"]["fallback"] and not mad["fallback"]
    assert "*" in t.markdown() and "cannot rebuild" in t.markdown()
    others = [r for r in recs if r.attack != "adaptive"]
    assert table_adaptive(collect(others), others) is None


def test_adaptive_recovery_is_paired_by_seed():
    """The same victim per seed under both attacks: the victim's spread between seeds (here 10
    points) cancels in the paired test, which Welch's test between the two groups would not; a
    seed only one attack ran is left out of the pairs."""
    from bench.beyond import table_adaptive
    from bench.tables import collect
    recs = []
    for s, level in enumerate((80.0, 90.0, 70.0)):
        recs += [S.cell("mnist", "vanilla", "knockoff", "soft", 98.0, 99.0, seed=s),
                 S.cell("mnist", "mad", "knockoff", "soft", level, 99.0, seed=s),
                 S.cell("mnist", "mad", "adaptive", "soft", level + 3.0 + 0.1 * s, 99.0, seed=s)]
    recs.append(S.cell("mnist", "mad", "adaptive", "soft", 99.0, 99.0, seed=3))   # no KnockoffNets pair
    (row,) = table_adaptive(collect(recs), recs).tidy
    assert abs(float(row["recovered"]) - 3.1) < 1e-9 and float(row["recovered_p"]) < 0.01
    assert float(row["recovered_half_width"]) < 0.5
    cut = sum(98.0 - lv for lv in (80.0, 90.0, 70.0))
    # the filtering variant gets a row of its own, paired with the same KnockoffNets cells
    recs += [S.cell("mnist", "mad", "adaptive-filter", "soft", lv + 5.0, 99.0, seed=s)
             for s, lv in enumerate((80.0, 90.0, 70.0))]
    t = table_adaptive(collect(recs), recs)
    assert [(r["attack"], float(r["recovered"])) for r in t.tidy] == [("adaptive", 3.1), ("adaptive-filter", 5.0)]
    assert "untrusted answers left out" in t.markdown()
    assert abs(float(row["share_recovered_pct"]) - 100 * 9.3 / cut) < 1e-3   # seed 3 has no pair


def test_knobs_table_lists_each_tuned_victim_with_its_anchor():
    from bench.beyond import table_knobs
    tuned = {"knob": "eps", "value": 0.3, "anchor": "knob off (the Vanilla anchor is out of reach: ...)",
             "reference_acc": 97.3, "accuracy": 97.2, "met": True}
    recs = [S.victim("mnist", "ini+mad", 97.2, extra={"tuning": tuned}),
            S.victim("mnist", "mad", 98.7, extra={"tuning": {**tuned, "anchor": "vanilla victim", "value": 0.75}}),
            S.victim("mnist", "vanilla", 99.0)]
    t = table_knobs(recs)
    assert [(r["defense"], r["value"], r["anchor"]) for r in t.tidy] == [("mad", 0.75, "vanilla"),
                                                                         ("ini+mad", 0.3, "knob off")]
    assert table_knobs([S.victim("mnist", "vanilla", 99.0)]) is None


def test_attacks_table_puts_every_attack_beside_vanilla_under_the_same_attack():
    """Synthetic records, 3 seeds: CopycatCNN on InI 10 points below on Vanilla (significant);
    KnockoffNets rides along; a profile with only the paper's attacks gets no such table."""
    from bench.beyond import table_attacks
    from bench.tables import collect
    recs = []
    for s, j in zip((0, 1, 2), (-0.5, 0.0, 0.5)):
        recs += [S.cell("mnist", "vanilla", "copycat", "soft", 95.0 + j, 99.0, seed=s),
                 S.cell("mnist", "ini", "copycat", "soft", 85.0 - j, 98.0, seed=s),
                 S.cell("mnist", "vanilla", "knockoff", "soft", 97.0 + j, 99.0, seed=s)]
    t = table_attacks(collect(recs))
    row = {(r["defense"], r["attack"]): r for r in t.tidy}
    assert float(row[("ini", "copycat")]["vs_vanilla"]) == -10.0 and float(row[("ini", "copycat")]["vs_p"]) < 0.05
    assert t.header[3:] == ["KnockoffNets", "CopycatCNN"] and "—" in t.markdown()   # InI saw no KnockoffNets
    assert table_attacks(collect([r for r in recs if r.attack == "knockoff"])) is None


def test_a_profile_renders_the_cached_records_another_profile_made_for_its_plan():
    """cpu-extended reuses cpu's cells from the cache; their records say "cpu" and are its by key."""
    from bench.keys import cell_key, victim_key
    prof = report.get_profile("smoke")
    ds, d, a, lb, seed = ("mnist", "vanilla", "knockoff", "soft", 0)
    mine = S.cell(ds, d, a, lb, 90.0, 99.0, profile="smoke")
    mine.key = cell_key(prof, ds, d, a, lb, seed)
    theirs = S.cell(ds, d, a, lb, 91.0, 99.0, profile="other")
    theirs.key = cell_key(prof, ds, d, a, lb, seed)
    their_victim = S.victim(ds, d, 99.0, profile="other")
    their_victim.key = victim_key(prof, ds, d, seed)
    stranger = S.cell(ds, d, a, lb, 50.0, 99.0, profile="other")
    stranger.key = "not-in-the-plan"
    kept = report.select_records([mine, theirs, their_victim, stranger], "smoke", prof)
    assert kept == [mine, theirs, their_victim]
    assert report.select_records([mine, theirs], "smoke", None) == [mine]   # profile unknown to the code


def test_stale_records_of_a_planned_cell_are_skipped(capsys):
    """A run folder holds a cell's record from before a parameter change next to the new one:
    only the one the current plan names is taken; a group the plan names nothing of (an
    override) is kept whole."""
    from bench.keys import cell_key, victim_key
    prof = report.get_profile("smoke")
    ds, d, a, lb = ("mnist", "vanilla", "knockoff", "soft")
    new, old = S.cell(ds, d, a, lb, 98.0, 99.0, profile="smoke"), S.cell(ds, d, a, lb, 80.0, 99.0, profile="smoke")
    new.key, old.key = cell_key(prof, ds, d, a, lb, 0), "old-params"
    extra_seed = S.cell(ds, d, a, lb, 97.0, 99.0, profile="smoke", seed=7)   # --seeds: not in the plan
    extra_seed.key = "seed-7"
    override = S.cell(ds, d, "jbda", lb, 70.0, 99.0, profile="smoke")
    override.key = "budget-override"
    v_new, v_old = S.victim(ds, d, 99.0, profile="smoke"), S.victim(ds, d, 10.0, profile="smoke")
    v_new.key, v_old.key = victim_key(prof, ds, d, 0), "old-victim"
    kept = report.select_records([old, new, extra_seed, override, v_old, v_new], "smoke", prof)
    assert kept == [new, extra_seed, override, v_new]
    assert "skipping 2 stale records" in capsys.readouterr().err
    # a cell stolen from the old victim, its own re-run not yet done: stale once the new victim is
    # there; one on the new victim (a --budget override) stays
    on_old, on_new = S.cell(ds, d, "jbda", lb, 60.0, 99.0, profile="smoke"), override
    on_old.key, on_old.victim_key, on_new.victim_key = "jbda-old-victim", "old-victim", v_new.key
    assert report.select_records([on_old, on_new, v_old, v_new], "smoke", prof) == [on_new, v_new]
    assert report.select_records([on_old, v_old], "smoke", prof) == [on_old, v_old]   # no new victim yet
    # a seed the plan has, not yet re-run under the new parameters, is not averaged in either
    ci = report.get_profile("ci")
    new0, old1 = S.cell(ds, d, a, lb, 98.0, 99.0, profile="ci"), S.cell(ds, d, a, lb, 80.0, 99.0, profile="ci", seed=1)
    new0.key, old1.key = cell_key(ci, ds, d, a, lb, 0), "old-params-seed-1"
    assert report.select_records([new0, old1], "ci", ci) == [new0]


def test_readme_deviations_come_from_the_run_that_made_the_records(tmp_path):
    """profile.json (written by the run) wins over the code's profile, which may have moved on."""
    import json
    root = S.write(S.handful(), tmp_path)
    (root / "profile.json").write_text(json.dumps({"profile": {
        "name": "synth", "deviations": ["as the run was configured"],
        "roles": {"mnist": {"substitutes": ["queries: something else"]}}}}))
    report.render(root, tmp_path / "out", "synth", speed_dir=tmp_path / "none")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "- as the run was configured" in text and "- MNIST: queries: something else" in text


def test_readme_states_the_runs_wall_time_from_its_ledger(tmp_path):
    import json
    root = S.write(S.handful(), tmp_path)
    (root / "runs").mkdir()
    (root / "runs" / "a.json").write_text(json.dumps({
        "profile": "synth", "started": "2026-11-25T01:00:00Z", "ended": "2026-11-25T03:05:00Z",
        "last_progress": "2026-11-25T03:05:00Z", "status": "done", "wall_s": 7500.0, "git_commit": "abc123"}))
    report.render(root, tmp_path / "out", "synth", speed_dir=tmp_path / "none")
    assert "Wall time of the run: 2h05m over 1 invocation(s)" in (tmp_path / "out" / "README.md").read_text()


def test_answers_table_means_over_seeds(tmp_path):
    st = lambda e: {"id_test": {"entropy": 0.1, "max_prob": 0.95}, "queries": {"entropy": e, "max_prob": 0.5,
                                                                               "top_class_share": 0.3}}
    recs = [S.victim("mnist", "ini", 98.0, seed=s, extra={"answer_stats": st(1.0 + s)}) for s in (0, 1)]
    from bench.beyond import table_answers
    (row,) = table_answers(recs + [S.victim("mnist", "vanilla", 99.0)]).tidy
    assert row["seeds"] == 2 and float(row["queries_entropy"]) == 1.5 and float(row["id_test_max_prob"]) == 0.95
    assert table_answers([S.victim("mnist", "vanilla", 99.0)]) is None


def test_clone_tables_test_each_defense_against_vanilla_over_seeds(tmp_path):
    """Generated numbers: a defense 40 points below Vanilla on three seeds is marked significant,
    one within Vanilla's spread is not; the interval is Welch's (checked against SciPy)."""
    recs = []
    for seed, (van, strong, weak) in enumerate([(90.0, 50.0, 89.0), (91.0, 51.5, 94.0), (92.5, 52.0, 90.0)]):
        recs += [S.cell("mnist", "vanilla", "knockoff", "soft", van, 98.0, seed),
                 S.cell("mnist", "mad", "knockoff", "soft", strong, 98.0, seed),
                 S.cell("mnist", "ini", "knockoff", "soft", weak, 98.0, seed)]
    recs.append(S.cell("mnist", "am", "knockoff", "soft", 10.0, 98.0, 0))   # one seed: no test
    out = tmp_path / "out"
    report.render(S.write(recs, tmp_path), out, "synth", speed_dir=tmp_path / "none")
    lines = (out / "table2.md").read_text().splitlines()
    vs = [line for line in lines if "| Δ vs Vanilla" in line]
    assert len(vs) == 3   # MAD, AM, InI; not Vanilla itself, not the rows without records
    mad, am, ini = vs
    assert mad.split("|")[3].strip().endswith("]*")
    assert "*" not in ini.split("|")[3] and "[" in ini.split("|")[3]
    assert "(n<2)" in am.split("|")[3]
    rows = {(r["defense"], r["metric"]): r for r in _rows(out, "table2.csv")
            if r["dataset"] == "mnist" and r["label"] == "soft"}
    assert rows[("mad", "relative")]["vs_diff"] == ""   # tested on clone accuracy only
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = [50.0, 51.5, 52.0], [90.0, 91.0, 92.5]
    res = scipy_stats.ttest_ind(a, b, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    got = rows[("mad", "clone_acc")]
    assert float(got["vs_p"]) == pytest.approx(res.pvalue, rel=1e-3)
    assert float(got["vs_diff"]) - float(got["vs_half_ci95"]) == pytest.approx(lo, rel=1e-3)
    assert float(got["vs_diff"]) + float(got["vs_half_ci95"]) == pytest.approx(hi, rel=1e-3)


def test_run_cost_table_from_victims_training_seconds():
    """Training cost of the run's own victims: per-seed ratios to that seed's Vanilla (made-up
    seconds); victims without extra.train_s (older records) are left out, and with none the
    table is absent."""
    from bench.runcost import table_run_cost
    recs = [S.victim("mnist", "vanilla", 98.0, 0, extra={"train_s": {"vanilla": 10.0}}),
            S.victim("mnist", "vanilla", 98.0, 1, extra={"train_s": {"vanilla": 12.0}}),
            S.victim("mnist", "ini", 96.0, 0, extra={"train_s": {"ini": 80.0}}),
            S.victim("mnist", "ini", 96.0, 1, extra={"train_s": {"ini": 108.0}}),
            S.victim("mnist", "am", 96.0, 0, extra={"train_s": {"am-defender": 30.0, "am-mis": 20.0}}),
            S.victim("mnist", "mad", 97.0, 0)]
    t = table_run_cost(recs)
    rows = {r[2]: r for r in t.rows}
    assert set(rows) == {"Vanilla", "InI", "AM"}
    assert rows["InI"][3:] == [2, "94 (80-108)", "8.50x (8.00x-9.00x)"]
    assert rows["AM"][3:] == [1, "50", "5.00x"]          # units summed
    assert table_run_cost([S.victim("mnist", "vanilla", 98.0)]) is None


def test_speed_tables_say_when_a_run_fell_short_of_the_protocol():
    """A speed record with fewer rounds than the protocol (as results/speed/gpu's 3) is labelled
    in the report's notes too, not only in bench.speed's own table."""
    from bench.speedtables import protocol_notes
    short = protocol_notes({"kind": "speed-inference", "repeats": 3}, "gpu", "table4.md")
    assert any(n.startswith("**Below the protocol**: 3 repeat(s)") for n in short)
    assert not any("Below" in n for n in protocol_notes({"kind": "speed-inference", "repeats": 5}, "gpu", "table4.md"))


def test_every_registered_defense_is_named_by_its_label_in_tables():
    """A newcomer's defense file names itself in every table (its class's ``label``)."""
    import defenses  # noqa: F401
    from bench import paper as P
    from bench.registry import DEFENSES as REGISTRY
    for name in REGISTRY.names():
        want = P.DEFENSES[name][0] if name in P.DEFENSES else REGISTRY.lookup(name).label
        assert P.defense_label(name) == want, name
    assert P.defense_label("ini+grad2") == "InI + GRAD2" and P.defense_label("from-elsewhere") == "from-elsewhere"
