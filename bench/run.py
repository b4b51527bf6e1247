"""Matrix runner: ``python -m bench.run --matrix smoke|ci|cpu|full``.

A cell is (data set, architecture, defense, attack, label mode, seed). Victims are trained
once per (data set, architecture, defense unit, seed) and reused by every attack cell; both
are cached under the output folder by a hash of their full config, so an interrupted run
resumes where it stopped and a finished one re-runs in seconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import data as D
from . import records as R
from .io import CorruptFileError, config_hash, load_state, provenance, read_json, save_state, write_json
from .oracle import Oracle
from .progress import LineProgress
from .profiles import Profile, get_profile, with_filters
from .train import Context, accuracy, predict, seed_everything


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2."""


# ------------------------------------------------------------------ data
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


# ------------------------------------------------------------------ keys
def base_config(profile: Profile, dataset: str, seed: int) -> dict:
    return {"dataset": dataset, "arch": profile.arch, "arch_params": profile.arch_params,
            "train": asdict(profile.train[dataset]), "train_size": profile.train_size,
            "val_size": profile.val_size, "ood_size": profile.ood_size,
            "roles": roles_record(profile, dataset), "seed": seed}


def unit_key(profile, dataset, seed, unit) -> str:
    return config_hash({**base_config(profile, dataset, seed), "unit": unit.name,
                        "params": unit.train_params()})


def defense_params(profile: Profile, defense_name: str, dataset: str | None = None) -> dict:
    """get_defense kwargs: the profile's params for the name (a data set's overrides on top),
    and for a composed ``a+b`` also a's own params, so ``ini+mad`` reuses the very InI that
    ``ini`` trained."""
    def own(name):
        over = profile.dataset_defense_params.get(dataset, {}) if dataset else {}
        post = name.rsplit("+", 1)[-1]
        return {**profile.defense_params.get(name, {}), **over.get(post, {}), **over.get(name, {})}

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
                        **({"tune_anchor": profile.tune_anchor, "tune_split": profile.tune_split}
                           if profile.tune else {}),
                        "test_size": profile.test_size})


def cell_key(profile, dataset, defense_name, attack, label, seed) -> str:
    return config_hash({"victim": victim_key(profile, dataset, defense_name, seed), "attack": attack,
                        "attack_params": resolved_attack_params(profile, attack), "label": label,
                        "query_size": profile.query_size, "query": roles_record(profile, dataset)["query"]})


def victim_record_path(out, dataset, defense_name, seed, key) -> Path:
    return Path(out) / "records" / "victims" / f"{dataset}-{defense_name}-s{seed}-{key}.json"


def cell_record_path(out, dataset, defense_name, attack, label, seed, key) -> Path:
    return Path(out) / "records" / "cells" / f"{dataset}-{defense_name}-{attack}-{label}-s{seed}-{key}.json"


