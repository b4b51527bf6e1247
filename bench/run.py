"""Matrix runner: ``python -m bench.run --matrix smoke|ci|cpu|full|full-vgg``.

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
import warnings
from pathlib import Path

import torch

from . import data as D
from . import records as R
from .io import CorruptFileError, provenance, write_json
from .ledger import Ledger
from .progress import LineProgress
from .profiles import Profile, get_profile, with_filters
# the runner's parts (bench/roles, keys, victims, cells), importable from here as before
from .cells import cached_cell, plan, run_cell, seed_set  # noqa: F401
from .keys import (base_config, cell_key, cell_record_path, defense_params, resolved_attack_params,  # noqa: F401
                   resolved_defense_params, unit_key, victim_key, victim_record_path)
from .roles import _load_roles, load_roles, make_context, roles_record  # noqa: F401
from .victims import build_victim, file_lock, served_path, served_top1, serving_stats, tune_knobs  # noqa: F401


REPO = Path(__file__).resolve().parents[1]
RUNS = Path("runs")                    # user runs (ignored by git)
REFERENCE = REPO / "results"           # the committed reference records the tables came from


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2."""


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
    out = Path(out or RUNS / profile.name)
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
    args = (out, data_root, device, True if bars else ("lines" if progress else False), threads)
    victims = sorted({(c[0], c[1], c[4]) for c in todo}, key=lambda v: ("+" in v[1], v))
    ledger = Ledger(out, profile, jobs, device, {"victim": len(victims), "cell": len(todo)}) if todo else None
    status = "interrupted"
    try:
        log = LineProgress(len(victims), "victim", progress and not bars)
        for v, msg in zip(victims, _map(_victim_worker, profile, victims, jobs, args, backend, scheduler)):
            if msg:
                print(f"victim failed: {msg}", file=sys.stderr)
            log.done("/".join(map(str, v)), "FAILED" if msg else "ready")
            ledger.step("victim")
        log = LineProgress(len(todo), "cell", progress and not bars)
        for c, rec in zip(todo, _map(_worker, profile, todo, jobs, args, backend, scheduler)):
            done[c] = rec
            log.done("/".join(map(str, c)), f"clone {_f(rec.clone_acc)} ({rec.wall_time_s:.0f} s)"
                     if rec.status == "ok" else f"FAILED {rec.error}")
            ledger.step("cell")
        status = "done"
    finally:
        if ledger:
            ledger.close(status)
    records = [done[c] for c in cells]
    write_summary(profile, out, records, ran=bool(todo))
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
    # loky replaces a worker that sat idle past its timeout (one long unit, the other worker
    # waiting) and warns as if work were lost; a worker that dies mid-item raises instead
    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given", category=UserWarning)
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
def write_summary(profile, out, records, ran: bool = True) -> None:
    """table.md always; profile.json (the profile and provenance of the run that made the records)
    only when this invocation ran something or there is none: a re-run that reused every cell must
    not stamp its own commit (perhaps a dirty one) on records it did not make."""
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
    if ran or not (Path(out) / "profile.json").exists():
        write_json(Path(out) / "profile.json", {"profile": profile.describe(), "provenance": provenance()})


def _f(v, fmt="{:.2f}"):
    return "—" if v is None else fmt.format(v)


# ------------------------------------------------------------------ CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python -m bench.run --matrix smoke --data-root ../shared/data")
    import attacks  # noqa: F401  registers every attack, for the help text
    from attacks.base import list_attacks
    from .profiles import PROFILES
    p.add_argument("--matrix", default="smoke",
                   help=f"profile: {' | '.join(PROFILES)} (default smoke)")
    p.add_argument("--datasets", help="comma-separated subset of the profile's data sets")
    p.add_argument("--defenses", help="comma-separated defenses (default: the profile's), e.g. vanilla,ini,ini+mad")
    p.add_argument("--attacks", help=f"comma-separated attacks (default: the profile's): {', '.join(list_attacks())}")
    p.add_argument("--labels", help="comma-separated label modes: soft,hard")
    p.add_argument("--seeds", help="comma-separated integer seeds (default: the profile's)")
    p.add_argument("--budget", type=int, help="query budget: KnockoffNets' budget and JBDA's cap")
    p.add_argument("--jbda-rounds", type=int, help="JBDA augmentation rounds (queries: seeds x (2^rounds - 1))")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers (joblib processes)")
    p.add_argument("--backend", default="local", choices=["local", "dask"],
                   help="local processes (default) or a Dask cluster")
    p.add_argument("--scheduler", help="with --backend dask: address of an existing scheduler (tcp://HOST:PORT)")
    p.add_argument("--out", help="results folder (default runs/<profile>; results/<profile> holds the committed "
                                 "reference, which --out results/<profile> regenerates on purpose)")
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
    out = Path(a.out or RUNS / profile.name)
    if a.dry_run:
        for c in plan(profile):
            rec = cached_cell(profile, out, c)
            state = "cached" if rec and rec.status == "ok" else ("failed" if rec else "to run")
            print(f"{state:7s} " + " ".join(map(str, c)))
        return 0
    t0 = time.time()
    try:
        reused = [r for r in (cached_cell(profile, out, c) for c in plan(profile)) if r is not None
                  and (r.status == "ok" or not a.retry_failed)]
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
    if reused:
        print(f"{len(reused)} of them reused from {out} (made by commit "
              f"{', '.join(sorted({r.provenance.get('git_commit', '?') for r in reused}))}), not re-run")
    ref = REFERENCE / profile.name
    if out.resolve() != ref.resolve():
        from .compare import compare, load_reference, reference_commits, render as render_comparison
        reference = load_reference(ref, profile.name)
        rows = compare(records, ref, profile.name, reference)
        print("\n" + render_comparison(rows, ref.relative_to(REPO) if ref.is_relative_to(REPO) else ref,
                                       reference_commits(reference) if reference else None))
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
