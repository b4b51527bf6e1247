"""EDM: Ensemble of Diverse Models (Kariyappa, Prakash & Qureshi, ICLR 2021).

N members (``n_members`` = 5) of the victim's architecture are trained jointly:
sum of the members' CE on ID + lambda_D x the diversity term on OOD, the batch mean of the
log-sum-exp over member pairs of the cosine similarity of their softmax outputs (a smooth
maximum of the pairwise "coherence"). A small hash network (models.HashNet) trained with CE
on the hash set picks the member that answers each query:
index = (m * argmax + floor((M * maxprob - 1) * m / (M - 1))) mod N, M = 10, m = 2,
from the hash net's prediction. Selection is deterministic (eval mode, no randomness).

lambda_D (unpublished; default 1.0) was chosen as follows. With N = 5 members there are 10
pairs and cosines of probability vectors lie in [0, 1], so the diversity term lies in
[log 10, log 10 + 1]: its whole range is one nat and its gradient is bounded, while the CE sum
starts near N log K = 11.5 nats. So lambda_D = 1 puts the OOD term on the scale of one member's
CE. A check (one seed; 2,000 MNIST training images, 2,000 KMNIST-test images as OOD, smallcnn,
5 epochs; members' accuracy on 1,000 MNIST test images, pairwise cosine on 2,000 other KMNIST
images) gave, for lambda_D = 0 / 0.5 / 1 / 2.5: mean member accuracy 83.3 / 83.6 / 90.5 / 82.6 %
(short, noisy runs: no trend), mean pairwise OOD cosine 0.51 / 0.28 / 0.10 / 0.04, and the
diversity term on ID test images 3.16 / 3.14 / 3.21 / 3.13 (members still agree on ID).
lambda_D = 1 removes most of the OOD agreement without a measurable cost on ID; larger values
buy little more. The value that ran is recorded in ``fit_log["lambda_d"]``.

Serving (``serve``, not part of the training cache key): ``"batched"`` runs all N members on
the batch and gathers each query's answer (the paper's Table 4 cost nM_f + M_h);
``"routed"`` groups the queries by member index and runs each member only on its own
queries (M_f + M_h per query). Both return the same probabilities.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.train import fit, train_classifier
from defenses.base import Defense, register_defense

SERVE_MODES = ("batched", "routed")


def diversity(probs: torch.Tensor) -> torch.Tensor:
    """Batch mean of logsumexp over pairs i < j of cos(p_i, p_j); probs is (N, B, K)."""
    unit = F.normalize(probs, dim=2)
    cos = torch.einsum("ibk,jbk->bij", unit, unit)
    i, j = torch.triu_indices(probs.shape[0], probs.shape[0], offset=1)
    return torch.logsumexp(cos[:, i, j], dim=1).mean()


def member_index(hash_probs: torch.Tensor, n_members: int, M: int = 10, m: int = 2) -> torch.Tensor:
    """(m * argmax + floor((M * maxprob - 1) * m / (M - 1))) mod N, per query."""
    top, arg = hash_probs.max(1)
    return (m * arg + torch.floor((M * top - 1) * m / (M - 1)).long()) % n_members


@register_defense("edm")
class EDM(Defense):
    label = "EDM"
    defaults = {"n_members": 5, "lambda_d": 1.0, "hash_M": 10, "hash_m": 2, "serve": "batched"}

    def _check_params(self):
        super()._check_params()
        p = self.params
        if p["serve"] not in SERVE_MODES:
            raise ValueError(f"edm: serve={p['serve']!r}; accepted: {list(SERVE_MODES)}")
        if not isinstance(p["n_members"], int) or p["n_members"] < 1:
            raise ValueError(f"edm: n_members must be a positive int, got {p['n_members']!r}")

    def train_params(self) -> dict:
        return {k: v for k, v in super().train_params().items() if k != "serve"}

    def _build(self, ctx):
        self.nets["members"] = nn.ModuleList(ctx.new_model() for _ in range(self.params["n_members"]))
        if ctx.hash_set is None:
            raise ValueError("edm needs a hash set (ctx.hash_set) to train its hash network")
        self.nets["hash"] = ctx.new_model("hashnet", num_classes=ctx.hash_set.num_classes)

    def fit(self, ctx):
        log = self.fit_members(ctx)
        train_classifier(self.nets["hash"], ctx, desc="edm-hash", data=ctx.hash_set)
        self.eval()
        self.fit_log = {"lambda_d": self.params["lambda_d"], "n_members": self.params["n_members"],
                        "hash_M": self.params["hash_M"], "hash_m": self.params["hash_m"],
                        "hash_set": ctx.hash_set.name, "epoch_losses": log,
                        "member_share_id": self.member_share(ctx.id_train.x[:2048])}
        if ctx.ood_train is not None:
            self.fit_log["member_share_ood"] = self.member_share(ctx.ood_train.x[:2048])

    def fit_members(self, ctx) -> dict:
        """Joint training of the members; returns the per-epoch mean CE sum and lambda_D x diversity."""
        if ctx.ood_train is None:
            raise ValueError(f"{self.name} needs an OOD training set (ctx.ood_train)")
        members, lam = self.nets["members"], self.params["lambda_d"]

        def step(x, y, xo):
            # separate ID and OOD forwards: BN batch statistics of the CE term stay ID-only
            ce = sum(F.cross_entropy(m(x), y) for m in members)
            div = diversity(torch.stack([torch.softmax(m(xo), 1) for m in members]))
            return {"ce": ce, "div": lam * div}   # fit back-propagates the sum and logs each term

        log = fit(members.parameters(), ctx, step, desc="edm-members", modules=list(members), with_ood=True)
        members.eval()
        return log

    @torch.no_grad()
    def member_share(self, x: torch.Tensor) -> list[float]:
        dev = next(self.nets["hash"].parameters()).device
        idx = torch.cat([self.route(x[i:i + 512].to(dev)).cpu() for i in range(0, len(x), 512)])
        counts = torch.bincount(idx, minlength=self.params["n_members"])
        return [round(c / max(len(idx), 1), 4) for c in counts.tolist()]

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Member index per query, from the hash network."""
        p = self.params
        return member_index(torch.softmax(self.nets["hash"](x), 1), p["n_members"], p["hash_M"], p["hash_m"])

    def _proba(self, x):
        idx = self.route(x)
        members = self.nets["members"]
        if self.params["serve"] == "batched":
            probs = torch.stack([torch.softmax(m(x), 1) for m in members])  # (N, B, K)
            return probs[idx, torch.arange(len(x), device=x.device)]
        out = x.new_empty(len(x), self.num_classes)
        for k in idx.unique().tolist():
            sel = idx == k
            out[sel] = torch.softmax(members[k](x[sel]), 1)
        return out
