"""Cache keys and record paths: a hash of everything that decides a victim or a cell."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .io import config_hash
from .profiles import Profile
from .roles import roles_record

def base_config(profile: Profile, dataset: str, seed: int) -> dict:
    """What a victim's training uses, and nothing else: the attacker's query set is not in it,
    so trying another query set reuses every trained victim."""
    return {"dataset": dataset, "arch": profile.arch, "arch_params": profile.arch_params,
            "train": asdict(profile.train[dataset]), "train_size": profile.train_size,
            "val_size": profile.val_size, "ood_size": profile.ood_size,
            "roles": training_roles(profile, dataset), "seed": seed}


def training_roles(profile: Profile, dataset: str) -> dict:
    r = roles_record(profile, dataset)
    return {k: r[k] for k in ("id", "ood", "hash")}


def unit_key(profile, dataset, seed, unit) -> str:
    return config_hash({**base_config(profile, dataset, seed), "unit": unit.name,
                        "params": unit.train_params()})


def defense_params(profile: Profile, defense_name: str, dataset: str | None = None) -> dict:
    """get_defense kwargs: the profile's params for the name (a data set's overrides on top),
    and for a composed ``a+b`` also a's own params, so ``ini+mad`` reuses the very InI that
    ``ini`` trained."""
    def own(name):  # a composed name's post-processor gets its own params, then the name's
        post, out = name.rsplit("+", 1)[-1], {}
        for src in (profile.defense_params, profile.dataset_defense_params.get(dataset, {}) if dataset else {}):
            out.update(src.get(post, {}) if post != name else {})
            out.update(src.get(name, {}))
        return out

    params = own(defense_name)
    if "+" in defense_name:
        base = own(defense_name.rsplit("+", 1)[0])
        if base:
            params["base_params"] = base
    return params


def resolved_defense_params(profile, defense_name, dataset=None) -> dict:
    """Every parameter the defense will run with, defaults included (base's too), so that a
    changed default is a new cache entry, never a stale hit."""
    from defenses import get_defense
    d = get_defense(defense_name, **defense_params(profile, defense_name, dataset))
    out = {"params": dict(d.params)}
    if getattr(d, "base", None) is not None:
        out["base"] = {"name": d.base.name, "params": dict(d.base.params)}
    return out


def resolved_attack_params(profile, attack) -> dict:
    from attacks import get_attack
    return dict(get_attack(attack, **profile.attacks[attack]).params)


def victim_key(profile, dataset, defense_name, seed) -> str:
    return config_hash({**base_config(profile, dataset, seed), "defense": defense_name,
                        "params": resolved_defense_params(profile, defense_name, dataset),
                        "tune": profile.tune, "tol": profile.tune_tolerance,
                        **({"tune_anchor": profile.tune_anchor, "tune_split": profile.tune_split,
                            # tuning falls back to the knob-off accuracy where Vanilla's is out of reach
                            "tune_unreachable": "knob-off"}
                           if profile.tune else {}),
                        "test_size": profile.test_size})


def cell_key(profile, dataset, defense_name, attack, label, seed) -> str:
    return config_hash({"victim": victim_key(profile, dataset, defense_name, seed), "attack": attack,
                        "attack_params": resolved_attack_params(profile, attack), "label": label,
                        "query_size": profile.query_size, "query": roles_record(profile, dataset)["query"],
                        # only when set, so the keys of the runs made before it existed still hold
                        **({"clone_arch_params": profile.clone_arch_params} if profile.clone_arch_params else {})})


def victim_record_path(out, dataset, defense_name, seed, key) -> Path:
    return Path(out) / "records" / "victims" / f"{dataset}-{defense_name}-s{seed}-{key}.json"


def cell_record_path(out, dataset, defense_name, attack, label, seed, key) -> Path:
    return Path(out) / "records" / "cells" / f"{dataset}-{defense_name}-{attack}-{label}-s{seed}-{key}.json"
