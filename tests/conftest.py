"""Shared fixtures. Real data comes from $STEALBENCH_DATA or ../shared/data (CI has it)."""
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _real_root():
    for cand in (os.environ.get("STEALBENCH_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "MNIST" / "raw").is_dir():
            return str(cand)
    return None


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def real_root():
    root = _real_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs the real data: set STEALBENCH_DATA or put ../shared/data beside the repo")
        pytest.skip("real data not found (set STEALBENCH_DATA)")
    return root


@pytest.fixture
def tiny_profile():
    """A seconds-scale slice of the smoke profile on real MNIST."""
    from bench.profiles import get_profile
    from bench.train import TrainConfig
    return replace(get_profile("smoke"), name="tiny", train_size=3000, test_size=500, query_size=2000,
                   ood_size=500, val_size=200,
                   train={"mnist": TrainConfig(epochs=2, lr=0.05, step_every=2)},
                   attacks={"knockoff": {"budget": 300, "epochs": 2, "lr": 0.01},
                            "jbda": {"seed_size": 20, "rounds": 2, "epochs_per_round": 2, "lr": 0.01}})


@pytest.fixture
def one_thread(_threads):
    """Tiny models: a second thread only adds synchronization (30x slower on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
