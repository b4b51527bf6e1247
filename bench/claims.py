"""The paper's claims judged from result records: holds / does not hold / cannot tell.

Each claim is a few comparisons of one defense's metric with another's over seeds (Welch's
95% interval of the difference, bench/stats.py). A comparison states what the claim needs:

- ``lower``: a's clone accuracy is below b's. Holds when the whole interval is below 0; does
  not hold when the interval rules out a cut of MARGIN points or more (it lies above -MARGIN);
  otherwise the noise cannot tell.
- ``little``: a does not cut b's clone accuracy much. Holds when the interval lies above
  -MARGIN; does not hold when it lies below -MARGIN; otherwise cannot tell.
- ``within``: a's benign accuracy is no more than BENIGN_DROP points below b's, by the same
  rule with BENIGN_DROP as the margin.

With fewer than two seeds on a side there is no interval: cannot tell. A claim's part holds
when all its comparisons hold, does not hold when any does not, and otherwise cannot tell.
The claims are the five the earlier `cpu` analysis judged by hand (results/cpu/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import paper as P
from .stats import welch_interval

MARGIN = 5.0        # points of clone accuracy: the smallest cut called a defense
BENIGN_DROP = 1.0   # points of benign accuracy: "within about a point"
HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell"

OOD_DEFENSES = ("am", "edm", "ini")
ABLATIONS = ("ini-iso", "ini-ind", "ini-nogradnorm")


@dataclass(frozen=True)
class Comparison:
    """a vs b on one data set, attack and label mode (attack "" : benign accuracy)."""
    kind: str               # lower | little | within
    dataset: str
    a: str
    b: str
    attack: str = ""
    label: str = ""


@dataclass(frozen=True)
class Part:
    name: str
    comparisons: tuple


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    parts: tuple


def _label(name: str) -> str:
    return P.defense_label(name, ablation=name in P.ABLATION_ONLY)


def _clone(kind, datasets, a, b, attacks=("knockoff",), labels=("soft", "hard")) -> tuple:
    return tuple(Comparison(kind, ds, a, b, at, lb) for ds in datasets for at in attacks for lb in labels)


def claims(datasets) -> list[Claim]:
    ds = tuple(datasets)
    return [
        Claim(1, "OOD-based defenses (AM, EDM, InI) cut KnockoffNets clone accuracy below Vanilla's "
                 "while benign accuracy stays within about a point.",
              tuple(Part(_label(d), _clone("lower", ds, d, "vanilla")
                         + tuple(Comparison("within", x, d, "vanilla") for x in ds))
                    for d in OOD_DEFENSES)),
        Claim(2, "MAD helps little against hard-label attacks.",
              (Part("MAD", _clone("little", ds, "mad", "vanilla", ("knockoff", "jbda"), ("hard",))),)),
        Claim(3, "InI is the strongest defense against KnockoffNets, and InI+MAD / InI+AM "
                 "strengthen it further.",
              (Part("InI below MAD, AM and EDM", sum((_clone("lower", ds, "ini", d) for d in ("mad", "am", "edm")), ())),
               Part("InI+MAD below InI", _clone("lower", ds, "ini+mad", "ini")),
               Part("InI+AM below InI", _clone("lower", ds, "ini+am", "ini")))),
        Claim(4, "OOD-based defenses are weak against soft-label JBDA.",
              tuple(Part(_label(d), _clone("little", ds, d, "vanilla", ("jbda",), ("soft",)))
                    for d in OOD_DEFENSES)),
        Claim(5, "Each InI component contributes: full InI's KnockoffNets clone is below every "
                 "ablation's (Table 5).",
              tuple(Part(f"InI below {_label(a)}", _clone("lower", ds, "ini", a))
                    for a in ABLATIONS)),
    ]


def values(stats, arch, c: Comparison, who: str):
    metric = "benign_acc" if c.kind == "within" else "clone_acc"
    st = stats.get((arch, c.dataset, who, c.attack, c.label, metric))
    return list(st.values) if st is not None else []


def verdict(kind: str, diff, half) -> str:
    """The rule of the module docstring for one interval (diff ± half; half None: no interval)."""
    if diff is None or half is None:
        return UNSURE
    lo, hi = diff - half, diff + half
    if kind == "lower":
        return HOLDS if hi < 0 else FAILS if lo > -MARGIN else UNSURE
    margin = MARGIN if kind == "little" else BENIGN_DROP
    return HOLDS if lo > -margin else FAILS if hi < -margin else UNSURE


def judge(stats, arch, c: Comparison) -> dict:
    a, b = values(stats, arch, c, c.a), values(stats, arch, c, c.b)
    diff, half, p = welch_interval(a, b) if a and b else (None, None, None)
    return {"comparison": c, "diff": diff, "half": half, "p": p, "n": (len(a), len(b)),
            "verdict": verdict(c.kind, diff, half)}


def combine(verdicts) -> str:
    verdicts = list(verdicts)
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else UNSURE


def judge_all(stats, arch) -> list[dict]:
    """Every claim with its parts' verdicts and the comparisons behind them."""
    datasets = sorted({k[1] for k in stats if k[0] == arch})
    out = []
    for claim in claims(datasets):
        parts = []
        for part in claim.parts:
            rows = [judge(stats, arch, c) for c in part.comparisons]
            rows = [r for r in rows if r["n"] != (0, 0)]   # neither side ran: not part of this profile
            parts.append({"name": part.name, "rows": rows, "verdict": combine(r["verdict"] for r in rows)})
        out.append({"claim": claim, "parts": parts})
    return out


