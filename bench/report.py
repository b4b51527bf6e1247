"""Render the paper's tables and figures from result records: ours | paper | difference.

    python -m bench.report [--profile cpu] [--out results/cpu] [--results DIR] [--speed results/speed]

Everything comes from the JSON records under ``<results>/records/`` (and the speed records
under ``results/speed/<device>/``) and the paper's numbers in ``results/paper_reference.csv``;
nothing is typed by hand. A cell without a record is shown as missing ("—"), never dropped
or filled. Each table is written as Markdown, CSV (tidy: one value per row) and LaTeX; the
figures as PNG; ``<out>/README.md`` indexes them inside a generated block, so text written
outside that block survives re-rendering.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import paper as P
from . import ledger
from . import records as R
from .claims import render as judge_claims
from .io import CorruptFileError, write_text
from .beyond import table_adaptive, table_answers, table_attacks, table_detection, table_knobs  # noqa: F401
from .runcost import table_run_cost
# the renderer's parts, importable from here as before
from .figures import budget_curves, curve_points, figure3, figure_d1, find_cosines, training_curves  # noqa: F401
from .speedtables import load_speed, speed_tables, table4, table_b1  # noqa: F401
from .tables import (CLONE_METRICS, FAILED, MISSING, Col, Row, Stat, Table, collect, fmt_stat,  # noqa: F401
                     grid, noise_floor, paper_tables, table_ablation, table_attack, table_benign,
                     use_clone_metric)

BEGIN = "<!-- BEGIN GENERATED (bench.report; edits inside are overwritten) -->"
END = "<!-- END GENERATED -->"


# ------------------------------------------------------------------ README
def readme_block(profile, profile_name, records, sections, missing, noise=(), claims=(), run_time=None) -> str:
    cells = [r for r in records if r.kind == "cell"]
    victims = [r for r in records if r.kind == "victim"]
    failed = [r for r in cells if r.status != "ok"]
    commits = sorted({r.provenance.get("git_commit", "unknown") for r in records if r.provenance})
    lines = [BEGIN, "", f"# Results: `{profile_name}` profile", "",
             "Rendered by `python -m bench.report` from the records under `records/` and the "
             "paper's published numbers (`results/paper_reference.csv`); nothing here is typed "
             "by hand. Each table shows ours, the paper's, and the difference.", "",
             f"Records: {len(victims)} victims, {len(cells)} attack cells ({len(failed)} failed)."
             + (f" Code commit(s): {', '.join(f'`{c}`' for c in commits)}." if commits else ""), ""]
    if run_time:
        lines += [run_time, ""]
    lines += ["## Deviations from the paper", ""]
    if profile is None:
        lines += [f"- (profile `{profile_name}` is not defined in `bench.profiles`; "
                  "deviations unknown)"]
    else:
        lines += [f"- {d}" for d in _get(profile, "deviations", ())]
        subs = {ds: _get(roles, "substitutes", ()) for ds, roles in _get(profile, "roles", {}).items()}
        for r in cells:   # the roles each cell ran with (a filtered run's profile.json lacks some)
            subs.setdefault(r.dataset, (r.data_roles or {}).get("substitutes", ()))
        for ds, notes in sorted(subs.items()):
            lines += [f"- {P.dataset_label(ds)}: {s}" for s in notes]
    if noise:
        lines += ["", "## Noise floor", "",
                  "The std over seeds of Vanilla's KnockoffNets clone accuracy (" + (
                      "seeds change the victim's initialization and data order, the attacker's query "
                      "sample and the clone): a defense's effect smaller than this is not resolved by one "
                      "seed. The clone tables test each defense against Vanilla over seeds (Welch)."), ""]
        lines += [f"- {n}" for n in noise]
    if claims:
        lines += ["", "## The paper's claims, judged from these records", "",
                  "Welch's 95% intervals over seeds; the rules and every comparison: "
                  "[claims.md](claims.md) (`bench/claims.py`).", ""] + list(claims)
    lines += ["", "## Tables and figures", ""]
    for title, files in sections:
        links = " · ".join(f"[{Path(f).suffix.lstrip('.') or f}]({f})" for f in files)
        lines.append(f"- {title}: {links}")
    if missing:
        lines += ["", "## Missing", ""] + [f"- {m}" for m in missing]
    if failed:
        lines += ["", "## Failed cells", ""]
        lines += [f"- {r.dataset}/{r.defense}/{r.attack}/{r.label}/seed {r.seed}: {r.error}"
                  for r in failed]
    return "\n".join(lines + ["", END]) + "\n"


def _get(obj, name, default):
    """A field of a Profile / Roles, or of their JSON form (a run's profile.json)."""
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def described_profile(results_dir: Path, profile_name: str):
    """The profile as the run that made these records wrote it (profile.json), so that the
    deviations describe the records even after the code's profile has changed; else the code's."""
    path = Path(results_dir) / "profile.json"
    if path.exists():
        try:
            d = json.loads(path.read_text()).get("profile")
        except (OSError, ValueError):
            d = None
        if isinstance(d, dict) and d.get("name") == profile_name:
            return d
    return get_profile(profile_name)


def merge_readme(old: str | None, block: str) -> str:
    """Replace the generated block of an existing README, keeping everything else."""
    if not old:
        return block + "\n## Analysis\n\n(Written by hand; kept across re-renders.)\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + block.rstrip("\n") + tail
    return block + "\n" + old


# ------------------------------------------------------------------ driver
def get_profile(name):
    try:
        from .profiles import get_profile as gp
    except ImportError:
        return None
    try:
        return gp(name)
    except ValueError:
        return None


def plan_keys(profile) -> set:
    """The cache keys of every victim and cell the profile's plan names."""
    from .cells import plan
    from .keys import cell_key, victim_key
    out = set()
    for ds, d, a, lb, seed in plan(profile):
        out |= {victim_key(profile, ds, d, seed), cell_key(profile, ds, d, a, lb, seed)}
    return out


def select_records(records, profile_name, profile) -> list:
    """The profile's records, and those another profile made that this one's plan names by key:
    cpu-extended reuses the cpu run's victims and cells from the cache, whose records say "cpu"."""
    others = [r for r in records if r.profile != profile_name]
    shared = plan_keys(profile) if others and profile is not None else set()
    borrowed = [r for r in others if r.key in shared]
    skipped = len(others) - len(borrowed)
    if borrowed:
        print(f"note: {len(borrowed)} records made by other profiles are this one's by key "
              f"({', '.join(sorted({r.profile for r in borrowed}))})", file=sys.stderr)
    if skipped:
        print(f"note: skipping {skipped} records of other profiles "
              f"({', '.join(sorted({r.profile for r in others if r.key not in shared}))})", file=sys.stderr)
    kept = [r for r in records if r.profile == profile_name or r.key in shared]
    from .profiles import Profile   # here: get_profile may run where the profiles cannot import
    if not isinstance(profile, Profile):
        return kept
    slots = plan_slots(profile)
    return drop_stale(kept, shared or plan_keys(profile), slots)


def plan_slots(profile) -> set:
    """(kind, data set, defense, attack, label, seed) of every victim and cell the plan names."""
    from .cells import plan
    return {slot for ds, d, a, lb, seed in plan(profile)
            for slot in (("victim", ds, d, None, None, seed), ("cell", ds, d, a, lb, seed))}


def drop_stale(records, keys: set, slots: set) -> list:
    """A record the plan does not name by key is stale where the plan names another record of its
    group (a cell's data set, defense, attack and label; a victim's data set and defense) and
    plans its seed: it was made with parameters the code no longer uses (a default changed since,
    e.g. an attack's new option), and averaging it in would mix two methods. Records of seeds or
    parameters the plan does not have (``--seeds``, ``--budget`` overrides) are kept. A cell made
    on a victim the plan no longer names is stale too once the current victim exists, even
    before its own cell is re-run: its clone stole from the old victim."""
    group = lambda r: (r.kind, r.dataset, r.defense, getattr(r, "attack", None),   # noqa: E731
                       getattr(r, "label", None))
    current = {group(r) for r in records if r.key in keys}
    victims_now = {(r.dataset, r.defense, r.seed) for r in records if r.kind == "victim" and r.key in keys}

    def is_stale(r) -> bool:
        if r.key in keys or (*group(r), r.seed) not in slots:
            return False
        vkey = getattr(r, "victim_key", "")   # "" in records older than the field: unknown
        old_victim = (r.kind == "cell" and vkey and vkey not in keys
                      and (r.dataset, r.defense, r.seed) in victims_now)
        return group(r) in current or old_victim

    stale = [r for r in records if is_stale(r)]
    if stale:
        names = sorted({"/".join(str(g) for g in group(r)[1:] if g) for r in stale})
        print(f"note: skipping {len(stale)} stale records (made with other parameters than the plan's "
              f"for the same cells or victims): {', '.join(names)}", file=sys.stderr)
    gone = {id(r) for r in stale}
    return [r for r in records if id(r) not in gone]


def render(results_dir, out, profile_name=None, speed_dir=None, paper_csv=None, clone_metric="final") -> Path:
    """Render every table and figure into ``out``; returns the README path."""
    results_dir, out = Path(results_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = R.load_all(results_dir)
    profiles = sorted({r.profile for r in records})
    profile_name = profile_name or (profiles[0] if len(profiles) == 1 else results_dir.name)
    profile = get_profile(profile_name)
    records = select_records(records, profile_name, profile)
    paper = P.load_paper(paper_csv)
    stats = collect(use_clone_metric(records, clone_metric))
    sections, missing = [], []
    for t in paper_tables(stats, paper, getattr(profile, "arch", None), clone_metric):
        sections.append((t.title, t.write(out)))
    claim_lines = []
    for arch in sorted({k[0] for k in stats}):
        md, summary = judge_claims(stats, arch)
        name = "claims.md" if len({k[0] for k in stats}) == 1 else f"claims_{arch}.md"
        write_text(out / name, md + "\n")
        claim_lines += summary
    curves, curve_png = budget_curves(records, out)
    if curves:
        sections.append((curves.title, curves.write(out) + curve_png))
    else:
        missing.append("KnockoffNets budget curves: no KnockoffNets cell recorded a curve "
                       "(attack parameter `curve_budgets`).")
    fig3, fig3_png = figure3(records, out)
    if fig3:
        sections.append((fig3.title, fig3.write(out) + fig3_png))
    else:
        missing.append("Figure 3: no victim record carries PCGrad cosines "
                       "(`extra.fit_log.pcgrad_cosines`).")
    for t in (table_knobs(records), table_answers(records)):
        if t:
            sections.append((t.title, t.write(out)))
    cost = table_run_cost(records)
    if cost:
        sections.append((cost.title, cost.write(out)))
    for beyond in (table_attacks(stats), table_adaptive(stats, records), table_detection(records)):
        if beyond:
            sections.append((beyond.title, beyond.write(out)))
    d1 = figure_d1(records, out)
    if d1:
        sections.append(("Figure D.1: t-SNE of ID and OOD features (Vanilla vs InI)", d1))
    curves_t, curves_png = training_curves(records, out)
    if curves_t:
        sections.append((curves_t.title, curves_t.write(out) + curves_png))
    speed_dir = Path(speed_dir) if speed_dir else results_dir.parent / "speed"
    tables, figs, msgs = speed_tables(load_speed(speed_dir) if speed_dir.is_dir() else [],
                                      paper, out)
    for t in tables:
        sections.append((t.title, t.write(out)))
    sections += [(f"Figure 4 ({Path(f).stem})", [f]) for f in figs]
    missing += msgs
    readme = out / "README.md"
    old = readme.read_text() if readme.exists() else None
    write_text(readme, merge_readme(old, readme_block(described_profile(results_dir, profile_name),
                                                      profile_name, records, sections, missing,
                                                      noise_floor(stats), claim_lines,
                                                      ledger.summary(ledger.load(results_dir, profile_name)))))
    return readme


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", help="profile name (default: the one in the records)")
    ap.add_argument("--out", help="output folder (default: results/<profile>)")
    ap.add_argument("--results", help="folder holding records/ (default: --out)")
    ap.add_argument("--speed", help="speed records folder (default: <results>/../speed)")
    ap.add_argument("--html", action="store_true",
                    help="also write the leaderboard page results/index.html (every profile under results/)")
    ap.add_argument("--clone-metric", default="final", choices=sorted(CLONE_METRICS),
                    help="clone accuracy shown: 'final' (the returned clone, default) or 'best' (the best "
                         "epoch/round on the test set, as the reference code reports)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.html and not (a.profile or a.out or a.results):
        from .leaderboard import render_page
        print(f"wrote {render_page(Path('results'))}")
        return 0
    if not (a.profile or a.out or a.results):
        print("error: give --profile, --out or --results (or --html for the leaderboard page)", file=sys.stderr)
        return 2
    if a.profile:
        from .profiles import get_profile
        try:
            get_profile(a.profile)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    out = Path(a.out or a.results or Path("results") / a.profile)
    results = Path(a.results or out)
    if not (results / "records").is_dir():
        print(f"error: no records/ folder under {results}", file=sys.stderr)
        return 2
    try:
        readme = render(results, out, a.profile, a.speed, clone_metric=a.clone_metric)
    except (CorruptFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {readme} and the tables it links")
    if a.html:
        from .leaderboard import render_page
        print(f"wrote {render_page(out.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
