"""The GPU profiles' rehearsal: shapes, coverage and a real end-to-end run (slow)."""
import pytest
import torch

from bench import data as D
from bench import rehearse
from bench.profiles import get_profile
from bench.registry import DATASETS


def test_every_registered_data_set_has_a_generated_format(monkeypatch):
    monkeypatch.setenv("STEALBENCH_GENERATED", "5")
    for name in DATASETS.names():
        ds = D.load(name, "train")
        c, side, k = D.FORMATS[name][:3]
        assert ds.x.shape == (5, c, side, side) and ds.num_classes == k and int(ds.y.max()) < k


def test_generated_sets_are_reproducible_and_labelled_by_quadrant(monkeypatch):
    monkeypatch.setenv("STEALBENCH_GENERATED", "64")
    a, b = D.load("cifar10", "test"), D.load("cifar10", "test")
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, D.load("cifar10", "train").x)
    top_left = a.x[:, :, :16, :16].mean((1, 2, 3))
    assert (top_left[a.y % 4 == 0].mean() > top_left[a.y % 4 != 0].mean() + 0.5)


@pytest.mark.parametrize("name", rehearse.GPU_PROFILES)
def test_shrunk_profile_keeps_every_cell_type(name):
    from bench.run import plan
    full, small = get_profile(name), rehearse.shrink(get_profile(name))
    assert small.arch == full.arch and small.roles == full.roles and small.labels == full.labels
    key = lambda p: {(ds, df, at, lb) for ds, df, at, lb, _ in plan(p)}
    assert key(small) == key(full)
    assert small.tune == full.tune and small.tune_split == full.tune_split
    assert small.dataset_defense_params == full.dataset_defense_params
    assert all(cfg.epochs == 1 for cfg in small.train.values())


@pytest.mark.slow
@pytest.mark.parametrize("name,dataset", [("full", "cifar100"), ("full-vgg", "mnist")])
def test_rehearsal_runs_every_cell_of_a_data_set(tmp_path, name, dataset):
    recs = rehearse.rehearse(name, tmp_path, [dataset], progress=False)
    assert recs and all(r.status == "ok" for r in recs), [r.error for r in recs if r.status != "ok"]
    assert (tmp_path / "README.md").exists()
