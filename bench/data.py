"""Data catalog: real image data sets as in-memory tensors, with the paper's normalization.

Files are looked up under the data root (``--data-root`` or ``$STEALBENCH_DATA``, default
``./data``) in torchvision's layout. MNIST-family IDX files are parsed straight from ``.gz``
or uncompressed files, so a read-only root (``../shared/data``) works without writing into it.
Missing files are downloaded with torchvision into a writable cache (``$STEALBENCH_CACHE``,
default ``~/.cache/stealbench/data``) when the network allows; otherwise a
``DataMissingError`` names the files that were looked for.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .registry import DATASETS

GRAY_MEAN, GRAY_STD = (0.1307,), (0.3081,)
# The InI reference normalizes every colour set (CIFAR-10, CIFAR-100, SVHN, TinyImageNet) with
# one transform: these values (src/datasets/__init__.py; the std is the widely copied
# 0.2023/0.1994/0.2010, not CIFAR-10's pixel std 0.2470/0.2435/0.2616).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class DataMissingError(FileNotFoundError):
    """A data set's files are not under the data root and could not be downloaded."""


@dataclass
class ImageSet:
    """Normalized images (N, C, H, W) float32 and integer labels, held in memory."""
    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    augment: bool = False  # random-crop(pad 4) + flip during training (CIFAR-style sets)

    def __len__(self):
        return len(self.y)

    def subset(self, n: int | None, seed: int = 0) -> "ImageSet":
        """The first n images of a fixed seeded permutation (None: all)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageSet(self.name, f"{self.split}[{n}]", self.x[idx], self.y[idx],
                        self.num_classes, self.mean, self.std, self.augment)


def data_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("STEALBENCH_DATA") or "data").expanduser()


def cache_root() -> Path:
    return Path(os.environ.get("STEALBENCH_CACHE", "~/.cache/stealbench/data")).expanduser()


def _search_dirs(root) -> list[Path]:
    dirs = [data_root(root)]
    if cache_root() not in dirs:
        dirs.append(cache_root())
    return dirs


def _download_dir(root) -> Path:
    r = data_root(root)
    return r if os.access(r if r.exists() else r.parent, os.W_OK) else cache_root()


def _normalize(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    x = x_uint8.float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


# ---------------------------------------------------------------- IDX (MNIST family)
def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, got {arr.size}")
    return arr.reshape(shape)


def _find_file(dirs: list[Path], rel: str) -> Path | None:
    for d in dirs:
        for cand in (d / rel, d / (rel + ".gz")):
            if cand.exists():
                return cand
    return None


def _idx_set(folder, prefix, split, root, tv_download, transpose=False):
    files = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    rels = [f"{folder}/raw/{prefix}{f}" for f in files]
    dirs = _search_dirs(root)
    found = [_find_file(dirs, r) for r in rels]
    if None in found:
        _try_download(tv_download, root, [r + ".gz" for r, f in zip(rels, found) if f is None])
        found = [_find_file(dirs, r) for r in rels]
    images, labels = read_idx(found[0]), read_idx(found[1])
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    if transpose:  # EMNIST is stored transposed
        x = x.transpose(2, 3).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _try_download(download_fn, root, missing: list[str]):
    target = _download_dir(root)
    try:
        download_fn(str(target))
    except Exception as e:  # offline, DNS failure, HTTP error, ...
        looked = ", ".join(str(d) for d in _search_dirs(root))
        raise DataMissingError(
            f"missing data files {missing} (looked under {looked}); download failed: "
            f"{type(e).__name__}: {str(e)[:200]}. Put the files there or set --data-root / "
            f"$STEALBENCH_DATA (see README, 'Data').") from None


def _tv(cls_name, **kw):
    def fn(target):
        import torchvision.datasets as tvd
        getattr(tvd, cls_name)(target, download=True, **kw)
    return fn


def _gray(name, x, y, split, num_classes):
    return ImageSet(name, split, _normalize(x, GRAY_MEAN, GRAY_STD), y, num_classes,
                    GRAY_MEAN, GRAY_STD)


@DATASETS.register("mnist")
def mnist(split="train", root=None):
    x, y = _idx_set("MNIST", "", split, root, _tv("MNIST", train=split == "train"))
    return _gray("mnist", x, y, split, 10)


@DATASETS.register("fashionmnist")
def fashionmnist(split="train", root=None):
    x, y = _idx_set("FashionMNIST", "", split, root, _tv("FashionMNIST", train=split == "train"))
    return _gray("fashionmnist", x, y, split, 10)


@DATASETS.register("kmnist")
def kmnist(split="train", root=None):
    x, y = _idx_set("KMNIST", "", split, root, _tv("KMNIST", train=split == "train"))
    return _gray("kmnist", x, y, split, 10)


def _emnist(kind, n_classes, label_offset, upright):
    def load(split="train", root=None):
        x, y = _idx_set("EMNIST", f"emnist-{kind}-", split, root,
                        _tv("EMNIST", split=kind, train=split == "train"), transpose=upright)
        return _gray(f"emnist-{kind}{'-upright' if upright else ''}", x, y - label_offset, split, n_classes)
    return load


# EMNIST's files store each image transposed. The plain names serve them as stored, which is
# what torchvision's EMNIST (and so InI's reference code) gives; "-upright" transposes them to
# MNIST's orientation. The reference's "emnist" query set is split="digits".
for _kind, _k, _off in (("letters", 26, 1), ("balanced", 47, 0), ("digits", 10, 0)):
    DATASETS.register(f"emnist-{_kind}")(_emnist(_kind, _k, _off, upright=False))
    DATASETS.register(f"emnist-{_kind}-upright")(_emnist(_kind, _k, _off, upright=True))


# ---------------------------------------------------------------- colour sets
def _tv_colour(cls_name, split, root, files, **kw):
    """Load a torchvision colour data set; files are relative to the data root."""
    import torchvision.datasets as tvd
    dirs = _search_dirs(root)
    base = next((d for d in dirs if all((d / f).exists() for f in files)), None)
    if base is None:
        _try_download(_tv(cls_name, **kw), root, files)
        base = next(d for d in dirs if all((d / f).exists() for f in files))
    ds = getattr(tvd, cls_name)(str(base), download=False, **kw)
    data = ds.data if cls_name != "SVHN" else np.transpose(ds.data, (0, 2, 3, 1))
    x = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)
    y = torch.as_tensor(np.array(ds.targets if hasattr(ds, "targets") else ds.labels), dtype=torch.long)
    return x, y


@DATASETS.register("cifar10")
def cifar10(split="train", root=None):
    x, y = _tv_colour("CIFAR10", split, root, ["cifar-10-batches-py/batches.meta"], train=split == "train")
    return ImageSet("cifar10", split, _normalize(x, CIFAR10_MEAN, CIFAR10_STD), y, 10,
                    CIFAR10_MEAN, CIFAR10_STD, augment=split == "train")


@DATASETS.register("cifar100")
def cifar100(split="train", root=None):
    x, y = _tv_colour("CIFAR100", split, root, ["cifar-100-python/meta"], train=split == "train")
    return ImageSet("cifar100", split, _normalize(x, CIFAR10_MEAN, CIFAR10_STD), y, 100,
                    CIFAR10_MEAN, CIFAR10_STD, augment=split == "train")


@DATASETS.register("svhn")
def svhn(split="train", root=None):
    x, y = _tv_colour("SVHN", split, root, [f"{split}_32x32.mat"], split=split)
    return ImageSet("svhn", split, _normalize(x, CIFAR10_MEAN, CIFAR10_STD), y, 10,
                    CIFAR10_MEAN, CIFAR10_STD)


TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@DATASETS.register("tinyimagenet")
def tinyimagenet(split="train", root=None):
    """TinyImageNet-200 train images (as OOD data), resized to 32x32 with CIFAR-10 stats."""
    import torch.nn.functional as F
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.utils import download_and_extract_archive
    rel = "tiny-imagenet-200/train"
    dirs = _search_dirs(root)
    base = next((d for d in dirs if (d / rel).is_dir()), None)
    if base is None:
        _try_download(lambda t: download_and_extract_archive(TINY_URL, t), root, [rel + "/"])
        base = next(d for d in dirs if (d / rel).is_dir())
    ds = ImageFolder(str(base / rel))
    from torchvision.transforms.functional import pil_to_tensor
    x = torch.stack([pil_to_tensor(ds.loader(p).convert("RGB")) for p, _ in ds.samples])
    x = F.interpolate(x.float(), size=32, mode="bilinear", align_corners=False).round().clamp(0, 255).byte()
    y = torch.tensor([t for _, t in ds.samples])
    return ImageSet("tinyimagenet", split, _normalize(x, CIFAR10_MEAN, CIFAR10_STD), y, 200,
                    CIFAR10_MEAN, CIFAR10_STD)


def load(name: str, split: str = "train", root=None) -> ImageSet:
    """Load a registered data set split ('train' or 'test'). With ``$STEALBENCH_GENERATED=N``
    (the rehearsal) every set is N generated images of the real set's format instead."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; accepted: 'train', 'test'")
    loader = DATASETS.lookup(name)
    n = os.environ.get("STEALBENCH_GENERATED")
    if n:
        return generated_like(name, split, int(n))
    return loader(split=split, root=root)


