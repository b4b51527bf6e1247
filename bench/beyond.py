"""Tables beyond the paper, from result records: what the adaptive attacker recovers, query-stream
detection, and what each victim serves."""
from __future__ import annotations

from collections import defaultdict

from . import paper as P
from .stats import paired_interval
from .tables import MISSING, REFUSED, Stat, Table, _csv_num, fmt_num, fmt_stat, fmt_vs, vs_test


ADAPTIVE = ("adaptive", "adaptive-filter")   # the attackers who know the defense, in table order
ADAPTIVE_RAN_AS = {"adaptive": "shadow + map", "adaptive-filter": "shadow + map, untrusted answers left out"}


def table_adaptive(stats, records) -> Table | None:
    """What the adaptive attacker gets back, per defense: its clone against KnockoffNets' on the
    same defense (same queries and recipe), and against the cut the defense made in Vanilla's.
    ``stats``: ``tables.collect``'s; ``records``: for which cells fell back to KnockoffNets."""
    clone = lambda arch, ds, d, a, lb: stats.get((arch, ds, d, a, lb, "clone_acc"))   # noqa: E731
    adaptive = {(arch, ds, d, lb, a): st for (arch, ds, d, a, lb, m), st in stats.items()
                if a in ADAPTIVE and m == "clone_acc" and st.n}
    fell_back = {(c.arch, c.dataset, c.defense, c.label, c.attack) for c in records
                 if c.kind == "cell" and c.attack in ADAPTIVE and c.attack_log.get("fallback")}
    by_seed = defaultdict(dict)   # (arch, ds, defense, attack, label) -> seed -> clone accuracy
    for c in records:
        if c.kind == "cell" and (c.attack in ADAPTIVE or c.attack == "knockoff") and c.clone_acc is not None:
            by_seed[(c.arch, c.dataset, c.defense, c.attack, c.label)][c.seed] = c.clone_acc
    if not adaptive:
        return None
    rows, tidy = [], []
    order = lambda k: (k[0], k[1], P.defense_rank(k[2]), k[3], ADAPTIVE.index(k[4]))   # noqa: E731
    for key in sorted(adaptive, key=order):
        arch, ds, d, lb, a = key
        ad, ko, van = adaptive[key], clone(arch, ds, d, "knockoff", lb), clone(arch, ds, "vanilla", "knockoff", lb)
        mine, theirs = by_seed[(arch, ds, d, a, lb)], by_seed[(arch, ds, d, "knockoff", lb)]
        rec, cut = recovered(mine, theirs), vs_test(van, ko)
        share = share_recovered(mine, theirs, by_seed[(arch, ds, "vanilla", "knockoff", lb)])
        ran_as = "KnockoffNets (cannot rebuild)" if key in fell_back else ADAPTIVE_RAN_AS[a]
        rows.append([P.dataset_label(ds), P.defense_label(d), lb, fmt_stat(van), fmt_stat(ko), fmt_stat(ad),
                     fmt_vs(*cut), fmt_vs(*rec), fmt_num(share, 0) + ("" if share is None else " %"), ran_as])
        tidy.append({"arch": arch, "dataset": ds, "defense": d, "label": lb, "attack": a, "seeds": ad.n,
                     "vanilla_knockoff": _csv_num(van.mean if van else None),
                     "knockoff": _csv_num(ko.mean if ko else None), "adaptive": _csv_num(ad.mean),
                     "cut": _csv_num(cut[0]), "cut_half_width": _csv_num(cut[1]),
                     "recovered": _csv_num(rec[0]), "recovered_half_width": _csv_num(rec[1]),
                     "recovered_p": _csv_num(rec[2]), "share_recovered_pct": _csv_num(share),
                     "fallback": key in fell_back})
    return Table("adaptive", "The adaptive attacker: what it recovers of each defense's cut",
                 ["Dataset", "Defense", "label", "Vanilla, KnockoffNets", "KnockoffNets", "adaptive",
                  "cut (Vanilla − KnockoffNets)", "recovered (adaptive − KnockoffNets)", "share of the cut",
                  "attack ran as"], rows, tidy,
                 ["Clone accuracy in % on the ID test set, mean ± std over seeds. The adaptive attacker sends "
                  "KnockoffNets' queries and trains KnockoffNets' clone recipe on its answers passed through a "
                  "map learned on a shadow with the same defense (attacks/adaptive.py); its filtering "
                  "variant (adaptive-filter) also leaves out the answers the shadow says the map cannot "
                  "repair. Cut: Welch's 95% interval over seeds (two victims); recovered: the paired t "
                  "interval over the seeds both attacks ran (the same victim and queries, so the victim's "
                  "own seed-to-seed spread cancels); "
                  "* where p < 0.05. Share: recovered / cut, of their means over the seeds all three cells "
                  f"ran, shown where the defense cut anything ({MISSING} otherwise)."])


