"""Vanilla: the undefended victim trained with plain cross-entropy."""
import torch

from bench.train import train_classifier
from defenses.base import Defense, register_defense


@register_defense("vanilla")
class Vanilla(Defense):
    label = "Vanilla"

    def _build(self, ctx):
        self.nets["model"] = ctx.new_model()

    def fit(self, ctx):
        self.fit_log = {"epoch_losses": train_classifier(self.nets["model"], ctx, desc="vanilla")}

    def _proba(self, x):
        return torch.softmax(self.nets["model"](x), dim=1)