def summary(judged: dict) -> str:
    """'holds' / 'does not hold' / 'cannot tell', or per part where the parts disagree."""
    vs = [p["verdict"] for p in judged["parts"]]
    if len(set(vs)) == 1:
        return vs[0]
    return "; ".join(f"{v} for {p['name']}" for p, v in zip(judged["parts"], vs))


def _fmt(r: dict) -> str:
    c = r["comparison"]
    what = "benign" if c.kind == "within" else f"{P.ATTACKS.get(c.attack, c.attack)} {c.label}"
    if r["diff"] is None:
        num = "no records"
    elif r["half"] is None:
        num = f"{r['diff']:+.2f} (n={r['n'][0]} vs {r['n'][1]}: no interval)"
    else:
        num = f"{r['diff']:+.2f} [{r['diff'] - r['half']:+.2f}, {r['diff'] + r['half']:+.2f}], p={r['p']:.3f}"
    return (f"| {P.dataset_label(c.dataset)} | {what} | {_label(c.a)} − "
            f"{_label(c.b)} | {c.kind} | {num} | {r['verdict']} |")


def readme_lines(judged: list[dict]) -> list[str]:
    return [f"{j['claim'].number}. {j['claim'].text} **{summary(j)}.**" for j in judged]


def render(stats, arch) -> tuple[str, list[str]]:
    """(claims.md, the README's lines) for one architecture's records."""
    judged = judge_all(stats, arch)
    lines = [f"# The paper's claims, judged from the records ({P.arch_label(arch)})", "",
             f"Each row: the difference of means over seeds (a − b, points) with Welch's 95% interval. "
             f"`lower` holds when the interval is below 0 and does not hold when it lies above "
             f"−{MARGIN:g} (a cut of {MARGIN:g} points or more is ruled out); `little` holds when "
             f"the interval lies above −{MARGIN:g} and does not hold when it lies below; `within` "
             f"is `little` for benign accuracy with a {BENIGN_DROP:g}-point margin. Anything else, "
             "or fewer than two seeds on a side: cannot tell. Generated by `bench/claims.py`.", ""]
    for j in judged:
        lines += [f"## {j['claim'].number}. {j['claim'].text}", "", f"Verdict: **{summary(j)}**.", ""]
        for part in j["parts"]:
            lines += [f"{part['name']}: {part['verdict']}.", "",
                      "| data set | what | a − b | test | difference [95% interval] | verdict |",
                      "|---|---|---|---|---|---|"]
            lines += [_fmt(r) for r in part["rows"]] or ["| — | — | — | — | no records | cannot tell |"]
            lines.append("")
    return "\n".join(lines), readme_lines(judged)
