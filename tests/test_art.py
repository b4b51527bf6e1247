"""IBM ART interoperability: exported victims as ART classifiers, ART's extraction attacks as ours.

Generated data only (random 1x8x8 / 1x12x12 tensors, tests/test_attacks.py's LinearVictim).
Tests that need ART take the ``art`` fixture and skip without it; the missing-ART error is
tested everywhere by hiding the package.
"""
import ast
import sys
from pathlib import Path

import pytest
import torch

from attacks import get_attack, list_attacks
from bench.oracle import BudgetExceededError, Oracle
from tests.test_attacks import LinearVictim, ctx

REPO = Path(__file__).resolve().parents[1]
ART_ATTACKS = ["art-knockoff", "art-copycat"]


@pytest.fixture
def art():
    return pytest.importorskip("art")


@pytest.fixture
def exported(tmp_path):
    """A vanilla smallcnn victim trained one epoch on generated 1x12x12 data, exported."""
    from bench.export import export_victim, load_victim
    from bench.train import seed_everything
    from defenses import get_defense
    from tests.test_export import tiny_ctx
    c = tiny_ctx()
    seed_everything(0)
    d = get_defense("vanilla")
    d.build(c)
    for u in d.units():
        u.fit(c)
    folder = export_victim(d.eval(), c, tmp_path / "v", "gen")
    return folder, load_victim(folder)


def test_export_to_art_serves_the_victims_probabilities(art, exported):
    from bench.art import art_classifier
    folder, victim = exported
    x = torch.randn(7, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    clf = art_classifier(folder)
    p = torch.from_numpy(clf.predict(x.numpy()))
    assert clf.nb_classes == 10 and clf.input_shape == (1, 12, 12)
    assert torch.allclose(p, victim(x), atol=1e-6)                  # served output, not logits
    assert torch.allclose(p.sum(1), torch.ones(7), atol=1e-5) and (p >= 0).all()


def test_export_to_art_in_pixel_units(art, exported):
    """inputs="pixels": ART gets [0, 1] images; the export's normalization is ART preprocessing."""
    from bench.art import art_classifier
    folder, victim = exported
    pix = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    clf = art_classifier(folder, inputs="pixels")
    assert clf.clip_values is not None
    assert torch.allclose(torch.from_numpy(clf.predict(pix.numpy())), victim((pix - 0.1307) / 0.3081), atol=1e-5)


def test_art_classifier_refuses_logits_and_softmaxes_when_told(art):
    from bench.art import art_classifier
    from bench.models import build
    torch.manual_seed(0)
    net = build("smallcnn", 10, 1, width=4, hidden=16).eval()
    with pytest.raises(ValueError, match="not probabilities.*outputs='logits'"):
        art_classifier(net, input_shape=(1, 8, 8), nb_classes=10)
    clf = art_classifier(net, outputs="logits", input_shape=(1, 8, 8), nb_classes=10)
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        want = torch.softmax(net(x), 1)
    assert torch.allclose(torch.from_numpy(clf.predict(x.numpy())), want, atol=1e-6)


def test_art_classifier_names_what_it_accepts(art):
    from bench.art import art_classifier
    with pytest.raises(ValueError, match="accepted: \\('probabilities', 'logits'\\)"):
        art_classifier(LinearVictim(), outputs="probs")
    with pytest.raises(ValueError, match="input_shape"):
        art_classifier(LinearVictim())                               # carries no shape
    with pytest.raises(TypeError, match="export folder"):
        art_classifier(42)


class Recording(Oracle):
    def query(self, x):
        out = super().query(x)
        self.answers = getattr(self, "answers", []) + [out]
        return out


@pytest.mark.parametrize("label", ["soft", "hard"])
@pytest.mark.parametrize("name", ART_ATTACKS)
def test_art_attacks_spend_exactly_their_budget_through_the_oracle(art, name, label):
    att = get_attack(name, budget=150, epochs=2)
    oracle = Recording(LinearVictim(), att.budget(), label)
    seen = []
    clone = att.run(oracle, ctx(on_checkpoint=lambda c: seen.append(c.training)))
    assert oracle.queries_used == 150 == sum(len(a) for a in oracle.answers)
    assert seen == [False, False]                                   # one eval-mode checkpoint per epoch
    assert clone(torch.randn(2, 1, 8, 8)).shape == (2, 10) and not clone.training


@pytest.mark.parametrize("name", ART_ATTACKS)
def test_art_attacks_cannot_overspend(art, name):
    att = get_attack(name, budget=150, epochs=1)
    with pytest.raises(BudgetExceededError):
        att.run(Oracle(LinearVictim(), 100), ctx())                 # the oracle, not ART, enforces it
    with pytest.raises(ValueError, match="exceeds the query set"):
        get_attack(name, budget=500, epochs=1).run(Oracle(LinearVictim(), 500), ctx())


@pytest.mark.parametrize("name,label,soft_targets", [("art-knockoff", "soft", True), ("art-knockoff", "hard", False),
                                                     ("art-copycat", "soft", False), ("art-copycat", "hard", False)])
def test_art_clone_trains_on_the_oracles_answers(art, monkeypatch, name, label, soft_targets):
    """KnockoffNets soft: the loss sees the served probabilities; otherwise their top-1 labels."""
    targets = []
    orig = torch.nn.CrossEntropyLoss.forward
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward",
                        lambda self, out, y: (targets.append(y.detach().clone()), orig(self, out, y))[1])
    oracle = Recording(LinearVictim(), 150, label)
    get_attack(name, budget=150, epochs=1).run(oracle, ctx())
    answers, seen = torch.cat(oracle.answers), torch.cat(targets)
    assert len(seen) == 150
    if soft_targets:
        assert seen.dim() == 2 and seen.dtype == torch.float32
        assert torch.allclose(seen[:, 0].sort().values, answers[:, 0].sort().values)
    else:
        top1 = answers if answers.dim() == 1 else answers.argmax(1)
        assert seen.dim() == 1 and torch.equal(seen.sort().values, top1.sort().values)


