"""Data loaders: small generated IDX files (gz and raw) and the real files under the data root."""
import gzip
import struct

import numpy as np
import pytest
import torch

from bench import data as D


def write_idx(path, arr, compress):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


@pytest.mark.parametrize("compress", [True, False])
def test_generated_idx_roundtrip(tmp_path, compress, monkeypatch):
    # generated data: 12 random 28x28 images, labels 0..9
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte", imgs, compress)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels, compress)
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path / "cache"))
    ds = D.load("mnist", "test", tmp_path)
    assert ds.x.shape == (12, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.tolist() == labels.tolist()
    expect = (imgs[3] / 255.0 - 0.1307) / 0.3081
    assert np.allclose(ds.x[3, 0].numpy(), expect, atol=1e-5)


def test_truncated_idx_is_rejected(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    write_idx(p, np.zeros((4, 28, 28)), False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(p)


def test_missing_files_named_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(D, "_tv", lambda *a, **k: offline)
    with pytest.raises(D.DataMissingError) as e:
        D.load("kmnist", "train", tmp_path / "empty")
    assert "KMNIST/raw/train-images-idx3-ubyte.gz" in str(e.value)
    assert "network unreachable" in str(e.value)


def test_unknown_split():
    with pytest.raises(ValueError, match="'train', 'test'"):
        D.load("mnist", "validation")


@pytest.mark.parametrize("name,split,n,mean_pixel", [
    ("mnist", "train", 60000, 33.32), ("mnist", "test", 10000, None),
    ("fashionmnist", "train", 60000, 72.94), ("fashionmnist", "test", 10000, None),
    ("kmnist", "test", 10000, 47.06)])
def test_real_files(real_root, name, split, n, mean_pixel):
    ds = D.load(name, split, real_root)
    assert len(ds) == n and ds.x.shape[1:] == (1, 28, 28)
    assert sorted(ds.y.unique().tolist()) == list(range(10))
    if mean_pixel:
        pixel = (ds.x * 0.3081 + 0.1307).mean().item() * 255
        assert abs(pixel - mean_pixel) < 0.05


def test_kmnist_train_missing_offline(real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "_tv", lambda *a, **k: (lambda t: (_ for _ in ()).throw(OSError("offline"))))
    with pytest.raises(D.DataMissingError, match="KMNIST/raw/train-images"):
        D.load("kmnist", "train", real_root)


def test_augment_shapes_and_padding():
    x = torch.randn(6, 3, 32, 32)
    out = D.random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    g = D.as_victim_input(D.ImageSet("g", "t", torch.randn(2, 1, 28, 28), torch.zeros(2), 10, (0.,), (1.,)), 3, 32)
    assert g.x.shape == (2, 3, 32, 32)


def test_padding_is_black_and_works_on_an_empty_split():
    """28x28 sets padded to VGG's 32x32 with pixel 0 in the set's normalization; an empty split
    (full profiles hold no validation images) used to crash on x.min() (found by the rehearsal)."""
    ds = D.ImageSet("g", "t", torch.randn(3, 1, 28, 28), torch.zeros(3), 10, D.GRAY_MEAN, D.GRAY_STD)
    out = D.as_victim_input(ds, 1, 32).x
    assert out.shape == (3, 1, 32, 32) and torch.equal(out[:, :, 2:30, 2:30], ds.x)
    assert torch.allclose(out[:, :, 0], torch.tensor(-0.1307 / 0.3081))
    empty = D.ImageSet("g", "val", torch.zeros(0, 1, 28, 28), torch.zeros(0), 10, D.GRAY_MEAN, D.GRAY_STD)
    assert D.as_victim_input(empty, 1, 32).x.shape == (0, 1, 32, 32)


def test_every_role_uses_the_victims_normalization(monkeypatch):
    """A CIFAR-100 query image fed to a CIFAR-10 victim goes through CIFAR-10's transform
    (reference code), not CIFAR-100's. Generated pixel data, loaders stubbed."""
    from bench import run as RUN
    from bench.profiles import CIFAR_ROLES, Profile
    g = torch.Generator().manual_seed(0)
    pixels = {n: torch.randint(0, 256, (40, 3, 32, 32), generator=g) for n in ("cifar10", "cifar100", "svhn", "tinyimagenet")}
    stats = {"cifar10": (D.CIFAR10_MEAN, D.CIFAR10_STD), "cifar100": ((0.51, 0.49, 0.44), (0.27, 0.26, 0.28)),
             "svhn": (D.CIFAR10_MEAN, D.CIFAR10_STD), "tinyimagenet": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))}

    def fake_load(name, split="train", root=None):
        m, s = stats[name]
        return D.ImageSet(name, split, D._normalize(pixels[name], m, s), torch.zeros(40, dtype=torch.long),
                          10, m, s, augment=name == "cifar10" and split == "train")

    monkeypatch.setattr(D, "load", fake_load)
    prof = Profile(name="t", arch="smallcnn", roles={"cifar10": CIFAR_ROLES["cifar10"]}, defenses=("vanilla",),
                   attacks={}, train={}, val_size=4)
    roles = RUN._load_roles(prof, "cifar10", None)
    for role, name in (("query", "cifar100"), ("ood", "tinyimagenet"), ("hash", "svhn")):
        assert roles[role].mean == D.CIFAR10_MEAN and roles[role].std == D.CIFAR10_STD
        want = D._normalize(pixels[name], D.CIFAR10_MEAN, D.CIFAR10_STD)
        assert torch.allclose(roles[role].x, want, atol=1e-5), role
    # OOD training images get the ID set's crop + flip, as in the reference; queries and hash do not
    assert roles["ood"].augment and not roles["query"].augment and not roles["hash"].augment


def test_victim_stats_keep_gray_sets_bit_identical():
    ds = D.ImageSet("g", "t", torch.randn(3, 1, 28, 28), torch.zeros(3), 10, D.GRAY_MEAN, D.GRAY_STD)
    assert D.with_victim_stats(ds, D.GRAY_MEAN, D.GRAY_STD) is ds
    rgb = D.with_victim_stats(ds, D.CIFAR10_MEAN, D.CIFAR10_STD)
    assert rgb.x.shape == (3, 3, 28, 28)
    pix = ds.x * 0.3081 + 0.1307
    assert torch.allclose(rgb.x[:, 2], (pix[:, 0] - 0.4465) / 0.2010, atol=1e-5)


@pytest.mark.parametrize("kind", ["digits", "letters", "balanced"])
def test_emnist_raw_orientation_is_the_references_and_upright_is_selectable(tmp_path, monkeypatch, kind):
    """Generated IDX files: the plain name serves images as stored (torchvision's EMNIST, which
    InI's reference uses); "-upright" transposes them to MNIST's orientation."""
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 28, 28))
    labels = np.arange(5) + (1 if kind == "letters" else 0)
    raw = tmp_path / "EMNIST" / "raw"
    write_idx(raw / f"emnist-{kind}-t10k-images-idx3-ubyte", imgs, True)
    write_idx(raw / f"emnist-{kind}-t10k-labels-idx1-ubyte", labels, True)
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path / "cache"))
    stored = D.load(f"emnist-{kind}", "test", tmp_path)
    upright = D.load(f"emnist-{kind}-upright", "test", tmp_path)
    px = lambda ds: ds.x[:, 0] * 0.3081 + 0.1307
    assert torch.allclose(px(stored), torch.from_numpy(imgs / 255.0).float(), atol=1e-5)
    assert torch.allclose(px(upright), px(stored).transpose(1, 2), atol=1e-6)
    assert stored.y.tolist() == list(range(5))