def share_recovered(adaptive: dict, knockoff: dict, vanilla: dict) -> float | None:
    """100 x mean(adaptive − KnockoffNets) / mean(Vanilla − KnockoffNets) over the seeds all
    three have; None where there is no such seed or no cut."""
    seeds = sorted(set(adaptive) & set(knockoff) & set(vanilla))
    if not seeds:
        return None
    rec = sum(adaptive[s] - knockoff[s] for s in seeds)
    cut = sum(vanilla[s] - knockoff[s] for s in seeds)
    return 100 * rec / cut if cut > 0 else None


def recovered(adaptive: dict, knockoff: dict):
    """(mean of adaptive − KnockoffNets over the seeds both have, half-width of its paired 95%
    t interval, p); the last two None with fewer than two such seeds."""
    seeds = sorted(set(adaptive) & set(knockoff))
    if not seeds:
        return None, None, None
    return paired_interval([adaptive[s] for s in seeds], [knockoff[s] for s in seeds])


PAPER_ATTACKS = ("knockoff", "jbda")
ATTACK_ORDER = ("knockoff", "jbda", "adaptive", "adaptive-filter", "copycat", "activethief", "art-knockoff", "dfme",
                "random-noise")
ATTACK_LABELS = {**P.ATTACKS, "adaptive": "adaptive", "adaptive-filter": "adaptive, filtered",
                 "copycat": "CopycatCNN", "activethief": "ActiveThief", "art-knockoff": "ART's KnockoffNets",
                 "dfme": "DFME", "random-noise": "random noise"}


