"""Export and load back a defended victim built on generated data."""
import pytest
import torch

from bench.data import ImageSet
from bench.export import export_victim, load_victim
from bench.train import Context, TrainConfig, seed_everything
from defenses import get_defense


def tiny_ctx():
    g = torch.Generator().manual_seed(0)  # generated data, not a real data set
    x = torch.randn(64, 1, 12, 12, generator=g)
    ds = ImageSet("gen", "train", x, torch.randint(0, 10, (64,), generator=g), 10, (0.1307,), (0.3081,))
    return Context("smallcnn", 10, 1, 12, ds, TrainConfig(epochs=1, batch_size=32), progress=False,
                   arch_params={"width": 4, "hidden": 16})


@pytest.mark.parametrize("name", ["vanilla", "vanilla+dcp"])
def test_roundtrip_gives_same_outputs(tmp_path, name):
    ctx = tiny_ctx()
    seed_everything(0)
    d = get_defense(name)
    d.build(ctx)
    for u in d.units():
        u.fit(ctx)
    d.eval()
    export_victim(d, ctx, tmp_path / "v", "gen")
    back = load_victim(tmp_path / "v")
    assert isinstance(back, torch.nn.Module)
    x = torch.randn(5, 1, 12, 12)
    assert torch.allclose(back(x), d(x), atol=1e-6)


def test_corrupt_export_is_named(tmp_path):
    from bench.io import CorruptFileError
    ctx = tiny_ctx()
    d = get_defense("vanilla")
    d.build(ctx)
    export_victim(d, ctx, tmp_path / "v", "gen")
    p = tmp_path / "v" / "state_dict.pt"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="state_dict.pt"):
        load_victim(tmp_path / "v")
