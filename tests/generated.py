"""Small generated data for unit tests (random images and labels, not a real data set)."""
import torch

from bench.data import ImageSet


def generated_set(n, name, seed, classes=10, size=28):
    """Random images and labels: generated data, not a real data set."""
    g = torch.Generator().manual_seed(seed)
    return ImageSet(name, "generated", torch.randn(n, 1, size, size, generator=g),
                    torch.randint(0, classes, (n,), generator=g), classes, (0.0,), (1.0,))


def tiny_ctx(n=256, epochs=1, batch_size=128, hash_set=False):
    """A Context on generated ID/OOD (and hash) sets with a very narrow smallcnn."""
    from bench.train import Context, TrainConfig
    return Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=28,
                   id_train=generated_set(n, "gen-id", 0), ood_train=generated_set(n, "gen-ood", 1),
                   hash_set=generated_set(n, "gen-hash", 2) if hash_set else None,
                   train=TrainConfig(epochs=epochs, batch_size=batch_size), progress=False,
                   arch_params={"width": 4, "hidden": 16})


class LinearVictim(torch.nn.Module):
    """Stand-in victim on generated 1x8x8 inputs: softmax of a seeded linear map."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return torch.softmax(self.lin(x.flatten(1)), 1)
