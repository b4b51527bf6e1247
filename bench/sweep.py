"""Attack-recipe sweep: which query set, budget and clone recipe make an attack strongest.

    python -m bench.sweep --matrix cpu --dataset fashionmnist --query kmnist:test,mnist:train \\
        --budget 10000,20000 --epochs 10,20 --lr 0.01,0.03 --seeds 0 --out runs/sweep

Every combination is one attack cell of the profile with the attacker's query set and
KnockoffNets recipe replaced; the victim is trained once (its cache key holds only what its
training uses) and reused by every combination. Writes ``sweep.md`` (``--table``) (clone accuracy and
relative performance per combination, mean ± std over seeds) next to the cell records, which
carry their own provenance. Combinations whose budget exceeds the query set are skipped and
listed.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from . import data as D
from .cells import run_cell
from .io import write_text
from .profiles import get_profile


class UsageError(ValueError):
    pass


def variant(profile, dataset, query, attack, params):
    """The profile with one data set's query role and one attack's params replaced."""
    name, split = query.split(":") if ":" in query else (query, "train")
    roles = {**profile.roles, dataset: replace(profile.roles[dataset], query=name, query_split=split)}
    base = {k: v for k, v in profile.attacks[attack].items() if k != "curve_budgets"}  # not needed here
    attacks = {attack: {**base, **params}}
    return replace(profile, roles=roles, attacks=attacks, query_size=None)


def combos(args) -> list[tuple[str, dict]]:
    grid = {k: v for k, v in (("budget", args.budget), ("epochs", args.epochs), ("lr", args.lr)) if v}
    keys = list(grid)
    return [(q, dict(zip(keys, vals))) for q in args.query for vals in itertools.product(*grid.values())]


def pool_size(query: str, data_root) -> int:
    name, split = query.split(":") if ":" in query else (query, "train")
    return len(D.load(name, split, data_root))


def run(args) -> str:
    profile = get_profile(args.matrix)
    if args.dataset not in profile.roles:
        raise UsageError(f"data set {args.dataset!r} is not in profile {profile.name}; "
                         f"accepted: {', '.join(profile.roles)}")
    if args.attack not in profile.attacks:
        raise UsageError(f"attack {args.attack!r} is not in profile {profile.name}; "
                         f"accepted: {', '.join(profile.attacks)}")
    rows, skipped = [], []
    for query, params in combos(args):
        n = pool_size(query, args.data_root)
        if params.get("budget", profile.attacks[args.attack].get("budget", 0)) > n:
            skipped.append(f"{query} with budget {params['budget']} (pool {n})")
            continue
        p = variant(profile, args.dataset, query, args.attack, params)
        for label in args.labels:
            recs = [run_cell(p, args.dataset, args.defense, args.attack, label, s, args.out,
                             args.data_root, args.device, progress=not args.quiet) for s in args.seeds]
            rows.append((query, params, label, recs))
            print(line(query, params, label, recs), flush=True)
    text = render(args, rows, skipped)
    write_text(Path(args.out) / args.table, text)
    return text


def collected(args) -> str:
    """The table from every cell record already under --out (a stopped or several sweeps)."""
    from . import records as R
    cells = [r for r in R.load_all(args.out) if r.kind == "cell" and r.attack == args.attack
             and r.dataset == args.dataset and r.defense == args.defense]
    groups = {}
    for r in cells:
        q = (r.data_roles or {}).get("query", "?")
        a = r.attack_params
        groups.setdefault((q, a.get("budget"), a.get("epochs"), a.get("lr"), r.label), []).append(r)
    args.seeds = sorted({r.seed for r in cells})   # the seeds the records hold
    rows = [(q, {}, lb, recs) for (q, _, _, _, lb), recs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0])))]
    return render(args, rows, [])


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def line(query, params, label, recs) -> str:
    ok = [r for r in recs if r.status == "ok"]
    return (f"{query} {params} {label}: clone {_ms([r.clone_acc for r in ok])}, "
            f"relative {_ms([r.relative for r in ok])}, best epoch {_ms([r.clone_acc_best for r in ok])}")


def render(args, rows, skipped) -> str:
    out = [f"# Attack sweep: {args.attack} on {args.dataset} / {args.defense} (profile {args.matrix})", "",
           f"Seeds {', '.join(map(str, args.seeds))}; mean ± std over seeds where there are several. "
           "Clone accuracy on the victim's test set (final epoch; best epoch beside it), relative = "
           "clone / victim benign accuracy. Made by `python -m bench.sweep`; the cell records beside "
           "this file hold each number's provenance.", "",
           "| queries | budget | clone epochs | clone lr | label | victim | clone | relative | best epoch |",
           "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for query, params, label, recs in rows:
        ok = [r for r in recs if r.status == "ok"]
        a = recs[0].attack_params
        out.append(f"| {query} | {a.get('budget', '')} | {a.get('epochs', '')} | {a.get('lr', '')} | {label} "
                   f"| {_ms([r.benign_acc for r in ok])} | {_ms([r.clone_acc for r in ok])} "
                   f"| {_ms([r.relative for r in ok])} | {_ms([r.clone_acc_best for r in ok])} |")
    if skipped:
        out += ["", "Skipped (budget larger than the query pool): " + "; ".join(skipped)]
    return "\n".join(out) + "\n"


def _list(cast):
    return lambda s: [cast(v) for v in s.split(",") if v]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", default="cpu", help="profile whose victim and attack recipe are the base (default cpu)")
    ap.add_argument("--dataset", required=True, help="victim data set (one of the profile's)")
    ap.add_argument("--defense", default="vanilla", help="victim defense (default vanilla)")
    ap.add_argument("--attack", default="knockoff", help="attack whose recipe is swept (default knockoff)")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: render the table from the cell records already under --out")
    ap.add_argument("--query", type=_list(str),
                    help="comma-separated query sets as name[:split], e.g. kmnist:test,mnist:train")
    ap.add_argument("--budget", type=_list(int), help="comma-separated query budgets")
    ap.add_argument("--epochs", type=_list(int), help="comma-separated clone epochs")
    ap.add_argument("--lr", type=_list(float), help="comma-separated clone learning rates")
    ap.add_argument("--labels", type=_list(str), default=["soft", "hard"], help="default soft,hard")
    ap.add_argument("--seeds", type=_list(int), default=[0], help="comma-separated seeds (default 0)")
    ap.add_argument("--out", default="runs/sweep", help="folder for victims, records and sweep.md")
    ap.add_argument("--table", default="sweep.md", help="file name of the table under --out (default "
                    "sweep.md; give each sweep its own when several share one --out and its victims)")
    ap.add_argument("--data-root", help="data folder (default: $STEALBENCH_DATA)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.collect:
            text = collected(args)
            write_text(Path(args.out) / args.table, text)
            print(text)
            return 0
        if not args.query:
            raise UsageError("--query is required (or --collect to render what is under --out)")
        print(run(args))
    except (UsageError, ValueError, D.DataMissingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
