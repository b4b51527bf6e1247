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
