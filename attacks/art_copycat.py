"""IBM ART's CopycatCNN run as one of our attacks: ``art-copycat``.

ART's ``art.attacks.extraction.CopycatCNN`` (Correia-Silva et al., IJCNN 2018; ART: Nicolae et
al., 2018) with ``use_probability=False``: the thief learns from the oracle's top-1 only, soft
answers included, like our ``copycat``. The victim is reached only through our oracle and the
thief is trained with our copycat's parameters; see attacks/art_knockoff.py for the glue.
"""
from __future__ import annotations

from attacks.art_knockoff import check_train_params, run_art_extraction
from attacks.base import Attack, register_attack


@register_attack("art-copycat")
class ArtCopycatCNN(Attack):
    label = "CopycatCNN (ART)"
    defaults = {"budget": 50_000, "epochs": 50, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 128}

    def _check_params(self):
        check_train_params(self.name, self.params)

    def budget(self) -> int:
        return self.params["budget"]

    def run(self, oracle, actx):
        return run_art_extraction(self, "CopycatCNN", oracle, actx, offset=7, use_probability=False)