def table_attacks(stats) -> Table | None:
    """Every attack against every defense it ran on, where an attack beyond the paper's two ran:
    clone accuracy (relative) over seeds, and a line against Vanilla under the same attack."""
    groups = defaultdict(set)
    for (arch, ds, d, a, lb, m) in stats:
        if a and m == "clone_acc":
            groups[(arch, ds, lb)].add((d, a))
    groups = {k: v for k, v in groups.items() if any(a not in PAPER_ATTACKS for _, a in v)}
    if not groups:
        return None
    attacks = sorted({a for v in groups.values() for _, a in v},
                     key=lambda a: (ATTACK_ORDER + (a,)).index(a))
    rows, tidy = [], []
    for (arch, ds, lb), pairs in sorted(groups.items()):
        for d in sorted({d for d, _ in pairs}, key=lambda d: (P.defense_rank(d), d)):
            line, vs_line = [P.dataset_label(ds), P.defense_label(d), lb], ["", "", ""]
            for a in attacks:
                st = stats.get((arch, ds, d, a, lb, "clone_acc"))
                rel = stats.get((arch, ds, d, a, lb, "relative"))
                vs = vs_test(st, stats.get((arch, ds, "vanilla", a, lb, "clone_acc"))) if d != "vanilla" else (None,) * 3
                acc = fmt_stat(st)
                line.append(acc if acc == MISSING or not rel or rel.mean is None else f"{acc} ({rel.mean:.2f}×)")
                vs_line.append(fmt_vs(*vs))
                if st:
                    tidy.append({"arch": arch, "dataset": ds, "defense": d, "attack": a, "label": lb,
                                 "clone_acc": _csv_num(st.mean), "clone_acc_std": _csv_num(st.std), "seeds": st.n,
                                 "vs_vanilla": _csv_num(vs[0]), "vs_half_ci95": _csv_num(vs[1]),
                                 "vs_p": "" if vs[2] is None else f"{vs[2]:.4g}"})
            rows.append(line)
            if any(v != MISSING for v in vs_line[3:]):
                rows.append(["", "Δ vs Vanilla", ""] + vs_line[3:])
    return Table("attacks", "Every attack against every defense it ran on (clone accuracy, relative performance)",
                 ["Dataset", "Defense", "label"] + [ATTACK_LABELS.get(a, a) for a in attacks], rows, tidy,
                 ["Clone accuracy in % on the ID test set, mean ± std over seeds (relative = clone / benign). "
                  "Δ vs Vanilla: the same attack on the Vanilla victim, Welch's 95% interval over seeds, * where "
                  f"p < 0.05. {MISSING}: the profile does not run that attack on that defense (`attack_defenses`). "
                  f"{REFUSED}: a detector refused the account before the attack had a clone (‡: some seeds; "
                  "mean of the rest; see the detection table). "
                  "Random noise: DFME's baseline (i.i.d. uniform-pixel queries, DFME's budget); adaptive: see its own "
                  "table."])


def table_knobs(records) -> Table | None:
    """The serving knob each tuned victim got, per seed, and what it was tuned against."""
    rows, tidy = [], []
    tuned = [v for v in records if v.kind == "victim" and isinstance(v.extra.get("tuning"), dict)]
    for v in sorted(tuned, key=lambda v: (v.arch, v.dataset, P.defense_rank(v.defense), v.defense, v.seed)):
        t = v.extra["tuning"]
        anchor = "knob off" if str(t.get("anchor", "")).startswith("knob off") else str(t.get("anchor", "")).split(" ")[0]
        rows.append([P.dataset_label(v.dataset), P.defense_label(v.defense), v.seed, t.get("knob"),
                     fmt_num(t.get("value"), 3), anchor, fmt_num(t.get("reference_acc")), fmt_num(t.get("accuracy")),
                     "yes" if t.get("met") else "no"])
        tidy.append({"arch": v.arch, "dataset": v.dataset, "defense": v.defense, "seed": v.seed,
                     "knob": t.get("knob"), "value": t.get("value"), "anchor": anchor,
                     "reference_acc": _csv_num(t.get("reference_acc")), "benign_acc": _csv_num(t.get("accuracy")),
                     "met": bool(t.get("met"))})
    if not rows:
        return None
    return Table("knobs", "Tuned serving knobs (similar benign accuracy)",
                 ["Dataset", "Defense", "seed", "knob", "value", "anchor", "anchor acc", "acc with knob", "met"],
                 rows, tidy,
                 ["The strongest grid value whose benign accuracy on the tuning split stays within the "
                  "tolerance of the anchor: the Vanilla victim of the same data set and seed, or, where the "
                  "defense with its knob off is already further below Vanilla than the tolerance, its own "
                  "knob-off accuracy (anchor \"knob off\"; bench/victims.py tune_knobs). met = no: no grid "
                  "value stayed within the tolerance, the weakest was kept."])