# ------------------------------------------------------------------ victims
def build_victim(profile, dataset, defense_name, seed, out, data_root=None, device="cpu", progress=True):
    """Train (or load) every unit of a defended victim; returns (defense, VictimRecord)."""
    from defenses import get_defense
    t0 = time.time()
    ctx = make_context(profile, dataset, seed, data_root, device, progress)
    seed_everything(seed)
    defense = get_defense(defense_name, **defense_params(profile, defense_name, dataset))
    defense.build(ctx)
    defense.to(device)
    keys, fit_logs = [], {}
    for unit in defense.units():
        key = unit_key(profile, dataset, seed, unit)
        keys.append(key)
        ckpt = Path(out) / "victims" / key / "state.pt"
        with file_lock(ckpt.with_name(".lock")):  # parallel workers train a shared unit once
            trained = not ckpt.exists()
            if trained:
                seed_everything(seed)
                unit.fit(ctx)
                save_state(ckpt, unit.nets.state_dict())
                write_json(ckpt.with_name("spec.json"), {"unit": unit.name, "params": unit.train_params(),
                                                         **base_config(profile, dataset, seed)})
                if getattr(unit, "fit_log", None):
                    write_json(ckpt.with_name("fit_log.json"), unit.fit_log)
        if not trained:  # a model just fitted is already in memory
            unit.nets.load_state_dict(load_state(ckpt))
        log_path = ckpt.with_name("fit_log.json")
        if log_path.exists():
            fit_logs[unit.name] = read_json(log_path)
    defense.eval()
    vkey = victim_key(profile, dataset, defense_name, seed)
    path = victim_record_path(out, dataset, defense_name, seed, vkey)
    if path.exists():
        rec = R.load(path)
        for k, v in rec.defense_params.items():
            if k in defense.knobs:
                defense.set_knob(k, v)
        return defense, rec
    extra = {"fit_log": fit_logs} if fit_logs else {}
    roles = load_roles(profile, dataset, data_root)
    if profile.tune and getattr(type(defense), "tune_knob", None):
        anchor = None
        if profile.tune_anchor == "vanilla" and defense_name != "vanilla":
            anchor = build_victim(profile, dataset, "vanilla", seed, out, data_root, device, progress)[0]
        extra.update(tune_knobs(profile, defense, roles, device, anchor))
    served = predict(defense, roles["test"].x, device)
    save_state(served_path(out, vkey), served.argmax(1))   # every attack cell's fidelity reuses it
    extra.update(serving_stats(defense, roles["test"].x, served, device))
    rec = R.VictimRecord(
        profile=profile.name, dataset=dataset, arch=profile.arch, defense=defense_name,
        defense_label=defense.display, defense_params=dict(defense.params), seed=seed,
        benign_acc=accuracy(served.argmax(1), roles["test"].y), key=vkey, unit_keys=keys, extra=extra,
        data_roles=roles_record(profile, dataset), train_config=asdict(profile.train[dataset]),
        provenance=provenance(device), wall_time_s=time.time() - t0)
    R.save(path, rec)
    if defense_name in profile.export:
        from .export import export_victim
        export_victim(defense, ctx, Path(out) / "victims" / "export" / f"{dataset}-{defense_name}-s{seed}",
                      dataset, {"benign_acc": rec.benign_acc, "git_commit": rec.provenance["git_commit"]})
    return defense, rec


def served_path(out, vkey) -> Path:
    return Path(out) / "victims" / "served" / f"{vkey}.pt"


def served_top1(out, vkey, n):
    """The victim's served top-1 on the test set, saved when its record was made (None: absent)."""
    path = served_path(out, vkey)
    if not path.exists():
        return None
    top1 = load_state(path)
    return top1 if isinstance(top1, torch.Tensor) and top1.shape == (n,) else None


class file_lock:
    """Exclusive flock on a file (POSIX); non-blocking raises BlockingIOError when held."""

    def __init__(self, path, blocking: bool = True):
        self.path = Path(path)
        self.blocking = blocking

    def __enter__(self):
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except OSError:
            self.f.close()
            raise
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def tune_knobs(profile, defense, roles, device, anchor=None) -> dict:
    """Similar-benign-accuracy tuning of a post-processor's serving knob (MAD, AM, DCP).

    The accuracy to stay close to is the anchor's: the Vanilla victim of the same data set and
    seed (``tune_anchor="vanilla"``, the paper's protocol; pass it as ``anchor``) or the served
    model without the post-processing (``"base"``); measured on ``profile.tune_split``.
    """
    if not getattr(type(defense), "tune_knob", None):
        return {}
    from .tune import tune
    split = roles[profile.tune_split]
    ref_model = anchor if anchor is not None else defense.base
    ref = accuracy(predict(ref_model, split.x, device).argmax(1), split.y)
    result = tune(defense, split.x, split.y, reference_acc=ref, tolerance=profile.tune_tolerance, device=device)
    what = ("vanilla victim (same data set and seed)" if anchor is not None
            else "base model without post-processing")
    return {"tuning": {**result, "anchor": what, "split": profile.tune_split, "reference_acc": ref}}


def serving_stats(defense, x, served, device) -> dict:
    """How often serving changes the top-1 of the trained model (post-processors only)."""
    base = getattr(defense, "base", None)
    if base is None:
        return {}
    base_top1 = predict(base, x, device).argmax(1)
    return {"top1_change_rate": 100.0 * (served.argmax(1) != base_top1).float().mean().item()}

