"""The leaderboard page: ``python -m bench.report --html`` writes ``results/index.html``.

One static file (plus the PNGs the report already wrote), no server, no network: for each
profile and data set, defenses as rows, attack x label as columns, clone accuracy as mean ± std
over seeds coloured by how much it cuts Vanilla's, benign accuracy beside it, the paper's
number on hover and behind a toggle, click-to-sort columns, figures, and a link from every
cell to its record. Rendered from the records only (bench/frame.py), never from models.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from . import paper as P
from .frame import records_frame, seed_stats
from .io import write_text

PAPER_TABLE = {"": "1", "knockoff": "2", "jbda": "3"}
FIGURES = ("budget_curve*.png", "figure3*.png", "figure4*.png")


def cut_colour(cut: float | None) -> str:
    """Background for a clone accuracy that is ``cut`` (fraction) below Vanilla's: green when a
    defense takes accuracy away, red when the clone did better than against Vanilla."""
    if cut is None or math.isnan(cut):
        return ""
    a = min(abs(cut) / 0.5, 1.0) * 0.55
    rgb = "46, 160, 67" if cut > 0 else "207, 34, 46"
    return f"background: rgba({rgb}, {a:.2f})"


def fmt(mean, std, n) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 and not math.isnan(std) else f"{mean:.2f}"


def profile_block(name: str, folder: Path, root: Path, paper) -> dict | None:
    df = records_frame(folder)
    if df.empty:
        return None
    from . import records as R
    commits = sorted({(R.load(folder / p).provenance or {}).get("git_commit", "?")[:10] for p in df.path[:200]})
    df["path"] = [f"{folder.relative_to(root).as_posix()}/{p}" for p in df["path"]]
    benign = seed_stats(df[df.kind == "victim"], "benign_acc")
    if benign.empty:   # cells carry their victim's accuracy when no victim record exists
        benign = seed_stats(df[df.kind == "cell"].assign(attack="", label=""), "benign_acc")
    clones = seed_stats(df[df.kind == "cell"], "clone_acc")
    seeds = sorted(int(s) for s in df.seed.dropna().unique())
    tables = []
    for (arch, ds), cells in clones.groupby(["arch", "dataset"]):
        cols = [(a, lb) for a in P.ATTACKS for lb in ("soft", "hard")
                if ((cells.attack == a) & (cells.label == lb)).any()]
        defenses = [d for d in P.MAIN_ORDER + sorted(set(cells.defense) - set(P.MAIN_ORDER)) if d in set(cells.defense)]
        van = {(r.attack, r.label): r["mean"] for _, r in cells[cells.defense == "vanilla"].iterrows()}
        rows = []
        for d in defenses:
            b = benign[(benign.dataset == ds) & (benign.arch == arch) & (benign.defense == d)]
            pb = paper.get("1", P.paper_arch(arch), P.dataset_label(ds), P.paper_defense(d), "", "", "benign_acc")
            row = [{"text": P.defense_label(d), "value": "", "style": "", "paper": None, "href": None}]
            row.append(cell_view(b.iloc[0] if len(b) else None, pb, None))
            for a, lb in cols:
                c = cells[(cells.defense == d) & (cells.attack == a) & (cells.label == lb)]
                pv = paper.get(PAPER_TABLE[a], P.paper_arch(arch), P.dataset_label(ds), P.paper_defense(d), a, lb)
                base = van.get((a, lb))
                rec = c.iloc[0] if len(c) else None
                cut = (base - rec["mean"]) / base if rec is not None and base and d != "vanilla" else None
                row.append(cell_view(rec, pv, cut))
            rows.append(row)
        heads = ["Defense", "Benign acc"] + [f"{P.ATTACKS[a]} {lb}" for a, lb in cols]
        tables.append({"id": f"{name}-{arch}-{ds}", "title": f"{P.dataset_label(ds)} ({P.arch_label(arch)})",
                       "heads": heads, "rows": rows})
    figs = sorted({p.relative_to(root).as_posix() for pat in FIGURES for p in folder.glob(pat)})
    return {"name": name, "seeds": seeds, "tables": tables, "figures": figs, "commits": commits}


def cell_view(stat, paper_value, cut) -> dict:
    if stat is None:
        return {"text": "—", "value": "", "style": "", "paper": paper_value, "href": None}
    mean = None if math.isnan(stat["mean"]) else float(stat["mean"])
    std = float(stat["std"]) if not math.isnan(stat["std"]) else float("nan")
    text = fmt(mean, std, int(stat["n"])) + (" †" if stat["failed"] else "")
    return {"text": text, "value": "" if mean is None else f"{mean:.4f}", "style": cut_colour(cut),
            "paper": paper_value, "href": stat["path"], "cut": cut}


def render_page(results_root, out=None, paper_csv=None) -> Path:
    """Write the leaderboard for every profile folder under ``results_root``; returns its path."""
    import jinja2
    root = Path(results_root)
    paper = P.load_paper(paper_csv)
    blocks = [b for f in sorted(p for p in root.iterdir() if (p / "records").is_dir())
              if (b := profile_block(f.name, f, root, paper))]
    env = jinja2.Environment(autoescape=True)
    page = env.from_string(TEMPLATE).render(blocks=blocks, esc=html.escape)
    out = Path(out or root / "index.html")
    write_text(out, page)
    return out


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stealbench leaderboard</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1f2328; padding: 0 1em; }
h1 { margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; }
table.board { border-collapse: collapse; margin: .6em 0 1.4em; }
table.board th, table.board td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
table.board th { background: #f6f8fa; cursor: pointer; user-select: none; }
table.board th[aria-sort=ascending]::after { content: " ▲"; } table.board th[aria-sort=descending]::after { content: " ▼"; }
table.board td:first-child, table.board th:first-child { text-align: left; }
table.board a { color: inherit; text-decoration: none; } table.board a:hover { text-decoration: underline; }
.paper { display: none; color: #57606a; font-size: 12px; } body.show-paper .paper { display: block; }
.note { color: #57606a; } figure { display: inline-block; margin: .5em; } figure img { max-width: 540px; border: 1px solid #d0d7de; }
</style></head>
<body>
<h1>stealbench leaderboard</h1>
<p class="note">Clone accuracy (% on the victim's test set; mean ± std over seeds) of each defense
against each attack and label mode; lower is a better defense. Green: the defense cuts the clone's
accuracy below the one against Vanilla (darker = more, full at 50%); red: the clone did better than
against Vanilla. † = some seeds failed. Hover a cell for the paper's number (ResNet-18 where ours is
another architecture: for scale, not a target); click a header to sort; click a number for its record.</p>
<label><input type="checkbox" id="show-paper"> show the paper's numbers in the cells</label>
{% for b in blocks %}
<h2 id="{{ b.name }}">{{ b.name }} <span class="note">(seeds {{ b.seeds|join(", ") }}; records made by commit {{ b.commits|join(", ") }})</span></h2>
{% for t in b.tables %}
<h3>{{ t.title }}</h3>
<table class="board" id="{{ t.id }}">
<thead><tr>{% for h in t.heads %}<th data-col="{{ loop.index0 }}">{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in t.rows %}<tr>{% for c in row %}<td data-v="{{ c.value }}" style="{{ c.style }}"{% if c.paper is not none %} title="paper: {{ '%.2f'|format(c.paper) }}"{% endif %}>{% if c.href %}<a href="{{ c.href }}">{{ c.text }}</a>{% else %}{{ c.text }}{% endif %}{% if c.paper is not none %}<span class="paper">paper {{ '%.2f'|format(c.paper) }}</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endfor %}
{% for f in b.figures %}<figure><img src="{{ f }}" alt="{{ f }}"><figcaption class="note">{{ f }}</figcaption></figure>{% endfor %}
{% endfor %}
<script>
"use strict";
function sortTable(table, col) {
  const th = table.tHead.rows[0].cells[col];
  const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
  for (const h of table.tHead.rows[0].cells) h.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir);
  const key = (tr) => { const td = tr.cells[col]; return col === 0 ? td.textContent : td.dataset.v; };
  const rows = Array.from(table.tBodies[0].rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" && y === "") return 0; if (x === "") return 1; if (y === "") return -1;   // no number: last
    const c = col === 0 ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
    return dir === "ascending" ? c : -c;
  });
  for (const r of rows) table.tBodies[0].appendChild(r);
}
document.querySelectorAll("table.board th").forEach((th) =>
  th.addEventListener("click", () => sortTable(th.closest("table"), Number(th.dataset.col))));
document.getElementById("show-paper").addEventListener("change", (e) =>
  document.body.classList.toggle("show-paper", e.target.checked));
// #sort=TABLE:COL[:desc] clicks that header on load (bookmarks, and the browser test)
const m = location.hash.match(/^#sort=([^:]+):(\\d+)(:desc)?$/);
if (m) {
  const th = document.querySelector(`table[id="${m[1]}"] th[data-col="${m[2]}"]`);
  if (th) { th.click(); if (m[3]) th.click(); }
}
</script>
</body></html>
"""
