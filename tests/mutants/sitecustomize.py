"""Fault injection for the regression check's mutation tests (never imported in normal runs).

With this folder on PYTHONPATH, Python imports this file at start-up in every process,
joblib workers included, and ``$STEALBENCH_FAULT`` names the fault to plant. Each fault is
a real bug a change could introduce; the check must fail on each (``run_mutants.py``).
"""
import os

FAULT = os.environ.get("STEALBENCH_FAULT")


def _oracle_uniform_soft():
    """The black box answers soft-label queries with uniform vectors."""
    import torch
    from bench.oracle import Oracle
    query = Oracle.query

    def uniform(self, x):
        out = query(self, x)
        return out if self.label_mode == "hard" else torch.full_like(out, 1.0 / out.shape[1])
    Oracle.query = uniform


def _jbda_step_zero():
    """JBDA's augmentation step is 0: every new point duplicates an old one."""
    from attacks.jbda import JBDA
    JBDA.defaults = {**JBDA.defaults, "step": 0.0}


def _knockoff_shuffled_labels():
    """KnockoffNets trains its clone on the answers in a shuffled order."""
    import torch
    from attacks.knockoff import KnockoffNets
    train = KnockoffNets._train

    def shuffled(self, actx, x, answers, desc, **kw):
        perm = torch.randperm(len(answers), generator=torch.Generator().manual_seed(0))
        return train(self, actx, x, answers[perm], desc, **kw)
    KnockoffNets._train = shuffled


def _mad_no_perturbation():
    """MAD serves its base model's probabilities unchanged."""
    from defenses.mad import MAD
    MAD.perturb = lambda self, x, probs: probs


def _dcp_serves_vanilla():
    """DCP silently serves the undefended model."""
    from defenses.dcp import DCP
    DCP.perturb = lambda self, x, probs: probs


def _victim_lr_tenth():
    """Victims train at a tenth of their configured learning rate."""
    import bench.train as T
    make = T.make_optimizer
    T.make_optimizer = lambda params, cfg: make(params, cfg.replace(lr=cfg.lr * 0.1))


FAULTS = {"oracle-uniform-soft": _oracle_uniform_soft, "jbda-step-zero": _jbda_step_zero,
          "knockoff-shuffled-labels": _knockoff_shuffled_labels,
          "mad-no-perturbation": _mad_no_perturbation, "dcp-serves-vanilla": _dcp_serves_vanilla,
          "victim-lr-tenth": _victim_lr_tenth}

if FAULT:
    if FAULT not in FAULTS:
        raise SystemExit(f"unknown STEALBENCH_FAULT {FAULT!r}; accepted: {', '.join(FAULTS)}")
    FAULTS[FAULT]()