# ------------------------------------------------------------------ cells
def run_cell(profile, dataset, defense_name, attack_name, label, seed, out, data_root=None,
             device="cpu", progress=True) -> R.CellRecord:
    """One attack cell; a failure is recorded in the cell's record, never raised."""
    from attacks import AttackContext, get_attack
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
        roles = load_roles(profile, dataset, data_root)
        test = roles["test"]
        actx = AttackContext(clone_arch=profile.arch, num_classes=roles["num_classes"],
                             in_channels=roles["in_channels"], input_size=roles["input_size"],
                             query_set=roles["query"].x, seed_set=seed_set(attack, roles["train"]), device=device,
                             seed=seed, progress=progress, arch_params=dict(profile.arch_params),
                             mean=test.mean, std=test.std,
                             on_checkpoint=lambda c: rec.clone_acc_checkpoints.append(
                                 accuracy(predict(c, test.x, device).argmax(1), test.y)))
        oracle = Oracle(victim, attack.budget(), label, device)
        seed_everything(seed)
        clone = attack.run(oracle, actx)
        clone_top1 = predict(clone, test.x, device).argmax(1)
        victim_top1 = served_top1(out, rec.victim_key, len(test.y))
        if victim_top1 is None:
            victim_top1 = predict(victim, test.x, device).argmax(1)
        rec.clone_acc = accuracy(clone_top1, test.y)
        rec.clone_acc_best = max(rec.clone_acc_checkpoints, default=rec.clone_acc)
        rec.relative = rec.clone_acc / rec.benign_acc if rec.benign_acc else None
        rec.fidelity = accuracy(clone_top1, victim_top1)
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


def seed_set(attack, train):
    """Only the training images the threat model gives the attacker (JBDA: its first seeds)."""
    n = attack.seed_images()
    return train.x[:n].clone() if n else None


def plan(profile: Profile) -> list[tuple]:
    """Every cell of a profile as (dataset, defense, attack, label, seed)."""
    return [(ds, df, at, lb, sd) for ds in profile.roles for df in profile.defenses_for(ds)
            for at in profile.attacks for lb in profile.labels for sd in profile.seeds]


def cached_cell(profile, out, cell) -> R.CellRecord | None:
    ds, df, at, lb, sd = cell
    path = cell_record_path(out, ds, df, at, lb, sd, cell_key(profile, ds, df, at, lb, sd))
    if not path.exists():
        return None
    return R.load(path)


def _worker(profile, cell, out, data_root, device, progress, threads):
    torch.set_num_threads(threads)
    return run_cell(profile, *cell, out=out, data_root=data_root, device=device, progress=progress)


def _victim_worker(profile, vic, out, data_root, device, progress, threads):
    torch.set_num_threads(threads)
    ds, df, sd = vic
    try:
        build_victim(profile, ds, df, sd, out, data_root, device, progress)
        return None
    except (KeyboardInterrupt, CorruptFileError, D.DataMissingError):
        raise
    except Exception as e:  # the victim's cells record the error when they run
        return f"{ds}/{df}/s{sd}: {type(e).__name__}: {e}"


def run_matrix(profile, out=None, datasets=None, defenses=None, attacks=None, labels=None, seeds=None,
               jobs=1, data_root=None, device="cpu", progress=True, retry_failed=False,
               backend="local", scheduler=None) -> list[R.CellRecord]:
    """Run (or load from cache) every cell of a profile; returns the cell records."""
    profile = select(get_profile(profile) if isinstance(profile, str) else profile,
                     datasets, defenses, attacks, labels, seeds)
    out = Path(out or Path("results") / profile.name)
    cells = plan(profile)
    todo = []
    done = {}
    for c in cells:
        rec = cached_cell(profile, out, c)
        if rec is not None and (rec.status == "ok" or not retry_failed):
            done[c] = rec
        else:
            todo.append(c)
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    bars = progress and jobs == 1 and sys.stderr.isatty()   # a terminal: bars; a log: lines
    args = (out, data_root, device, bars, threads)
    victims = sorted({(c[0], c[1], c[4]) for c in todo}, key=lambda v: ("+" in v[1], v))
    log = LineProgress(len(victims), "victim", progress and not bars)
    for v, msg in zip(victims, _map(_victim_worker, profile, victims, jobs, args, backend, scheduler)):
        if msg:
            print(f"victim failed: {msg}", file=sys.stderr)
        log.done("/".join(map(str, v)), "FAILED" if msg else "ready")
    log = LineProgress(len(todo), "cell", progress and not bars)
    for c, rec in zip(todo, _map(_worker, profile, todo, jobs, args, backend, scheduler)):
        done[c] = rec
        log.done("/".join(map(str, c)), f"clone {rec.clone_acc:.2f} ({rec.wall_time_s:.0f} s)"
                 if rec.status == "ok" else f"FAILED {rec.error}")
    records = [done[c] for c in cells]
    write_summary(profile, out, records)
    return records


