"""Top-k: serve only the k largest probabilities, renormalized (k=1: the top-1 label as a
one-hot vector). A training-free output defense that is not in the InI paper; IBM ART ships
it as ``ClassLabels``/``HighConfidence``-style post-processing. Top-1 is always preserved.
"""
import torch

from defenses.base import PostProcessor, register_defense


@register_defense("topk")
class TopK(PostProcessor):
    """Serve only the k largest probabilities, renormalized."""
    label = "Top-k"
    defaults = {"k": 1}
    knobs = {"k": (1, 1000)}          # serving knob with its valid range

    def _check_params(self):
        super()._check_params()
        if int(self.params["k"]) != self.params["k"]:
            raise ValueError(f"{self.name}: k must be an integer, got {self.params['k']!r}")

    def perturb(self, x, probs):
        k = min(int(self.params["k"]), probs.shape[1])
        top = probs.topk(k, 1)
        kept = torch.zeros_like(probs).scatter(1, top.indices, top.values)
        return kept / kept.sum(1, keepdim=True)
