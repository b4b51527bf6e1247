"""Bad input to every CLI: exit code 2, one clear line, no traceback, results folder unchanged."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import check, report, run, speed

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def corrupt_record_folder(tmp_path) -> Path:
    """A results folder whose only cell record is truncated JSON (as after a crash elsewhere)."""
    import bench.run as r
    from bench.profiles import get_profile
    p = get_profile("smoke")
    key = r.cell_key(p, "mnist", "vanilla", "knockoff", "soft", 0)
    path = r.cell_record_path(tmp_path / "res", "mnist", "vanilla", "knockoff", "soft", 0, key)
    path.parent.mkdir(parents=True)
    path.write_text('{"profile": "smo')
    return tmp_path / "res"


CASES = [
    # (cli, argv builder, expected message fragment)
    (run, lambda t: ["--matrix", "smok", "--out", str(t)], "Did you mean 'smoke'"),
    (run, lambda t: ["--defenses", "vanila", "--out", str(t)], "Did you mean 'vanilla'"),
    (run, lambda t: ["--attacks", "knockof", "--out", str(t)], "Did you mean 'knockoff'"),
    (run, lambda t: ["--datasets", "mnits", "--out", str(t)], "Did you mean 'mnist'"),
    (run, lambda t: ["--budget", "0", "--out", str(t)], "positive integer"),
    (run, lambda t: ["--budget", "-3", "--out", str(t)], "positive integer"),
    (run, lambda t: ["--jbda-rounds", "8", "--budget", "2000", "--out", str(t)], "more than the budget"),
    (run, lambda t: ["--data-root", str(t / "nope"), "--out", str(t)], "does not exist"),
    (run, lambda t: ["--out", "/proc/stealbench"], "not writable"),
    (speed, lambda t: ["--defenses", "vanila", "--runs", "1", "--out", str(t)], "vanilla"),
    (speed, lambda t: ["--arch", "resnet-18", "--runs", "1", "--out", str(t)], "resnet18"),
    (report, lambda t: ["--profile", "cpuu", "--out", str(t)], "cpu"),
    (check, lambda t: ["--profile", "cii", "--out", str(t / "o")], "ci"),
    (check, lambda t: ["--baseline", str(t / "missing.json"), "--out", str(t / "o")], "missing.json"),
]


@pytest.mark.parametrize("cli,argv,msg", CASES, ids=[f"{c.__name__.split('.')[-1]}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_bad_input_exits_2(cli, argv, msg, tmp_path, capsys):
    before = snapshot(tmp_path)
    rc = cli.main(argv(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert msg in err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_corrupt_record_is_named_not_recomputed(tmp_path, capsys):
    res = corrupt_record_folder(tmp_path)
    before = snapshot(res)
    rc = run.main(["--matrix", "smoke", "--out", str(res), "--attacks", "knockoff", "--labels", "soft"])
    err = capsys.readouterr().err
    assert rc == 2 and "corrupt JSON file" in err and ".json" in err
    assert {p: b for p, b in snapshot(res).items() if p.name != ".lock"} == before


def test_corrupt_checkpoint_is_named(tmp_path, capsys, real_root, tiny_profile, monkeypatch):
    from bench.profiles import PROFILES
    monkeypatch.setitem(PROFILES, "tiny", tiny_profile)
    argv = ["--matrix", "tiny", "--out", str(tmp_path), "--data-root", real_root, "--attacks", "knockoff",
            "--labels", "hard", "--no-progress"]
    assert run.main(argv) == 0
    ckpt = next((tmp_path / "victims").rglob("state.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    for p in (tmp_path / "records").rglob("*.json"):
        p.unlink()  # force the victim to be loaded again
    capsys.readouterr()
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert "corrupt checkpoint" in err and str(ckpt) in err
    assert len(ckpt.read_bytes()) == 200, "the corrupt checkpoint was silently retrained over"


def test_gpu_without_cuda_subprocess(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, "-m", "bench.speed", "--gpu", "0", "--runs", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert p.returncode == 2 and "--device cpu" in p.stderr and "Traceback" not in p.stderr