def _map(fn, profile, items, jobs, args, backend, scheduler):
    if not items:
        return []
    if backend == "dask":
        from .backends import dask_map
        return dask_map(fn, profile, items, jobs, args, scheduler)
    if jobs == 1:   # lazily, so progress lines appear as units finish
        return (fn(profile, it, *args) for it in items)
    from joblib import Parallel, delayed
    return Parallel(n_jobs=jobs, return_as="generator")(delayed(fn)(profile, it, *args) for it in items)


def select(profile: Profile, datasets=None, defenses=None, attacks=None, labels=None, seeds=None,
           budget=None, jbda_rounds=None) -> Profile:
    """Restrict a profile to the given names, checking each against what exists."""
    from attacks import get_attack, list_attacks
    from defenses import get_defense
    kw = {}
    if budget is not None or jbda_rounds is not None:
        profile = with_filters(profile, attacks=override_attacks(profile.attacks, budget, jbda_rounds))
    if datasets:
        for d in datasets:
            if d not in profile.roles:
                raise UsageError(_unknown("data set", d, profile.roles, f"in profile {profile.name!r}"))
        kw["roles"] = {d: profile.roles[d] for d in datasets}
    if defenses:
        for d in defenses:
            try:
                get_defense(d)
            except ValueError as e:
                raise UsageError(str(e)) from None
        kw["defenses"], kw["extra_defenses"] = tuple(defenses), {}
    if attacks:
        for a in attacks:
            if a not in list_attacks():
                raise UsageError(_unknown("attack", a, list_attacks()))
        kw["attacks"] = {a: profile.attacks.get(a, {}) for a in attacks}
    for a, params in kw.get("attacks", profile.attacks).items():
        try:
            get_attack(a, **params)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if labels:
        for lb in labels:
            if lb not in ("soft", "hard"):
                raise UsageError(f"unknown label mode {lb!r}; accepted: soft, hard")
        kw["labels"] = tuple(labels)
    if seeds:
        kw["seeds"] = tuple(seeds)
    return with_filters(profile, **kw)


def override_attacks(attacks: dict, budget=None, jbda_rounds=None) -> dict:
    """--budget sets KnockoffNets' budget and caps JBDA's queries; --jbda-rounds sets JBDA's rounds."""
    if budget is not None and (not isinstance(budget, int) or budget <= 0):
        raise UsageError(f"--budget must be a positive integer, got {budget!r}")
    if jbda_rounds is not None and jbda_rounds < 1:
        raise UsageError(f"--jbda-rounds must be >= 1, got {jbda_rounds}")
    out = {}
    for name, params in attacks.items():
        params = dict(params)
        if name == "knockoff" and budget is not None:
            params["budget"] = budget
        if name == "jbda":
            if budget is not None:
                params["max_queries"] = budget
            if jbda_rounds is not None:
                params["rounds"] = jbda_rounds
        out[name] = params
    return out


def _unknown(what, name, valid, where="") -> str:
    import difflib
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{' ' + where if where else ''}.{hint} Valid: {', '.join(sorted(valid))}"


# ------------------------------------------------------------------ output
def write_summary(profile, out, records) -> None:
    from .io import write_text
    from tabulate import tabulate
    rows = []
    for r in records:
        rows.append([r.dataset, r.defense_label, r.attack_label, r.label, r.seed, _f(r.benign_acc),
                     _f(r.clone_acc), _f(r.relative, "{:.2f}x"), _f(r.fidelity),
                     r.queries_used if r.queries_used is not None else "—",
                     r.status if r.status == "ok" else f"FAILED: {r.error}"])
    head = ["dataset", "defense", "attack", "label", "seed", "benign acc", "clone acc", "relative",
            "fidelity", "queries", "status"]
    lines = [f"# `{profile.name}` profile: clone accuracy", "",
             "Rendered from the cell records under `records/` by `bench.run`. Accuracies in % on the "
             "victim's ID test set; relative = clone / benign; fidelity = clone-victim top-1 agreement.", "",
             tabulate(rows, head, tablefmt="github"), "", "Deviations from the paper:", ""]
    lines += [f"- {d}" for d in profile.deviations]
    for ds, r in profile.roles.items():
        lines += [f"- {ds}: {s}" for s in r.substitutes]
    write_text(Path(out) / "table.md", "\n".join(lines) + "\n")
    write_json(Path(out) / "profile.json", {"profile": profile.describe(), "provenance": provenance()})


def _f(v, fmt="{:.2f}"):
    return "—" if v is None else fmt.format(v)


