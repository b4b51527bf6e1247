"""IBM ART's CopycatCNN run as one of our attacks: ``art-copycat``.

ART's ``art.attacks.extraction.CopycatCNN`` (Correia-Silva et al., IJCNN 2018; ART: Nicolae et
al., 2018) with ``use_probability=False``: the thief learns from the oracle's top-1 only, soft
answers included, like our ``copycat``. The victim is reached only through our oracle and the
thief is trained with our copycat's parameters; see attacks/art_knockoff.py for the glue.
"""
from __future__ import annotations

from attacks.art_knockoff import ArtKnockoffNets, run_art_extraction
from attacks.base import register_attack


@register_attack("art-copycat")
class ArtCopycatCNN(ArtKnockoffNets):   # the same parameters and checks; another ART attack
    label = "CopycatCNN (ART)"

    def run(self, oracle, actx):
        return run_art_extraction(self, "CopycatCNN", oracle, actx, offset=7, use_probability=False)
