"""A newcomer's defense or attack must run somewhere end to end: every registered name is in the
smoke-defenses / smoke-attacks profiles (this test names what is missing and where to add it)."""
from attacks import list_attacks
from bench.profiles import get_profile
from defenses import get_defense, list_defenses


def served_units(name):
    """The registered names a (composed) defense runs: itself and its bases."""
    d, out = get_defense(name), set()
    while d is not None:
        out.add(d.name)
        d = getattr(d, "base", None)
    return out


def test_every_registered_defense_runs_in_smoke_defenses():
    covered = set().union(*(served_units(n) for n in get_profile("smoke-defenses").defenses))
    missing = sorted(set(list_defenses()) - covered)
    assert not missing, f"add {missing} to ALL_DEFENSES in bench/profiles.py"


def test_every_registered_attack_runs_in_smoke_attacks():
    missing = sorted(set(list_attacks()) - set(get_profile("smoke-attacks").attacks))
    assert not missing, f"add {missing} to ALL_ATTACKS in bench/profiles.py"
