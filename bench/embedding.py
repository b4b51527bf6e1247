"""Figure D.1's data: t-SNE of a victim's penultimate features on ID test images and on the
attacker's (out-of-distribution) queries, coloured by the victim's predicted class.

The paper embeds 5,000 MNIST test and 5,000 EMNIST-Letters images through the victims'
convolutional layers. Here ``n`` images of each set (default 1,000: t-SNE is quadratic, and
this runs on CPU once per exported victim), one joint embedding so that the two panels share
their axes, scikit-learn's TSNE with a fixed seed. Stored in the victim record (rounded to 2
decimals), so the figure is rendered from records, never from models.
"""
from __future__ import annotations

import torch

from .train import predict

TSNE_POINTS = 1000


def penultimate(defense):
    """The served network's feature extractor, or None (ensembles, hash-routed victims)."""
    model = defense.nets["model"] if "model" in getattr(defense, "nets", {}) else None
    return getattr(model, "features", None)


def tsne_record(defense, id_set, ood_set, device, seed: int = 0, n: int = TSNE_POINTS) -> dict:
    """{"id": [[x, y, class], ...], "ood": [...], ...} or {"skipped": why}."""
    feats = penultimate(defense)
    if feats is None:
        return {"skipped": "no single served network with a features() extractor"}
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return {"skipped": "scikit-learn is not installed (pip install scikit-learn)"}
    g = torch.Generator().manual_seed(seed)
    pick = lambda s: s.x[torch.randperm(len(s.x), generator=g)[:n]]
    xs = {"id": pick(id_set), "ood": pick(ood_set)}
    f = {k: predict(feats, x, device).flatten(1) for k, x in xs.items()}
    cls = {k: predict(defense, x, device).argmax(1) for k, x in xs.items()}
    both = torch.cat([f["id"], f["ood"]]).numpy()
    emb = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(both)
    k = len(f["id"])
    pts = lambda e, c: [[round(float(a), 2), round(float(b), 2), int(y)] for (a, b), y in zip(e, c)]
    return {"id": pts(emb[:k], cls["id"]), "ood": pts(emb[k:], cls["ood"]), "n": n,
            "id_set": id_set.name, "ood_set": ood_set.name, "method": "sklearn TSNE, perplexity 30, pca init"}
