"""Synthetic result records for the report and check tests (generated numbers, not results)."""
from __future__ import annotations

from bench import records as R


def victim(dataset, defense, acc, seed=0, arch="smallcnn", profile="synth", extra=None):
    return R.VictimRecord(profile=profile, dataset=dataset, arch=arch, defense=defense,
                          defense_label=defense, defense_params={}, seed=seed, benign_acc=acc,
                          extra=extra or {}, provenance={"git_commit": "abc123"})


def cell(dataset, defense, attack, label, acc, benign, seed=0, arch="smallcnn", profile="synth",
         status="ok", curve=None, budget=None):
    ok = status == "ok"
    return R.CellRecord(profile=profile, dataset=dataset, arch=arch, defense=defense,
                        defense_label=defense, defense_params={}, attack=attack,
                        attack_label=attack, attack_params={}, label=label, seed=seed,
                        status=status, benign_acc=benign, clone_acc=acc if ok else None,
                        relative=acc / benign if ok else None, fidelity=acc if ok else None,
                        curve=curve or {}, budget=budget, error=None if ok else "boom",
                        provenance={"git_commit": "abc123"})


def handful(profile="synth"):
    """MNIST vanilla/mad/ini (two seeds for vanilla), one failed cell, one ablation, a curve,
    PCGrad cosines; FashionMNIST has no records at all."""
    cos = {"pcgrad_cosines": {"L_ben|L_iso": {"before": [-0.5, -0.2, 0.1, 0.3],
                                               "after": [0.0, 0.05, 0.1, 0.3]}}}
    recs = [victim("mnist", "vanilla", 98.0, 0, profile=profile),
            victim("mnist", "vanilla", 99.0, 1, profile=profile),
            victim("mnist", "mad", 97.5, profile=profile),
            victim("mnist", "ini", 96.0, profile=profile, extra={"fit_log": {"ini": cos}}),
            cell("mnist", "vanilla", "knockoff", "soft", 90.0, 98.0, 0, profile=profile,
                 curve={"500": 70.0, "1000": 80.0}, budget=2000),
            cell("mnist", "vanilla", "knockoff", "soft", 92.0, 99.0, 1, profile=profile,
                 curve={"500": 72.0, "1000": 82.0}, budget=2000),
            cell("mnist", "vanilla", "knockoff", "hard", 85.0, 98.0, profile=profile),
            cell("mnist", "mad", "knockoff", "soft", 80.0, 97.5, profile=profile),
            cell("mnist", "mad", "knockoff", "hard", 0.0, 97.5, profile=profile, status="failed"),
            cell("mnist", "ini", "jbda", "soft", 60.0, 96.0, profile=profile),
            cell("mnist", "dcp", "jbda", "hard", 70.0, 98.0, profile=profile),
            cell("mnist", "ini-iso", "knockoff", "soft", 88.0, 97.0, profile=profile)]
    return recs


def write(records, root):
    for i, r in enumerate(records):
        sub = "victims" if r.kind == "victim" else "cells"
        R.save(root / "records" / sub / f"{i:03d}.json", r)
    return root


def speed(root):
    """A results/speed/cpu/ folder with one inference and one training record (made up)."""
    from bench.io import write_json
    prov = {"device": "cpu (test)", "git_commit": "abc123", "versions": {"torch": "x", "cuda": None}}
    rows = [{"defense": "vanilla", "label": "Vanilla", "style": "", "batch_size": 128,
             "total_s": 2.0, "ratio_to_vanilla": 1.0, "extrapolated": False},
            {"defense": "mad", "label": "MAD [reference, paper-style]", "style": "paper-style",
             "batch_size": 128, "total_s": 60.0, "ratio_to_vanilla": 30.0, "extrapolated": True},
            {"defense": "mad", "label": "MAD [batched, ours]", "style": "ours",
             "batch_size": 128, "total_s": 2.4, "ratio_to_vanilla": 1.2, "extrapolated": False}]
    write_json(root / "cpu" / "speed.json",
               {"kind": "speed-inference", "arch": "resnet18", "input_shape": "3x32x32",
                "runs": 20, "batch_sizes": [128], "provenance": prov, "rows": rows})
    write_json(root / "cpu" / "train.json",
               {"kind": "speed-train", "arch": "resnet18", "epochs": 1, "train_size": 64,
                "provenance": prov,
                "rows": [{"defense": "vanilla", "label": "Vanilla", "seconds": 10.0,
                          "ratio_to_vanilla": 1.0},
                         {"defense": "ini", "label": "InI", "seconds": 100.0,
                          "ratio_to_vanilla": 10.0}]})
    return root
