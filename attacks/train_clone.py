"""Clone training shared by the attacks (attack-side code: never sees the victim)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from attacks.base import clone_loss


def train_clone(clone, x, targets, actx, epochs, lr, momentum=0.9, weight_decay=5e-4,
                batch_size=128, schedule="cosine", desc="clone", generator=None, checkpoint_epochs=False):
    """Train ``clone`` on (x, oracle answers); answers are labels (N,) or probabilities (N, K).
    ``checkpoint_epochs``: hand the clone to ``actx.checkpoint`` after every epoch."""
    opt = torch.optim.SGD(clone.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
             if schedule == "cosine" else None)
    gen = generator or actx.generator(len(x))
    dev = actx.device
    with tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not actx.progress, leave=False) as bar:
        for _ in range(epochs):
            clone.train()
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = order[i:i + batch_size]
                if len(idx) < 2 and len(x) > 1:  # BatchNorm cannot train on one sample
                    continue
                loss = clone_loss(clone(x[idx].to(dev)), targets[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                bar.update(1)
            if checkpoint_epochs:
                clone.eval()
                actx.checkpoint(clone)
    clone.eval()
    return clone


def train_new_clone(actx, x, targets, params: dict, desc: str, checkpoint_epochs=False):
    """A fresh clone trained on (x, targets) with an attack's optimizer params (epochs, lr,
    momentum, weight_decay, batch_size) and a cosine schedule."""
    clone = actx.new_clone()
    train_clone(clone, x, targets, actx, epochs=params["epochs"], lr=params["lr"], momentum=params["momentum"],
                weight_decay=params["weight_decay"], batch_size=params["batch_size"], schedule="cosine",
                desc=desc, checkpoint_epochs=checkpoint_epochs)
    return clone
