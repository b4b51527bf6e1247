"""The regression check's planted faults (tests/mutants): each one really changes behaviour,
in a fresh process as the mutation runner starts them, and nothing is planted without one.
Whether the check catches them is measured by tests/mutants/run_mutants.py (minutes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROBES = {
    "": "from bench.oracle import Oracle; import torch\n"
        "o = Oracle(lambda x: torch.tensor([[0.9, 0.1]]), 5)\n"
        "assert o.query(torch.zeros(1, 1, 2, 2))[0, 0] == 0.9",
    "oracle-uniform-soft": "from bench.oracle import Oracle; import torch\n"
                           "o = Oracle(lambda x: torch.tensor([[0.9, 0.1]]), 5)\n"
                           "assert o.query(torch.zeros(1, 1, 2, 2)).tolist() == [[0.5, 0.5]]\n"
                           "assert Oracle(lambda x: torch.tensor([[0.9, 0.1]]), 5, 'hard').query("
                           "torch.zeros(1, 1, 2, 2)).tolist() == [0]",
    "jbda-step-zero": "from attacks.jbda import JBDA; assert JBDA().params['step'] == 0.0",
    "knockoff-shuffled-labels": "from attacks.knockoff import KnockoffNets\n"
                                "assert KnockoffNets._train.__name__ == 'shuffled'",
    "mad-no-perturbation": "from defenses.mad import MAD; import torch; p = torch.rand(3, 4)\n"
                           "assert MAD.perturb(None, None, p) is p",
    "dcp-serves-vanilla": "from defenses.dcp import DCP; import torch; p = torch.rand(3, 4)\n"
                          "assert DCP.perturb(None, None, p) is p",
    "victim-lr-tenth": "import torch; from bench.train import make_optimizer, TrainConfig\n"
                       "opt, _ = make_optimizer([torch.zeros(1, requires_grad=True)], TrainConfig(lr=0.1))\n"
                       "assert abs(opt.param_groups[0]['lr'] - 0.01) < 1e-12",
}


def planted(fault: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEALBENCH_FAULT": fault,
           "PYTHONPATH": os.pathsep.join([str(HERE / "mutants"), str(HERE.parent)])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=HERE.parent, timeout=120)


def test_every_fault_has_a_probe_and_a_slice():
    sys.path.insert(0, str(HERE / "mutants"))
    try:
        from run_mutants import SLICES
        from sitecustomize import FAULTS
    finally:
        sys.path.remove(str(HERE / "mutants"))
    assert set(FAULTS) == set(PROBES) - {""} == set(SLICES)


@pytest.mark.parametrize("fault", sorted(PROBES))
def test_fault_is_planted_in_a_fresh_process(fault):
    p = planted(fault, PROBES[fault])
    assert p.returncode == 0, p.stderr[-2000:]


def test_unknown_fault_is_refused():
    p = planted("nope", "pass")
    assert p.returncode != 0 and "unknown STEALBENCH_FAULT 'nope'" in p.stderr
