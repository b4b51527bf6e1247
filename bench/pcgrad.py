"""PCGrad (Yu et al., NeurIPS 2020; InI eq. 10): per-objective gradients in, one update out.

Each gradient g_i, visited in a random order of the others, is projected off every original
g_j it conflicts with (g_i^PC . g_j < 0): g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j.
The projected gradients are then averaged (the reference PCGrad's ``reduction="mean"``, which
InI's code uses). InI's eq. 10 prints ||g_i||^2 in the denominator; that is a typo: only
||g_j||^2 makes the step a projection (and is what PCGrad and InI's code do).

Every projected gradient is a linear combination of the originals, so the work is done on the
n x n Gram matrix: one pass over the P-dimensional vectors for the Gram matrix, one for the
result, whatever the number of projections.
"""
from __future__ import annotations

import torch


def gram(grads: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Dot products of flat gradients (n, n), accumulated in float64."""
    g = torch.stack(list(grads)) if not isinstance(grads, torch.Tensor) else grads
    return (g @ g.T).double()


def pcgrad_weights(gram_matrix: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """W (n, n) with g_i^PC = sum_j W[i, j] g_j, for the Gram matrix of the originals."""
    n = gram_matrix.shape[0]
    G = gram_matrix.double().cpu()
    W = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in torch.randperm(n, generator=generator).tolist():
            if j == i:
                continue
            dot = W[i] @ G[:, j]        # g_i^PC . g_j
            if dot < 0 and G[j, j] > 0:
                W[i, j] -= dot / G[j, j]
    return W


def pcgrad(grads: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """The PCGrad update: mean of the projected flat gradients (same dtype/device as grads)."""
    g = torch.stack(list(grads))
    W = pcgrad_weights(gram(g), generator)
    return (W.mean(0).to(g) @ g)


def cosines(gram_matrix: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities (n, n) from a Gram matrix; 0 where a gradient is zero."""
    d = gram_matrix.diagonal().clamp_min(0).sqrt()
    denom = d[:, None] * d[None, :]
    return torch.where(denom > 0, gram_matrix / denom.clamp_min(1e-300), torch.zeros_like(gram_matrix))


def pairwise_cosines(grads: list[torch.Tensor]) -> torch.Tensor:
    """Pairwise cosine similarities (n, n) of flat gradients."""
    return cosines(gram(grads))


def projected_gram(gram_matrix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the projected gradients (W G W^T), e.g. for their cosines."""
    G, W = gram_matrix.double().cpu(), weights.double().cpu()   # W is made on the CPU (pcgrad_weights)
    return W @ G @ W.T
