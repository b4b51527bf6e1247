"""bench.sweep: each combination is a cell of the profile with the query role and attack recipe
replaced; the victim (its key) stays the same, so it is trained once. No training here."""
from types import SimpleNamespace

from bench import sweep
from bench.keys import cell_key, victim_key
from bench.profiles import get_profile


def test_variant_swaps_queries_and_recipe_but_not_the_victim():
    p = get_profile("cpu")
    v = sweep.variant(p, "fashionmnist", "mnist:train", "knockoff", {"budget": 20000, "lr": 0.03})
    assert v.roles["fashionmnist"].query == "mnist" and v.roles["fashionmnist"].query_split == "train"
    assert v.attacks["knockoff"]["budget"] == 20000 and v.attacks["knockoff"]["epochs"] == p.attacks["knockoff"]["epochs"]
    assert "curve_budgets" not in v.attacks["knockoff"]
    assert victim_key(v, "fashionmnist", "vanilla", 0) == victim_key(p, "fashionmnist", "vanilla", 0)
    assert cell_key(v, "fashionmnist", "vanilla", "knockoff", "soft", 0) != \
        cell_key(p, "fashionmnist", "vanilla", "knockoff", "soft", 0)


def test_combos_is_the_product_per_query_set():
    args = SimpleNamespace(query=["a:test", "b"], budget=[10, 20], epochs=[5], lr=None)
    got = sweep.combos(args)
    assert got == [("a:test", {"budget": 10, "epochs": 5}), ("a:test", {"budget": 20, "epochs": 5}),
                   ("b", {"budget": 10, "epochs": 5}), ("b", {"budget": 20, "epochs": 5})]


def test_unknown_dataset_is_one_line_exit_2(capsys):
    assert sweep.main(["--dataset", "cifar10", "--query", "mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data set 'cifar10' is not in profile cpu") and err.count("\n") == 1


def test_collect_renders_the_records_already_there(tmp_path, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    import synthetic_records as S
    cells = []
    for q, acc in (("kmnist:test", 98.0), ("fashionmnist:train", 90.0)):
        for s in (0, 1):
            c = S.cell("mnist", "vanilla", "knockoff", "soft", acc + s, 99.0, seed=s)
            c.data_roles, c.attack_params = {"query": q}, {"budget": 10000, "epochs": 10, "lr": 0.03}
            cells.append(c)
    S.write(cells, tmp_path)
    assert sweep.main(["--collect", "--dataset", "mnist", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "sweep.md").read_text()
    assert "| kmnist:test | 10000 | 10 | 0.03 | soft | 99.00 ± 0.00 | 98.50 ± 0.71 |" in text
    assert sweep.main(["--dataset", "mnist"]) == 2 and "--query is required" in capsys.readouterr().err
