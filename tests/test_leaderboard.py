"""The leaderboard page: structure from synthetic records, and a real headless Chromium that
runs its JavaScript (skipped where no Chromium is installed; CI installs Debian's)."""
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench.leaderboard import render_page


class Tables(HTMLParser):
    """table id -> rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables, self.cur, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "board" in a.get("class", ""):
            self.cur = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self.cur is not None:
            self.row = []
            self.cur.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""
        elif tag == "span" and self.cell is not None:
            self.cell += "|"       # the paper's number follows

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.split("|")[0].strip())
            self.cell = None
        elif tag == "table":
            self.cur = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    S.write(S.handful(profile="synth"), root / "synth")
    return render_page(root)


def parse(text):
    p = Tables()
    p.feed(text)
    return p.tables


def test_rows_columns_and_links(page):
    tables = parse(page.read_text())
    t = tables["synth-smallcnn-mnist"]
    assert t[0] == ["Defense", "Benign acc", "KnockoffNets soft", "KnockoffNets hard", "JBDA soft", "JBDA hard"]
    rows = {r[0]: r for r in t[1:]}
    assert rows["Vanilla"][1] == "98.50 ± 0.71" and rows["Vanilla"][2] == "91.00 ± 1.41"
    assert rows["MAD"][3] == "— †"                 # every seed failed
    text = page.read_text()
    assert 'href="synth/records/cells/' in text and "paper 99.46" in text
    # MAD cuts Vanilla's soft-label clone from 91 to 80: green
    assert re.search(r'data-v="80.0000" style="background: rgba\(46, 160, 67', text)


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def run_browser(url, *args):
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
           "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not chromium(), reason="no Chromium installed (CI installs Debian's chromium)")
def test_in_a_real_browser_sorts_on_click_without_console_errors(page, tmp_path):
    url = page.as_uri() + "#sort=synth-smallcnn-mnist:2:desc"   # clicks the KnockoffNets soft header twice
    dom = run_browser(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr and not re.search(r"CONSOLE\(\d+\)].*(Error|error)", dom.stderr)
    t = parse(dom.stdout)["synth-smallcnn-mnist"]
    assert 'aria-sort="descending"' in dom.stdout
    soft = [r[2] for r in t[1:]]
    nums = [float(v.split()[0]) for v in soft if v[0].isdigit()]
    assert nums == sorted(nums, reverse=True) and soft[-1].startswith("—")   # no number sorts last
    shot = Path(__file__).parent.parent / "runs" / "leaderboard-test.png"
    shot.parent.mkdir(exist_ok=True)
    s = run_browser(url, f"--screenshot={shot}", "--window-size=1200,900")
    assert s.returncode == 0 and shot.stat().st_size > 10_000
