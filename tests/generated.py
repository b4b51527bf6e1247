"""Small generated data for unit tests (random images and labels, not a real data set)."""
import torch

from bench.data import ImageSet


def generated_set(n, name, seed, classes=10, size=28):
    """Random images and labels: generated data, not a real data set."""
    g = torch.Generator().manual_seed(seed)
    return ImageSet(name, "generated", torch.randn(n, 1, size, size, generator=g),
                    torch.randint(0, classes, (n,), generator=g), classes, (0.0,), (1.0,))