def test_art_knockoff_is_reproducible_per_seed(art):
    def once(seed):
        torch.manual_seed(0)                                        # the runner's seed_everything
        clone = get_attack("art-knockoff", budget=60, epochs=1).run(Oracle(LinearVictim(), 60), ctx(seed=seed))
        return torch.cat([p.detach().flatten() for p in clone.parameters()])
    assert torch.equal(once(0), once(0)) and not torch.equal(once(0), once(1))


def test_art_attacks_keep_the_registry_contract():
    """Registered with paper-sized defaults, params validated with one clear message; no ART needed."""
    assert set(ART_ATTACKS) <= set(list_attacks("art-*"))
    for name in ART_ATTACKS:
        att = get_attack(name)
        assert att.budget() == get_attack(name.removeprefix("art-")).budget() and att.seed_images() == 0
        with pytest.raises(ValueError, match="positive integer"):
            get_attack(name, budget=0)
        with pytest.raises(ValueError, match="epochs must be an integer"):
            get_attack(name, epochs=1.5)
        with pytest.raises(ValueError, match="accepted"):
            get_attack(name, sampling="adaptive")


@pytest.mark.parametrize("name", ART_ATTACKS)
def test_without_art_the_attack_says_what_to_install(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "art", None)                   # as if not installed
    att = get_attack(name, budget=50, epochs=1)
    assert att.budget() == 50                                       # params and budget need no ART
    oracle = Oracle(LinearVictim(), 50)
    with pytest.raises(ImportError) as e:
        att.run(oracle, ctx())
    msg = str(e.value)
    assert "\n" not in msg and name in msg and "adversarial-robustness-toolbox" in msg
    assert oracle.queries_used == 0


def test_without_art_the_export_helper_says_what_to_install(monkeypatch):
    from bench.art import art_classifier
    monkeypatch.setitem(sys.modules, "art", None)
    with pytest.raises(ImportError, match="stealbench\\[art\\]"):
        art_classifier(LinearVictim(), input_shape=(1, 8, 8), nb_classes=10)


@pytest.mark.parametrize("path", ["attacks/art_knockoff.py", "attacks/art_copycat.py", "bench/art.py"])
def test_art_is_imported_lazily(path):
    """`import attacks` / `import bench.art` must work without ART: no module-level art import."""
    tree = ast.parse((REPO / path).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    mods = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in mods if m == "art" or m.startswith("art.")}
