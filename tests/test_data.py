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
