"""Data roles of one victim data set (ID train/val/test, OOD, hash, queries), in the victim's input format."""
from __future__ import annotations

from dataclasses import replace

import torch

from . import data as D
from .io import config_hash
from .profiles import Profile
from .train import Context

_ROLES_CACHE: dict = {}


def load_roles(profile: Profile, dataset: str, data_root: str | None) -> dict:
    """Every data role of one victim data set, adapted to the victim's input shape (cached)."""
    key = (config_hash(profile.describe()), dataset, str(data_root))
    if key not in _ROLES_CACHE:
        if len(_ROLES_CACHE) >= 2:
            _ROLES_CACHE.clear()
        _ROLES_CACHE[key] = _load_roles(profile, dataset, data_root)
    return _ROLES_CACHE[key]


def _load_roles(profile: Profile, dataset: str, data_root: str | None) -> dict:
    from .models import input_size
    r = profile.roles[dataset]
    train = D.load(r.id, "train", data_root)
    test = D.load(r.id, "test", data_root).subset(profile.test_size, seed=1)
    size = input_size(profile.arch, train.x.shape[-1])
    ch = train.x.shape[1]
    # every role goes through the victim's transform: its channels, size and mean/std
    adapt = lambda ds: D.as_victim_input(D.with_victim_stats(ds, train.mean, train.std), ch, size)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(12345))
    val_idx, train_idx = perm[:profile.val_size], perm[profile.val_size:]
    if profile.train_size:
        train_idx = train_idx[:profile.train_size]
    sub = lambda ds, idx, split: D.ImageSet(ds.name, split, ds.x[idx], ds.y[idx], ds.num_classes,
                                            ds.mean, ds.std, ds.augment)
    out = {"train": adapt(sub(train, train_idx.sort().values, "train")),
           "val": adapt(sub(train, val_idx, "val")), "test": adapt(test),
           "in_channels": ch, "input_size": size, "num_classes": train.num_classes}
    if r.ood:
        ood = adapt(D.load(r.ood, r.ood_split, data_root).subset(profile.ood_size, seed=2))
        # the reference trains on OOD images with the ID set's training transform (crop + flip on CIFAR)
        out["ood"] = replace(ood, augment=True) if train.augment and not ood.augment else ood
    if r.hash:
        out["hash"] = adapt(D.load(r.hash, r.hash_split, data_root))
    out["query"] = adapt(D.load(r.query, r.query_split, data_root).subset(profile.query_size, seed=3))
    return out


def roles_record(profile: Profile, dataset: str) -> dict:
    r = profile.roles[dataset]
    return {"id": r.id, "ood": f"{r.ood}:{r.ood_split}" if r.ood else None,
            "hash": f"{r.hash}:{r.hash_split}" if r.hash else None,
            "query": f"{r.query}:{r.query_split}", "substitutes": list(r.substitutes)}


def make_context(profile, dataset, seed, data_root, device, progress) -> Context:
    d = load_roles(profile, dataset, data_root)
    return Context(arch=profile.arch, num_classes=d["num_classes"], in_channels=d["in_channels"],
                   input_size=d["input_size"], id_train=d["train"], train=profile.train[dataset],
                   ood_train=d.get("ood"), hash_set=d.get("hash"), device=device, seed=seed,
                   progress=progress, arch_params=dict(profile.arch_params))
