"""ActiveThief (Pal et al., AAAI 2020): pool-based active selection of the queries.

The attacker holds an unlabelled pool of natural images (``AttackContext.query_set``). It
labels a random ``initial`` share of the budget, then, for ``rounds`` rounds, trains the clone
from scratch on everything labelled so far and spends the next slice of the budget on the pool
images the clone finds most useful:
- ``strategy="uncertainty"``: highest entropy of the clone's softmax;
- ``strategy="kcenter"``: greedy k-center on the clone's softmax outputs (each pick is the pool
  image farthest from everything labelled or picked so far).
The final clone trains on all ``budget`` answers. Soft answers train with soft cross-entropy,
hard ones with cross-entropy; selection uses only the clone, never the victim.
"""
from __future__ import annotations

import torch

from attacks.base import Attack, register_attack
from attacks.train_clone import train_new_clone

STRATEGIES = ("uncertainty", "kcenter")


@register_attack("activethief")
class ActiveThief(Attack):
    label = "ActiveThief"
    defaults = {"budget": 20_000, "initial": 0.1, "rounds": 4, "strategy": "uncertainty", "epochs": 30,
                "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128}

    def _check_params(self):
        p = self.params
        if not isinstance(p["budget"], int) or p["budget"] <= 0:
            raise ValueError(f"activethief: budget must be a positive integer, got {p['budget']!r}")
        if not 0 < p["initial"] < 1:
            raise ValueError(f"activethief: initial must lie in (0, 1), got {p['initial']!r}")
        if not isinstance(p["rounds"], int) or p["rounds"] < 1:
            raise ValueError(f"activethief: rounds must be a positive integer, got {p['rounds']!r}")
        if p["strategy"] not in STRATEGIES:
            raise ValueError(f"activethief: strategy={p['strategy']!r}; accepted: {list(STRATEGIES)}")

    def budget(self) -> int:
        return self.params["budget"]

    def slices(self) -> list[int]:
        """Queries per step: the random start, then the rest split evenly over the rounds."""
        b, p = self.params["budget"], self.params
        first = max(1, int(round(b * p["initial"])))
        rest = b - first
        return [first] + [rest // p["rounds"] + (1 if i < rest % p["rounds"] else 0) for i in range(p["rounds"])]

    def run(self, oracle, actx):
        pool = actx.query_set
        if pool is None:
            raise ValueError("activethief needs an unlabelled pool (AttackContext.query_set)")
        if self.params["budget"] > len(pool):
            raise ValueError(f"activethief: budget {self.params['budget']} exceeds the pool size {len(pool)}")
        steps = self.slices()
        chosen = torch.randperm(len(pool), generator=actx.generator(11))[:steps[0]]
        answers = self._ask(oracle, pool[chosen])
        clone = None
        for r, n in enumerate(steps[1:]):
            clone = self._train(actx, pool[chosen], answers, f"activethief r{r + 1}", final=False)
            new = self.select(clone, pool, chosen, n, actx)
            chosen = torch.cat([chosen, new])
            answers = torch.cat([answers, self._ask(oracle, pool[new])])
        return self._train(actx, pool[chosen], answers, "activethief", final=True)

    @staticmethod
    def _ask(oracle, x):
        return torch.cat([oracle.query(x[i:i + 1024]) for i in range(0, len(x), 1024)]) if len(x) else x.new_empty(0)

    def _train(self, actx, x, answers, desc, final):
        return train_new_clone(actx, x, answers, self.params, desc, checkpoint_epochs=final)

    @torch.no_grad()
    def select(self, clone, pool, chosen, n, actx) -> torch.Tensor:
        """Indices of n new pool images (never one already labelled)."""
        probs = torch.cat([torch.softmax(clone(pool[i:i + 1024].to(actx.device)), 1).cpu()
                           for i in range(0, len(pool), 1024)])
        free = torch.ones(len(pool), dtype=torch.bool)
        free[chosen] = False
        if self.params["strategy"] == "uncertainty":
            ent = -(probs * probs.clamp_min(1e-12).log()).sum(1)
            ent[~free] = -float("inf")
            return ent.topk(n).indices
        dist = torch.cdist(probs, probs[chosen]).min(1).values   # k-center greedy
        dist[~free] = -1.0
        picks = []
        for _ in range(n):
            i = int(dist.argmax())
            picks.append(i)
            dist = torch.minimum(dist, (probs - probs[i]).norm(dim=1))
            dist[i] = -1.0
        return torch.tensor(picks, dtype=torch.long)
