"""One attack cell: a defended victim behind the oracle, one attack, one label mode, one seed."""
from __future__ import annotations

import json
import time
import traceback

from . import data as D
from . import records as R
from .io import CorruptFileError, provenance
from .keys import cell_key, cell_record_path, victim_key
from .oracle import Oracle, Refused
from .profiles import Profile
from .roles import load_roles, roles_record
from .train import accuracy, predict, seed_everything
from .victims import build_victim, served_top1

def attack_context(profile, defense_name, attack, victim, roles, seed, device="cpu", progress=False,
                   attacker_arch=None, on_checkpoint=None):
    """What the attacker is given: the clone's architecture, its query and seed sets, the data's
    public normalization, and the defense's name, public params and factory (bench.shadow)."""
    from attacks import AttackContext
    from .shadow import attacker_view
    arch = clone_arch_params(profile) if attacker_arch is None else attacker_arch
    test = roles["test"]
    return AttackContext(clone_arch=profile.arch, num_classes=roles["num_classes"],
                         in_channels=roles["in_channels"], input_size=roles["input_size"],
                         query_set=roles["query"].x, seed_set=seed_set(attack, roles["train"]), device=device,
                         seed=seed, progress=progress, arch_params=arch, mean=test.mean, std=test.std,
                         **attacker_view(victim, defense_name, profile.arch, arch, roles, device, seed),
                         on_checkpoint=on_checkpoint)


def run_cell(profile, dataset, defense_name, attack_name, label, seed, out, data_root=None,
             device="cpu", progress=True) -> R.CellRecord:
    """One attack cell; a failure is recorded in the cell's record, never raised."""
    from attacks import get_attack
    t0 = time.time()
    key = cell_key(profile, dataset, defense_name, attack_name, label, seed)
    params = profile.attacks[attack_name]
    rec = R.CellRecord(profile=profile.name, dataset=dataset, arch=profile.arch, defense=defense_name,
                       defense_label=defense_name, defense_params={}, attack=attack_name,
                       attack_label=attack_name, attack_params=dict(params), label=label, seed=seed,
                       key=key, victim_key=victim_key(profile, dataset, defense_name, seed),
                       data_roles=roles_record(profile, dataset))
    try:
        victim, vrec = build_victim(profile, dataset, defense_name, seed, out, data_root, device, progress)
        rec.defense_label, rec.defense_params, rec.benign_acc = vrec.defense_label, vrec.defense_params, vrec.benign_acc
        attack = get_attack(attack_name, **params)
        rec.attack_label, rec.attack_params = attack.display, dict(attack.params)
        attacker_arch = clone_arch_params(profile)
        if profile.clone_arch_params:
            rec.attack_params["clone_arch_params"] = dict(profile.clone_arch_params)
        roles = load_roles(profile, dataset, data_root)
        test = roles["test"]
        tape = CheckpointTape(rec, test, device) if profile.clone_checkpoints else None
        actx = attack_context(profile, defense_name, attack, victim, roles, seed, device,
                              progress is True, attacker_arch, on_checkpoint=tape)
        oracle = Oracle(victim, attack.budget(), label, device)
        seed_everything(seed)
        try:
            clone = attack.run(oracle, actx)
            clone_top1 = predict(clone, test.x, device).argmax(1)
        except Refused as refusal:   # a stream monitor stopped the account: score what it had
            clone_top1 = tape.last_top1 if tape else None
            rec.detected_at, rec.detection = refusal.answered, {**refusal.verdict, "clone": (
                "last checkpoint" if clone_top1 is not None else "none: refused before a clone existed")}
        rec.attack_log = json.loads(json.dumps(getattr(attack, "log", {}) or {}, default=str))
        victim_top1 = served_top1(out, rec.victim_key, len(test.y))
        if victim_top1 is None:
            victim_top1 = predict(victim, test.x, device).argmax(1)
        if clone_top1 is not None:
            rec.clone_acc = accuracy(clone_top1, test.y)
            rec.fidelity = accuracy(clone_top1, victim_top1)
        rec.clone_acc_best = max(rec.clone_acc_checkpoints, default=rec.clone_acc) if tape else None
        rec.relative = rec.clone_acc / rec.benign_acc if rec.benign_acc and rec.clone_acc is not None else None
        rec.queries_used, rec.budget = oracle.queries_used, oracle.budget
        rec.curve = {str(b): accuracy(predict(c, test.x, device).argmax(1), test.y)
                     for b, c in getattr(attack, "curve", {}).items()}
    except (KeyboardInterrupt, CorruptFileError, D.DataMissingError):
        raise  # the user must act: never record these as a failed cell
    except Exception as e:  # isolate the failure in this cell's record
        rec.status, rec.error, rec.traceback = "failed", f"{type(e).__name__}: {e}", traceback.format_exc()
    rec.provenance = provenance(device)
    rec.wall_time_s = time.time() - t0
    R.save(cell_record_path(out, dataset, defense_name, attack_name, label, seed, key), rec)
    return rec


def clone_arch_params(profile: Profile) -> dict:
    """The attacker's clone (and shadow): the victim's architecture, with the profile's
    ``clone_arch_params`` on top (a wider or narrower clone; default: the victim's, as the paper)."""
    return {**profile.arch_params, **profile.clone_arch_params}


class CheckpointTape:
    """The runner's end of ``actx.checkpoint``: each test point's clone accuracy, and the last
    clone's test-set top-1 (what a refused attack is scored by)."""

    def __init__(self, rec, test, device):
        self.rec, self.test, self.device, self.last_top1 = rec, test, device, None

    def __call__(self, clone) -> None:
        self.last_top1 = predict(clone, self.test.x, self.device).argmax(1)
        self.rec.clone_acc_checkpoints.append(accuracy(self.last_top1, self.test.y))


def seed_set(attack, train):
    """Only the training images the threat model gives the attacker (JBDA: its first seeds)."""
    n = attack.seed_images()
    return train.x[:n].clone() if n else None


def plan(profile: Profile) -> list[tuple]:
    """Every cell of a profile as (dataset, defense, attack, label, seed)."""
    return [(ds, df, at, lb, sd) for ds in profile.roles for df in profile.defenses_for(ds)
            for at in profile.attacks_for(df) for lb in profile.labels_for(at) for sd in profile.seeds_for(df)]


def cached_cell(profile, out, cell) -> R.CellRecord | None:
    ds, df, at, lb, sd = cell
    path = cell_record_path(out, ds, df, at, lb, sd, cell_key(profile, ds, df, at, lb, sd))
    if not path.exists():
        return None
    return R.load(path)
