"""Result records: one small typed JSON file per victim and per attack cell.

Tables are rendered from these records only (RobustBench-style), never from models.
"""
from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, field

from .io import read_json, write_json

SCHEMA = 1


@dataclass
class VictimRecord:
    """A trained (defended) victim and its benign accuracy on the ID test set."""
    profile: str
    dataset: str
    arch: str
    defense: str              # registry name, e.g. "ini+mad"
    defense_label: str        # display name, e.g. "InI+MAD"
    defense_params: dict      # including tuned serving knobs
    seed: int
    benign_acc: float         # % on the ID test set
    key: str = ""
    unit_keys: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # e.g. DCP top-1 change rate, tuning trace
    data_roles: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    kind: str = "victim"
    schema: int = SCHEMA


@dataclass
class CellRecord:
    """One attack cell: (data set, architecture, defense, attack, label mode, seed)."""
    profile: str
    dataset: str
    arch: str
    defense: str
    defense_label: str
    defense_params: dict
    attack: str
    attack_label: str
    attack_params: dict
    label: str                # "soft" | "hard"
    seed: int
    status: str = "ok"        # "ok" | "failed"
    benign_acc: float | None = None
    clone_acc: float | None = None   # the clone as the attack returned it (final epoch / round)
    clone_acc_best: float | None = None   # best over the reference's test points (its max(acc_list))
    clone_acc_checkpoints: list = field(default_factory=list)   # KnockoffNets: per epoch; JBDA: per round
    relative: float | None = None    # clone_acc / benign_acc
    fidelity: float | None = None    # % agreement of clone and victim top-1 on the test set
    queries_used: int | None = None
    budget: int | None = None
    curve: dict = field(default_factory=dict)   # budget -> clone acc (KnockoffNets budget curves)
    detected_at: int | None = None   # a stream monitor refused the account after this many answered queries
    detection: dict = field(default_factory=dict)   # its verdict (monitor, position "at", W), the clone scored
    attack_log: dict = field(default_factory=dict)  # what the attack says it did (the adaptive attacker's fallback)
    error: str | None = None
    traceback: str | None = None
    key: str = ""
    victim_key: str = ""
    data_roles: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    kind: str = "cell"
    schema: int = SCHEMA


def save(path, record) -> None:
    write_json(path, asdict(record))


def load(path):
    d = read_json(path)
    cls = VictimRecord if d.get("kind") == "victim" else CellRecord
    known = set(cls.__dataclass_fields__)
    return cls(**{k: v for k, v in d.items() if k in known})


def load_all(results_dir) -> list:
    """Every record under results_dir/records (victims and cells)."""
    paths = sorted(glob.glob(os.path.join(results_dir, "records", "**", "*.json"), recursive=True))
    return [load(p) for p in paths]
