"""One training loop for every victim and clone: seeded, CPU or CUDA, progress bar."""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import models
from .data import ImageSet, batches
from .checkpoint import Checkpoint
from .io import memory_format


@dataclass
class TrainConfig:
    """Optimizer and schedule; defaults are the paper's Vanilla recipe for MNIST/FMNIST."""
    epochs: int = 50
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    step_every: int = 20      # lr x gamma every step_every epochs
    gamma: float = 0.1
    batch_size: int = 128

    def replace(self, **kw) -> "TrainConfig":
        return TrainConfig(**{**asdict(self), **kw})


@dataclass
class Context:
    """Everything a defense needs to build and train its models."""
    arch: str
    num_classes: int
    in_channels: int
    input_size: int
    id_train: ImageSet
    train: TrainConfig
    ood_train: ImageSet | None = None
    hash_set: ImageSet | None = None
    device: str = "cpu"
    seed: int = 0
    progress: bool | str = True   # True: bars; "lines": one line per epoch (logs); False: quiet
    arch_params: dict = field(default_factory=dict)
    # resumable training: when set, every fit call saves its state here after each epoch, one
    # file per call (fit0.pt, fit1.pt, ... in call order); None: no files (bench.victims sets it)
    checkpoint_dir: Path | None = None
    fit_calls: int = 0
    # training seconds of every fit call on this context, epochs restored from checkpoints
    # included (their time was spent by an earlier process): a resumed run's true cost
    fit_seconds: float = 0.0

    def begin_checkpoints(self, directory) -> None:
        """Number the coming fit calls from 0 and checkpoint them in ``directory`` (None: off)."""
        self.checkpoint_dir, self.fit_calls = (Path(directory) if directory is not None else None), 0

    def new_model(self, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
        params = self.arch_params if arch is None else {}
        return models.build(arch or self.arch, num_classes or self.num_classes,
                            self.in_channels, **params).to(self.device)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def channels_last() -> bool:
    """Training in channels-last memory format (NHWC convolution kernels; the default, faster on
    CPUs; ``STEALBENCH_CHANNELS_LAST=0``: NCHW, float-level differences). A kernel-path setting
    like ATEN_CPU_CAPABILITY: recorded in every record's provenance, not in cache keys."""
    return memory_format() == "channels_last"


def to_format(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def to_loop_format(m: nn.Module) -> nn.Module:
    """A model in the training loop's memory format (fit's modules; models used beside them, like
    InI's surrogate, must match or every pass through them converts)."""
    return m.to(memory_format=torch.channels_last) if channels_last() else m


def to_serving_format(modules) -> None:
    """Back to NCHW after training: a loaded checkpoint builds NCHW modules, so a victim trained in
    this process must serve in the same format or its answers differ at float level from the
    same victim loaded (tuning would score one network and the cells attack another)."""
    if channels_last():
        for m in modules:
            m.to(memory_format=torch.contiguous_format)


def make_optimizer(params, cfg: TrainConfig):
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(cfg.step_every, 1), gamma=cfg.gamma)
    return opt, sched


class OODStream:
    """Endless shuffled mini-batches of an (OOD) image tensor, pass after pass, that can save
    and restore its position (a generator function cannot be pickled): the shuffling
    generator's state when the current pass began and how many of its batches were drawn."""

    def __init__(self, x: torch.Tensor, batch_size: int, generator: torch.Generator, augment: bool = False):
        self.x, self.batch_size, self.gen, self.augment = x, batch_size, generator, augment
        self._new_pass()

    def _new_pass(self) -> None:
        self.pass_start, self.in_pass = self.gen.get_state(), 0
        self._it = batches(self.x, None, self.batch_size, self.gen, augment=self.augment,
                           drop_last=len(self.x) >= self.batch_size)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        for _ in range(2):
            xb = next(self._it, None)
            if xb is not None:
                self.in_pass += 1
                return xb[0]
            self._new_pass()
        raise ValueError("the OOD set is empty")

    def state_dict(self) -> dict:
        return {"pass_start": self.pass_start, "in_pass": self.in_pass}

    def load_state_dict(self, state: dict) -> None:
        """Replay the current pass up to the saved position (its shuffling and augmentation
        draw from the generator batch by batch, so the replay is what makes them equal)."""
        self.gen.set_state(state["pass_start"])
        self._new_pass()
        for _ in range(state["in_pass"]):
            next(self)


def fit(params, ctx: Context, step: Callable, cfg: TrainConfig | None = None, desc: str = "train",
        modules: list[nn.Module] = (), with_ood: bool = False, data: ImageSet | None = None,
        extra_state: dict | None = None) -> dict:
    """Run cfg.epochs over ``data`` (default: the ID training set).

    ``step(x, y, x_ood)`` returns a loss to back-propagate, a dict of named loss terms (their
    sum is back-propagated), or None when it has already filled the parameters' ``.grad``
    itself (InI's PCGrad). Returns each term's mean per epoch ({"loss": [...]} for a plain
    loss), so that every training run can show whether its objectives have flattened.

    With ``ctx.checkpoint_dir`` set, the state after every epoch is saved (see Checkpoint) and
    a later call in the same place continues from it, ending bit-identical to a run that was
    never stopped. ``extra_state`` names what ``step`` changes besides ``modules`` and the
    optimizer: objects with state_dict/load_state_dict (a surrogate and its optimizer),
    torch.Generators, and dicts/lists of plain values and tensors (running sums, logs),
    restored in place.
    """
    cfg = cfg or ctx.train
    data = data or ctx.id_train
    params = list(params)
    opt, sched = make_optimizer(params, cfg)
    gen = ctx.generator(1)
    ood = OODStream(ctx.ood_train.x, cfg.batch_size, ctx.generator(2), ctx.ood_train.augment) if with_ood else None
    per_epoch = -(-len(data) // cfg.batch_size)
    n_steps = cfg.epochs * per_epoch
    dev = ctx.device
    curves: dict[str, list[float]] = {}
    cl = channels_last()
    move = (lambda t: to_format(t.to(dev))) if cl else (lambda t: t.to(dev))
    if cl:
        for m in modules:
            to_loop_format(m)
    ckpt = Checkpoint.next(ctx, params, modules, {"opt": opt, "sched": sched, "data_order": gen, "ood": ood},
                           extra_state or {},
                           {"desc": desc, "cfg": asdict(cfg), "data": f"{data.name}:{data.split}",
                            "n": len(data), "with_ood": with_ood})
    start = ckpt.restore(curves) if ckpt else 0
    seconds = ckpt.seconds if ckpt else 0.0
    if start == cfg.epochs and start > 0:   # finished before: its final state is loaded
        for m in modules:
            m.train()
        to_serving_format(modules)
        ctx.fit_seconds += seconds
        return curves
    with tqdm(total=n_steps, initial=start * per_epoch, desc=desc, disable=ctx.progress is not True,
              leave=False) as bar:
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            for m in modules:
                m.train()
            sums, k = {}, 0   # detached tensors: no device sync per step
            for xb, yb in batches(data.x, data.y, cfg.batch_size, gen, augment=data.augment):
                xo = move(next(ood)) if ood is not None else None
                opt.zero_grad(set_to_none=True)
                out = step(move(xb), yb.to(dev), xo)
                if out is not None:
                    terms = out if isinstance(out, dict) else {"loss": out}
                    sum(terms.values()).backward()
                    for name, t in terms.items():
                        sums[name] = sums.get(name, 0.0) + t.detach()
                    k += 1
                opt.step()
                bar.update(1)
            for name, total in sums.items():
                curves.setdefault(name, []).append(round(float(total) / k, 6))
            sched.step()
            seconds += time.time() - t0
            if ckpt:
                ckpt.save(epoch + 1, curves, seconds)
            if ctx.progress == "lines":
                epoch_line(ctx, desc, epoch + 1, cfg.epochs, {n: c[-1] for n, c in curves.items()}, time.time() - t0)
    to_serving_format(modules)
    ctx.fit_seconds += seconds
    return curves


def epoch_line(ctx: Context, desc: str, epoch: int, epochs: int, terms: dict, seconds: float) -> None:
    """One line per epoch for logs (a bar is useless there, and parallel workers' lines interleave:
    each names its data set and seed)."""
    losses = ", ".join(f"{n} {v:.4g}" for n, v in terms.items())
    print(f"  {ctx.id_train.name}/s{ctx.seed} {desc}: epoch {epoch}/{epochs}{': ' + losses if losses else ''} "
          f"({seconds:.0f} s)", file=sys.stderr, flush=True)


def train_classifier(model: nn.Module, ctx: Context, cfg: TrainConfig | None = None,
                     desc: str = "vanilla", data: ImageSet | None = None) -> dict:
    """Plain cross-entropy training (the paper's Vanilla recipe by default); returns the
    per-epoch mean loss ({"ce": [...]})."""
    curves = fit(model.parameters(), ctx, lambda x, y, _: {"ce": F.cross_entropy(model(x), y)}, cfg, desc,
                 [model], data=data)
    model.eval()
    return curves


@torch.no_grad()
def predict(fn: Callable, x: torch.Tensor, device="cpu", batch_size: int = 512) -> torch.Tensor:
    """Concatenated outputs of fn over x in batches, on CPU."""
    outs = [fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def accuracy(pred_labels: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (pred_labels == y).float().mean().item()