# (channels, side, classes, mean, std, train augmentation) of every registered set
FORMATS = {
    **{n: (1, 28, 10, GRAY_MEAN, GRAY_STD, False) for n in ("mnist", "fashionmnist", "kmnist")},
    **{f"emnist-{k}{u}": (1, 28, c, GRAY_MEAN, GRAY_STD, False)
       for k, c in (("letters", 26), ("balanced", 47), ("digits", 10)) for u in ("", "-upright")},
    "cifar10": (3, 32, 10, CIFAR10_MEAN, CIFAR10_STD, True),
    "cifar100": (3, 32, 100, CIFAR10_MEAN, CIFAR10_STD, True),
    "svhn": (3, 32, 10, CIFAR10_MEAN, CIFAR10_STD, False),
    "tinyimagenet": (3, 32, 200, CIFAR10_MEAN, CIFAR10_STD, False),
}


def generated_like(name: str, split: str, n: int) -> ImageSet:
    """n random images and labels in ``name``'s format (generated data for rehearsals, not
    the data set); labels follow the brightest quadrant so that something can be learned."""
    if name not in FORMATS:
        raise ValueError(f"no generated format for data set {name!r}; known: {', '.join(sorted(FORMATS))}")
    c, side, k, mean, std, aug = FORMATS[name]
    g = torch.Generator().manual_seed(sum(map(ord, f"{name}/{split}")))
    x = torch.randint(0, 256, (n, c, side, side), generator=g, dtype=torch.uint8)
    y = torch.randint(0, k, (n,), generator=g)
    h = side // 2
    for q in range(4):  # brighten one quadrant per label residue
        rows = (y % 4) == q
        x[rows, :, (q // 2) * h:(q // 2 + 1) * h, (q % 2) * h:(q % 2 + 1) * h] //= 4
        x[rows, :, (q // 2) * h:(q // 2 + 1) * h, (q % 2) * h:(q % 2 + 1) * h] += 191
    return ImageSet(name, f"{split}[generated {n}]", _normalize(x, mean, std), y, k, mean, std,
                    augment=aug and split == "train")


def with_victim_stats(ds: ImageSet, mean: tuple, std: tuple) -> ImageSet:
    """``ds`` normalized with the victim's mean/std: every image the victim sees goes through
    the victim's transform, whichever data set it comes from (as the reference code does).
    Channels are matched first (gray <-> RGB, in pixel space). Same statistics: ``ds`` itself."""
    if tuple(ds.mean) == tuple(mean) and tuple(ds.std) == tuple(std):
        return ds
    m = torch.tensor(ds.mean).view(1, -1, 1, 1)
    s = torch.tensor(ds.std).view(1, -1, 1, 1)
    pixels = ds.x * s + m
    c = len(mean)
    if pixels.shape[1] != c:
        pixels = pixels.mean(1, keepdim=True) if c == 1 else pixels.expand(-1, c, -1, -1)
    x = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return ImageSet(ds.name, ds.split, x.contiguous(), ds.y, ds.num_classes, tuple(mean), tuple(std), ds.augment)


def as_victim_input(ds: ImageSet, in_channels: int, size: int) -> ImageSet:
    """Adapt channels (gray<->rgb) and spatial size (pad or resize) to the victim's input."""
    import torch.nn.functional as F
    x = ds.x
    if x.shape[1] != in_channels:
        x = x.mean(1, keepdim=True) if in_channels == 1 else x.expand(-1, in_channels, -1, -1)
    if x.shape[-1] != size:
        if x.shape[-1] < size:  # pad with black (pixel 0 in this set's normalization), even for an empty set
            pad = (size - x.shape[-1]) // 2
            black = -torch.tensor(ds.mean) / torch.tensor(ds.std)
            black = black.view(1, -1, 1, 1) if len(black) == x.shape[1] else black.mean().view(1, 1, 1, 1)
            out = black.expand(len(x), x.shape[1], size, size).clone()
            out[:, :, pad:pad + x.shape[-2], pad:pad + x.shape[-1]] = x
            x = out
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if x is ds.x:
        return ds
    return ImageSet(ds.name, ds.split, x.contiguous(), ds.y, ds.num_classes, ds.mean, ds.std, ds.augment)


def batches(x: torch.Tensor, y: torch.Tensor | None, batch_size: int, generator=None,
            shuffle: bool = True, augment: bool = False, drop_last: bool = False):
    """Yield (x, y) mini-batches from in-memory tensors; augmentation is CIFAR-style."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        xb = x[idx]
        if augment:
            xb = random_crop_flip(xb, generator)
        yield xb, (y[idx] if y is not None else None)


def random_crop_flip(x: torch.Tensor, generator=None, pad: int = 4) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out