def table_detection(records) -> Table | None:
    """Stream detectors (PRADA): per attack, how many seeds' accounts were refused, after how
    many answered queries, the clone accuracy then; and each victim's benign false-positive rate."""
    watched = {v.key for v in records if v.kind == "victim" and "benign_fpr" in v.extra}
    cells = [r for r in records if r.kind == "cell" and r.status == "ok" and r.victim_key in watched]
    if not cells:
        return None
    fpr = defaultdict(list)
    for v in records:
        if v.kind == "victim" and "benign_fpr" in v.extra:
            fpr[(v.dataset, v.defense)].append(100 * v.extra["benign_fpr"]["fpr"])
    groups = defaultdict(list)
    for c in cells:
        groups[(c.dataset, c.defense, c.attack, c.label)].append(c)
    rows, tidy = [], []
    for (ds, d, a, lb), cs in sorted(groups.items()):
        hit = [c for c in cs if c.detected_at is not None]
        at = Stat.of([float(c.detected_at) for c in hit])
        flagged = Stat.of([float(c.detection["at"]) for c in hit if "at" in c.detection])
        acc = Stat.of([c.clone_acc for c in hit if c.clone_acc is not None])
        f = Stat.of(fpr[(ds, d)])
        rows.append([P.dataset_label(ds), P.defense_label(d), ATTACK_LABELS.get(a, a), lb, f"{len(hit)}/{len(cs)}",
                     fmt_stat(flagged, 0), fmt_stat(at, 0), fmt_stat(acc, 2), str(cs[0].budget or ""), fmt_stat(f, 1)])
        tidy.append({"dataset": ds, "defense": d, "attack": a, "label": lb, "seeds": len(cs),
                     "detected": len(hit), "flagged_at_query": _csv_num(flagged.mean),
                     "answered_before_detection": _csv_num(at.mean),
                     "clone_acc_at_detection": _csv_num(acc.mean),
                     "budget": cs[0].budget, "benign_fpr_pct": _csv_num(f.mean)})
    return Table("detection", "Query-stream detection: queries answered before the account was refused",
                 ["Dataset", "Defense", "Attack", "label", "refused (seeds)", "flagged at query",
                  "answered before refusal", "clone acc then", "budget", "benign FPR %"], rows, tidy,
                 ["Flagged at query: the position in the account's stream of the query that raised the flag; "
                  "the oracle refuses that query's whole batch (one API call), so the answered count is the "
                  "batches before it. A refused attack is scored by its last checkpointed clone (none: no "
                  "clone yet). Benign FPR: share of 10 honest accounts (2,000 test images each, random "
                  "order) the detector flagged, per victim; mean ± std over seeds."])


def table_answers(records) -> Table | None:
    """What each victim serves on its ID test set and on the attacker's queries (mean over seeds)."""
    groups = defaultdict(list)
    for v in records:
        if v.kind == "victim" and isinstance(v.extra.get("answer_stats"), dict):
            groups[(v.arch, v.dataset, v.defense)].append(v.extra["answer_stats"])
    if not groups:
        return None
    keys = [("id_test", "entropy"), ("id_test", "max_prob"), ("queries", "entropy"), ("queries", "max_prob"),
            ("queries", "top_class_share")]
    rows, tidy = [], []
    for (arch, ds, d), stats in sorted(groups.items(), key=lambda kv: (kv[0][1], P.defense_rank(kv[0][2]))):
        vals = {k: Stat.of([s.get(k[0], {}).get(k[1]) for s in stats]) for k in keys}
        rows.append([P.dataset_label(ds), P.defense_label(d), len(stats)] + [fmt_stat(vals[k], 3) for k in keys])
        tidy.append({"arch": arch, "dataset": ds, "defense": d, "seeds": len(stats),
                     **{f"{a}_{b}": _csv_num(vals[(a, b)].mean) for a, b in keys}})
    return Table("answers", "Served answers on ID test images and on the attacker's queries",
                 ["Dataset", "Defense", "seeds", "ID entropy", "ID max p", "query entropy", "query max p",
                  "query top-class share"], rows, tidy,
                 ["Entropy in nats (uniform over 10 classes: 2.303); max p = mean top-1 probability; "
                  "top-class share = how many queries get the most frequent top-1 class. 2,000 queries."])