# ------------------------------------------------------------------ CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python -m bench.run --matrix smoke --data-root ../shared/data")
    p.add_argument("--matrix", default="smoke", help="profile: smoke | ci | cpu | full (default smoke)")
    p.add_argument("--datasets", help="comma-separated subset of the profile's data sets")
    p.add_argument("--defenses", help="comma-separated defenses, e.g. vanilla,ini,ini+mad")
    p.add_argument("--attacks", help="comma-separated attacks: knockoff,jbda")
    p.add_argument("--labels", help="comma-separated label modes: soft,hard")
    p.add_argument("--seeds", help="comma-separated integer seeds (default: the profile's)")
    p.add_argument("--budget", type=int, help="query budget: KnockoffNets' budget and JBDA's cap")
    p.add_argument("--jbda-rounds", type=int, help="JBDA augmentation rounds (queries: seeds x (2^rounds - 1))")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers (joblib processes)")
    p.add_argument("--backend", default="local", choices=["local", "dask"],
                   help="local processes (default) or a Dask cluster")
    p.add_argument("--scheduler", help="with --backend dask: address of an existing scheduler (tcp://HOST:PORT)")
    p.add_argument("--out", help="results folder (default results/<profile>)")
    p.add_argument("--data-root", default=None, help="data root (default $STEALBENCH_DATA or ./data)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    p.add_argument("--dry-run", action="store_true", help="list the cells and which are cached, run nothing")
    p.add_argument("--retry-failed", action="store_true", help="re-run cells whose record says failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _csv(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        seeds = [int(s) for s in _csv(a.seeds)] if a.seeds else None
    except ValueError:
        return _usage(f"--seeds must be comma-separated integers, got {a.seeds!r}")
    if a.jobs < 1:
        return _usage(f"--jobs must be >= 1, got {a.jobs}")
    try:
        profile = select(get_profile(a.matrix), _csv(a.datasets), _csv(a.defenses), _csv(a.attacks),
                         _csv(a.labels), seeds, a.budget, a.jbda_rounds)
    except (UsageError, ValueError) as e:
        return _usage(str(e))
    out = Path(a.out or Path("results") / profile.name)
    if a.dry_run:
        for c in plan(profile):
            rec = cached_cell(profile, out, c)
            state = "cached" if rec and rec.status == "ok" else ("failed" if rec else "to run")
            print(f"{state:7s} " + " ".join(map(str, c)))
        return 0
    t0 = time.time()
    try:
        check_writable(out)
        check_data_root(a.data_root)
        with results_lock(out):
            records = run_matrix(profile, out, jobs=a.jobs, data_root=a.data_root, device=a.device,
                                 progress=not a.no_progress, retry_failed=a.retry_failed,
                                 backend=a.backend, scheduler=a.scheduler)
    except (UsageError, D.DataMissingError, CorruptFileError) as e:
        return _usage(str(e))
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; run the same command to resume", file=sys.stderr)
        return 130
    failed = [r for r in records if r.status != "ok"]
    print((Path(out) / "table.md").read_text())
    print(f"{len(records)} cells, {len(failed)} failed, {time.time() - t0:.1f} s")
    for r in failed:
        print(f"FAILED {r.dataset}/{r.defense}/{r.attack}/{r.label}/s{r.seed}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def check_writable(out: Path) -> None:
    """Fail early, in one line, when the results folder cannot be created or written."""
    import tempfile
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe", suffix=".tmp"):
            pass
    except OSError as e:
        raise UsageError(f"results directory {out} is not writable: {e.strerror or e}") from None


def check_data_root(root) -> None:
    r = D.data_root(root)
    if root is not None and not r.is_dir():
        raise UsageError(f"data root {r} does not exist; pass an existing folder to --data-root "
                         "(e.g. ../shared/data) or set $STEALBENCH_DATA")


class results_lock:
    """One run per results folder at a time: a second run exits instead of racing."""

    def __init__(self, out):
        self.lock = file_lock(Path(out) / ".lock", blocking=False)

    def __enter__(self):
        import signal
        try:
            self.lock.__enter__()
        except BlockingIOError:
            raise UsageError(f"another run is using {self.lock.path.parent} (lock {self.lock.path}); "
                             "wait for it or use another --out") from None
        # SIGTERM behaves like Ctrl-C: the cell in progress is dropped, finished ones stay
        self.old = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc):
        import signal
        signal.signal(signal.SIGTERM, self.old)
        return self.lock.__exit__(*exc)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _usage(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
