import pytest

import attacks  # noqa: F401  (registers)
import defenses  # noqa: F401
from bench import data  # noqa: F401
from bench.registry import ATTACKS, DATASETS, DEFENSES, MODELS, Registry, UnknownNameError


@pytest.mark.parametrize("reg,name,close", [(DEFENSES, "vanila", "vanilla"), (ATTACKS, "knockof", "knockoff"),
                                            (MODELS, "resnet-18", "resnet18"), (DATASETS, "fmnist", None)])
def test_unknown_name_lists_valid_and_closest(reg, name, close):
    with pytest.raises(UnknownNameError) as e:
        reg.get(name)
    msg = str(e.value)
    assert repr(name) in msg
    for valid in reg.names():
        assert valid in msg
    if close:
        assert f"Did you mean {close!r}" in msg


def test_wildcards_and_register():
    r = Registry("thing")

    @r.register("alpha-1")
    def a(x=1):
        return ("a", x)

    @r.register("alpha-2")
    def b():
        return "b"

    @r.register("beta")
    def c():
        return "c"
    assert r.names("alpha*") == ["alpha-1", "alpha-2"]
    assert r.get("ALPHA-1", x=3) == ("a", 3)
    with pytest.raises(ValueError, match="unknown parameter.*accepted: \\['x'\\]"):
        r.get("alpha-1", y=2)
    with pytest.raises(ValueError, match="registered twice"):
        r.register("beta")(lambda: 0)


def test_real_registries_have_core_entries():
    assert {"vanilla"} <= set(DEFENSES.names())
    assert {"knockoff", "jbda"} <= set(ATTACKS.names())
    assert {"smallcnn", "resnet18", "vgg16"} <= set(MODELS.names())
    assert {"mnist", "fashionmnist", "kmnist", "emnist-letters", "emnist-balanced", "cifar10", "cifar100",
            "svhn", "tinyimagenet"} <= set(DATASETS.names())


def test_defense_params_are_validated():
    from defenses import get_defense
    with pytest.raises(ValueError, match="unknown parameter"):
        get_defense("vanilla", bogus=1)
