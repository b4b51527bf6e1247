"""CopycatCNN (Correia-Silva et al., IJCNN 2018): label natural non-problem-domain images with
the victim's top-1 and train a clone on them.

Like KnockoffNets' random strategy, but the clone only ever learns from labels: a soft-label
oracle's answers are reduced to their argmax (what the original, a label-only API, returns).
Defaults mirror KnockoffNets' so the two compare on equal terms.
"""
from __future__ import annotations

from attacks.base import Attack, draw_queries, query_in_batches, register_attack
from attacks.train_clone import train_new_clone


@register_attack("copycat")
class CopycatCNN(Attack):
    label = "CopycatCNN"
    defaults = {"budget": 50_000, "epochs": 50, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 128}

    def _check_params(self):
        b = self.params["budget"]
        if not isinstance(b, int) or b <= 0:
            raise ValueError(f"copycat: budget must be a positive integer, got {b!r}")
        if self.params["epochs"] < 1:
            raise ValueError(f"copycat: epochs must be >= 1, got {self.params['epochs']}")

    def budget(self) -> int:
        return self.params["budget"]

    def run(self, oracle, actx):
        x, _ = draw_queries(actx, "copycat", self.params["budget"], stream=7, needs="natural images to query")
        x, answers, refused = query_in_batches(oracle, x)
        if answers is not None and len(answers) > 1:
            labels = answers if answers.dim() == 1 else answers.argmax(1)
            clone = train_new_clone(actx, x, labels, self.params, "copycat", checkpoint_epochs=True)
        if refused is not None:   # trained on what was answered; the runner scores that clone
            raise refused
        return clone
