"""tools/cpu_finalize.py: each profile's folder gets exactly the records its plan names by key,
its own ledger entries and exports (generated file names; no training)."""
import json
import sys
from pathlib import Path

import pytest

from bench.keys import cell_key, victim_key
from bench.profiles import get_profile

sys.path.insert(0, str(Path(__file__).parent))
from tools_module import load_tool  # noqa: E402


def _tool():
    return load_tool("cpu_finalize")


def _touch(path: Path, obj=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj or {}))


def _run_folder(tmp_path):
    src = tmp_path / "run"
    cpu, ext = get_profile("cpu"), get_profile("cpu-extended")
    vk_fm = victim_key(cpu, "fashionmnist", "ini", 0)           # cpu only
    vk_mn = victim_key(cpu, "mnist", "vanilla", 0)              # shared by key
    ck_rs = cell_key(ext, "mnist", "reverse-sigmoid", "knockoff", "soft", 0)   # cpu-extended only
    _touch(src / "records/victims" / f"fashionmnist-ini-s0-{vk_fm}.json")
    _touch(src / "records/victims" / f"mnist-vanilla-s0-{vk_mn}.json")
    _touch(src / "records/cells" / f"mnist-reverse-sigmoid-knockoff-soft-s0-{ck_rs}.json")
    _touch(src / "records/cells" / "mnist-vanilla-knockoff-soft-s0-0123456789abcdef.json")   # stale key
    _touch(src / "runs/a.json", {"profile": "cpu"})
    _touch(src / "runs/b.json", {"profile": "cpu-extended"})
    for p in ("cpu", "cpu-extended"):
        _touch(src / "summary" / p / "profile.json", {"profile": {"name": p}})
        (src / "summary" / p / "table.md").write_text(p)
    for d in ("mnist-vanilla-s0", "mnist-ini-s0", "mnist-mad-s0", "mnist-ini-s1"):
        _touch(src / "victims/export" / d / "spec.json")
    return src, vk_fm, vk_mn, ck_rs


def test_each_profile_gets_its_records_by_key(tmp_path):
    tool = _tool()
    src, vk_fm, vk_mn, ck_rs = _run_folder(tmp_path)
    n = tool.copy_profile(src, "cpu", tmp_path / "cpu")
    names = {f.name for f in (tmp_path / "cpu" / "records").rglob("*.json")}
    assert names == {f"fashionmnist-ini-s0-{vk_fm}.json", f"mnist-vanilla-s0-{vk_mn}.json"}
    assert [f.name for f in (tmp_path / "cpu/runs").iterdir()] == ["a.json"]
    assert sorted(d.name for d in (tmp_path / "cpu/victims/export").iterdir()) == ["mnist-ini-s0", "mnist-vanilla-s0"]
    assert n == {"victims": 2, "cells": 0, "runs": 1, "exports": 2}
    tool.copy_profile(src, "cpu-extended", tmp_path / "ext")
    names = {f.name for f in (tmp_path / "ext" / "records").rglob("*.json")}
    assert names == {f"mnist-vanilla-s0-{vk_mn}.json", f"mnist-reverse-sigmoid-knockoff-soft-s0-{ck_rs}.json"}
    assert (tmp_path / "ext/table.md").read_text() == "cpu-extended"


def test_an_unfinished_run_is_refused(tmp_path):
    tool = _tool()
    src, *_ = _run_folder(tmp_path)
    (src / "summary/cpu/profile.json").unlink()
    with pytest.raises(SystemExit, match="has not completed"):
        tool.copy_profile(src, "cpu", tmp_path / "cpu")
