"""IBM ART's KnockoffNets (random strategy) run as one of our attacks: ``art-knockoff``.

ART's ``art.attacks.extraction.KnockoffNets`` (Orekondy et al., CVPR 2019; ART: Nicolae et al.,
2018) selects ``budget`` surrogate images, labels them through ``predict`` and fits the thief.
Here ``predict`` is our oracle (an ART ``BlackBoxClassifier`` over ``oracle.query``), so every
image is counted and the budget enforced; soft answers are used as probabilities
(``use_probability=True``), hard ones as one-hot labels. The thief is ``actx.new_clone()`` in an
ART ``PyTorchClassifier`` trained by ART's own ``fit`` with our knockoff's optimizer: SGD (lr,
momentum 0.9, wd 5e-4), batch 128, a cosine schedule stepped per batch as in
attacks/train_clone.py. ART is imported inside run(): ``import attacks`` works without it.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from attacks.base import Attack, query_pool, register_attack

INSTALL_HINT = "pip install 'stealbench[art]' (adversarial-robustness-toolbox>=1.17)"
QUERY_BATCH = 1024  # as our knockoff's oracle calls


def import_art(who: str):
    """The ART modules the attacks use, or one ImportError line saying what to install."""
    try:
        import art  # noqa: F401
        from art.attacks.extraction import CopycatCNN, KnockoffNets
        from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier
    except ImportError as e:
        raise ImportError(f"{who} needs IBM's Adversarial Robustness Toolbox, which is not installed: "
                          f"{INSTALL_HINT}") from e
    return {"KnockoffNets": KnockoffNets, "CopycatCNN": CopycatCNN, "BlackBoxClassifier": BlackBoxClassifier,
            "PyTorchClassifier": PyTorchClassifier}


def check_train_params(name: str, params: dict) -> None:
    b = params["budget"]
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0:
        raise ValueError(f"{name}: budget must be a positive integer, got {b!r}")
    for key in ("epochs", "batch_size"):
        v = params[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {key} must be an integer >= 1, got {v!r}")
    if not params["lr"] > 0:
        raise ValueError(f"{name}: lr must be > 0, got {params['lr']!r}")


def oracle_classifier(art, oracle, actx):
    """ART's view of the victim: a BlackBoxClassifier whose predict is ``oracle.query`` (probability
    rows, or one-hot rows for a hard-label oracle). It has nothing else of the victim."""
    k = actx.num_classes

    def predict_fn(x: np.ndarray) -> np.ndarray:
        answers = oracle.query(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if answers.dim() == 1:
            answers = torch.nn.functional.one_hot(answers, k)
        return answers.float().numpy()
    return art["BlackBoxClassifier"](predict_fn, (actx.in_channels, actx.input_size, actx.input_size), k)


def clone_classifier(art, actx, params: dict, n_train: int):
    """``actx.new_clone()`` as an ART PyTorchClassifier with our clone optimizer; ``fit`` reports
    each epoch to ``actx.checkpoint`` (as our knockoff/copycat do) and skips a last batch of one
    image (BatchNorm cannot train on it; train_clone.py does the same)."""
    clone = actx.new_clone()
    opt = torch.optim.SGD(clone.parameters(), lr=params["lr"], momentum=params["momentum"],
                          weight_decay=params["weight_decay"])
    bs = params["batch_size"]
    drop_last = n_train % bs == 1 and n_train > 1
    steps = params["epochs"] * (n_train // bs if drop_last else -(-n_train // bs))
    # ART steps a scheduler per epoch; ours is per batch, so step it after every optimizer step.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    opt.register_step_post_hook(lambda *_: sched.step())

    class Thief(art["PyTorchClassifier"]):
        def fit(self, x, y, batch_size=128, nb_epochs=10, **kwargs):
            for _ in range(nb_epochs):
                super().fit(x, y, batch_size=batch_size, nb_epochs=1, drop_last=drop_last, verbose=False)
                clone.eval()
                actx.checkpoint(clone)

    thief = Thief(model=clone, loss=torch.nn.CrossEntropyLoss(), optimizer=opt,
                  input_shape=(actx.in_channels, actx.input_size, actx.input_size), nb_classes=actx.num_classes,
                  device_type="cpu" if str(actx.device) == "cpu" else "gpu")
    return thief, clone


@contextlib.contextmanager
def numpy_seed(seed: int):
    """ART draws its sample with np.random: seed it for this run only, then restore the state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def run_art_extraction(attack, art_cls: str, oracle, actx, offset: int, **art_kw):
    """Shared body of art-knockoff / art-copycat: ART's attack over our oracle, our clone."""
    name, p = attack.name, attack.params
    b = p["budget"]
    pool = query_pool(actx, name, b)   # checked: ART would silently query fewer images
    art = import_art(name)
    thief, clone = clone_classifier(art, actx, p, b)
    extraction = art[art_cls](oracle_classifier(art, oracle, actx), batch_size_fit=p["batch_size"],
                              batch_size_query=QUERY_BATCH, nb_epochs=p["epochs"], nb_stolen=b, **art_kw)
    with numpy_seed(actx.seed * 1000 + 500 + offset):
        extraction.extract(pool.cpu().numpy(), thieved_classifier=thief)
    return clone.eval()


@register_attack("art-knockoff")
class ArtKnockoffNets(Attack):
    label = "KnockoffNets (ART)"
    defaults = {"budget": 50_000, "epochs": 50, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 128}

    def _check_params(self):
        check_train_params(self.name, self.params)

    def budget(self) -> int:
        return self.params["budget"]

    def run(self, oracle, actx):
        return run_art_extraction(self, "KnockoffNets", oracle, actx, offset=0, sampling_strategy="random",
                                  use_probability=oracle.label_mode == "soft", verbose=False)
