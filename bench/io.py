"""Atomic writes, safe loads and provenance for every result file."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import torch


class CorruptFileError(RuntimeError):
    """A checkpoint or record exists but cannot be read; never silently overwritten."""


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    _atomic(path, lambda f: f.write(data))


def write_text(path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"corrupt JSON file {path}: {e}; delete it to recompute") from e


def save_state(path, obj) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def load_state(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise CorruptFileError(f"corrupt checkpoint {path}: {e}; delete it to retrain") from e


def config_hash(cfg: dict) -> str:
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_commit() -> str:
    """The commit (and "-dirty") of the code this process loaded: read once, at import, because a
    long run's HEAD may move while it runs (a record once named a commit made after it started)."""
    return _START_COMMIT


def _read_git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        commit = out.stdout.strip() or "unknown"
        # results/ holds what runs write (records, tables, baselines): a run's own output must not
        # mark the code that made it as modified
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"],
                               capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_START_COMMIT = _read_git_commit()


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({_cpu_model()[0]}, {torch.get_num_threads()} threads)"


# environment variables that change which float kernels run (and so the numbers)
KERNEL_ENV = ("STEALBENCH_CHANNELS_LAST", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
              "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")


def memory_format() -> str:
    """The training loop's memory format: "channels_last" (NHWC convolution kernels; the default,
    1.7x the small CNN's CPU training throughput), or "contiguous" (NCHW) under
    STEALBENCH_CHANNELS_LAST=0. Recorded in every record's platform, so that a record says which
    ran (records from before the default changed say "contiguous")."""
    return "contiguous" if os.environ.get("STEALBENCH_CHANNELS_LAST", "1") == "0" else "channels_last"


@functools.lru_cache(maxsize=None)   # fixed for the process; every record asks
def _cpu_model() -> tuple[str, tuple[str, ...]]:
    """CPU model name and the SIMD flags that decide kernel paths (Linux; else platform's word)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), ()
    first = lambda key: next((ln.split(":", 1)[1].strip() for ln in text.splitlines()  # noqa: E731
                              if ln.startswith(key)), "")
    flags = set(first("flags").split())
    simd = tuple(f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
                 if f in flags)
    return first("model name") or platform.machine(), simd


@functools.lru_cache(maxsize=None)
def _library_versions() -> dict:
    """BLAS / oneDNN / OpenMP builds torch was compiled with (from its build config)."""
    import re
    cfg = torch.__config__.show()
    find = lambda pat: (re.search(pat, cfg) or [None, None])[1]  # noqa: E731
    return {"blas": find(r"BLAS_INFO=(\w+)"), "mkl": find(r"Math Kernel Library Version (\S+)"),
            "onednn": find(r"MKL-DNN v([\d.]+)"), "openmp": find(r"OpenMP (\d+)")}


def platform_info(device="cpu") -> dict:
    """What decides the float kernels: CPU model, the ISA torch dispatches to, libraries,
    threads and the environment variables that override them. Two records whose
    platform differs may differ by platform noise; the check's tolerance covers that."""
    model, simd = _cpu_model()
    info = {"cpu_model": model, "cpu_simd": list(simd), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "mkldnn_enabled": torch.backends.mkldnn.is_available()
            and torch._C._get_mkldnn_enabled(), **dict(_library_versions()),
            "memory_format": memory_format(), "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def provenance(device="cpu") -> dict:
    import numpy
    import torchvision
    return {
        "git_commit": git_commit(),
        "device": device_name(device),
        "platform": platform_info(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": numpy.__version__,
                     "cuda": torch.version.cuda if torch.cuda.is_available() else None},
        "host": platform.node(),
    }


def platform_label(prov: dict) -> str:
    """One short line naming a record's platform, for tables and check reports."""
    p = prov.get("platform") or {}
    if not p:
        return prov.get("device", "?")
    env = ",".join(f"{k}={v}" for k, v in sorted(p.get("env", {}).items()))
    return (f"{p.get('cpu_model', '?')} / {p.get('cpu_capability', '?')} / {p.get('threads', '?')} thr / "
            f"torch {prov.get('versions', {}).get('torch', '?')}" + (f" / {env}" if env else ""))
