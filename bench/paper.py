"""The InI paper's published numbers, and the names that map our records onto its tables.

``results/paper_reference.csv`` is a verbatim copy of ``../shared/spec/paper_reference.csv``,
the InI paper's published numbers ("Isolation and Induction: Training Robust Deep Neural
Networks against Model Stealing Attacks", ACM MM 2023: Tables 1-5, B.1, C.1, E.1-E.3),
one value per row: table, arch, dataset, defense, attack, label, metric, value.
Accuracies are in %, ``relative`` is a ratio, times are seconds on the paper's RTX 3080.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REFERENCE_CSV = Path(__file__).resolve().parent.parent / "results" / "paper_reference.csv"

# data set registry name -> paper column name
DATASETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST",
            "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

# defense registry name -> (display label, paper row name or None when not in the paper)
DEFENSES = {
    "vanilla": ("Vanilla", "Vanilla"),
    "mad": ("MAD", "MAD"),
    "am": ("AM", "AM"),
    "edm": ("EDM", "EDM"),
    "ini": ("InI", "InI"),
    "ini+mad": ("InI + MAD", "InI+MAD"),
    "ini+am": ("InI + AM", "InI+AM"),
    "dcp": ("DCP (not in paper)", None),
}
MAIN_ORDER = list(DEFENSES)

# Table 5 rows: registry name -> (display label, paper row name)
ABLATIONS = {
    "vanilla": ("Vanilla", "Vanilla"),
    "ini-iso": ("L_iso", "L_iso"),
    "ini-ind": ("L_ind", "L_ind"),
    "ini-nogradnorm": ("w/o grad L_ig", "InI w/o grad-norm"),
    "ini": ("L_iso + L_ind (InI)", "InI"),
}
ABLATION_ONLY = {"ini-iso", "ini-ind", "ini-nogradnorm"}

# Table C.1 rows: registry name -> (display label, paper row name)
ADV_SURROGATE = {
    "vanilla": ("Vanilla", "Vanilla"),
    "ini": ("InI", "InI"),
    "ini-adv": ("Adv. training 1 (weak C)", "Adv Training 1"),
    "ini-adv-strong": ("Adv. training 2 (strong C)", "Adv Training 2"),
}
ADV_SURROGATE_ONLY = {"ini-adv", "ini-adv-strong"}

ATTACKS = {"knockoff": "KnockoffNets", "jbda": "JBDA"}

# Table B.1 / Table 4 rows: our defense -> paper row (MAD trains nothing beyond Vanilla)
TRAIN_ROWS = {"vanilla": "Vanilla/MAD", "mad": "Vanilla/MAD", "am": "AM", "edm": "EDM",
              "ini": "InI"}

ARCH_LABELS = {"resnet18": "ResNet-18", "vgg16": "VGG-16", "smallcnn": "SmallCNN"}


def paper_arch(arch: str) -> str:
    """The paper architecture our arch is compared with (ResNet-18 unless VGG-16)."""
    return "vgg16" if arch == "vgg16" else "resnet18"


def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def dataset_label(name: str) -> str:
    return DATASETS.get(name, name)


def defense_rank(name: str) -> int:
    """Table order: the paper's defenses, then the Table 5 ablations, then Table C.1's; others last."""
    order = MAIN_ORDER + list(ABLATIONS) + list(ADV_SURROGATE)
    return order.index(name) if name in order else len(order)


def defense_label(name: str, ablation: bool = False) -> str:
    """The paper's label; else the registered class's ``label`` (a newcomer's defense file
    names itself in every table); a composition "a+b" reads "A + B"; else the name."""
    table = ABLATIONS if ablation and name in ABLATIONS else DEFENSES
    if name in table:
        return table[name][0]
    if not isinstance(name, str):
        return name
    registered = _registered_label(name)
    if registered:
        return registered
    if "+" in name:
        return " + ".join(defense_label(part) for part in name.split("+"))
    return name


def _registered_label(name: str) -> str | None:
    try:
        import defenses  # noqa: F401  registers the built-in defenses
        from .registry import DEFENSES as REGISTRY
        return getattr(REGISTRY.lookup(name), "label", None)
    except Exception:   # unknown here (a record from another install): its name is its label
        return None


def paper_defense(name: str, ablation: bool = False) -> str | None:
    table = ABLATIONS if ablation else DEFENSES
    return table[name][1] if name in table else None


@dataclass(frozen=True)
class PaperRef:
    """Lookup of published values: (table, arch, dataset, defense, attack, label, metric)."""
    values: dict

    def get(self, table, arch, dataset, defense, attack="", label="", metric="clone_acc"):
        if defense is None or dataset is None:
            return None
        return self.values.get((str(table), arch, dataset, defense, attack or "", label or "",
                                metric))

    def rows(self, table) -> list[tuple]:
        return [k + (v,) for k, v in self.values.items() if k[0] == str(table)]


def load_paper(path=None) -> PaperRef:
    path = Path(path or REFERENCE_CSV)
    values = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["table"], row["arch"], row["dataset"], row["defense"],
                   row["attack"], row["label"], row["metric"])
            values[key] = float(row["value"])
    return PaperRef(values)
