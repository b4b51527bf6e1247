"""The matrix runner on a seconds-scale slice of real MNIST."""
import json
from dataclasses import replace

import pytest

from bench import run as runner


def _metrics(records):
    return [(r.dataset, r.defense, r.attack, r.label, r.benign_acc, r.clone_acc, r.fidelity, r.queries_used)
            for r in records]


def test_knockoff_clone_beats_chance_and_reruns_are_cached(real_root, tiny_profile, tmp_path, monkeypatch):
    p = replace(tiny_profile, attacks={"knockoff": {"budget": 2000, "epochs": 8, "lr": 0.01}}, labels=("soft",))
    recs = runner.run_matrix(p, tmp_path / "a", data_root=real_root, progress=False)
    assert all(r.status == "ok" for r in recs), [r.error for r in recs]
    (r,) = recs
    # far from every platform measured (benign 94.6-95.2, clone 50.0-52.6 across kernel paths and
    # thread counts; one seed of this clone moves by several points): only a broken pipeline fails
    assert r.benign_acc > 80 and r.clone_acc > 25  # chance is 10%
    assert r.queries_used == 2000 and abs(r.relative - r.clone_acc / r.benign_acc) < 1e-9
    assert r.provenance["git_commit"] and r.wall_time_s > 0
    # a cached re-run trains and attacks nothing
    import defenses.vanilla
    monkeypatch.setattr(defenses.vanilla.Vanilla, "fit", lambda *a: pytest.fail("victim retrained"))
    monkeypatch.setattr(runner, "run_cell", lambda *a, **k: pytest.fail("cell recomputed"))
    again = runner.run_matrix(p, tmp_path / "a", data_root=real_root, progress=False)
    assert _metrics(again) == _metrics(recs)


def test_same_seed_same_numbers(real_root, tiny_profile, tmp_path, capsys):
    a = runner.run_matrix(tiny_profile, tmp_path / "a", data_root=real_root, progress=False)
    assert capsys.readouterr().out == ""
    b = runner.run_matrix(tiny_profile, tmp_path / "b", data_root=real_root, progress=True)
    # not a terminal: a line per finished unit with the stage's ETA, no bars
    lines = capsys.readouterr().out.splitlines()
    assert "1 victim to run" in lines and "4 cells to run" in lines
    assert any(ln.startswith("[4/4] cell mnist/vanilla/") and "ETA 0m00s" in ln for ln in lines)
    assert not any("\r" in ln or "it/s" in ln for ln in lines)
    assert all(r.status == "ok" for r in a)
    assert _metrics(a) == _metrics(b)
    assert {r.attack for r in a} == {"knockoff", "jbda"} and {r.label for r in a} == {"soft", "hard"}
    for r in a:  # final and best-over-checkpoints (the reference's max(acc_list)) both recorded
        n = r.attack_params["epochs"] if r.attack == "knockoff" else r.attack_params["rounds"]
        assert len(r.clone_acc_checkpoints) == n and r.clone_acc_checkpoints[-1] == r.clone_acc
        assert r.clone_acc_best == max(r.clone_acc_checkpoints) >= r.clone_acc
    table = (tmp_path / "a" / "table.md").read_text()
    assert "KnockoffNets" in table and "JBDA" in table


def test_clone_checkpoints_off_records_the_same_final_clone(real_root, tiny_profile, tmp_path):
    """Testing the clone every epoch/round only measures: off (the ci profile), the final clone
    and its accuracy are the same, and no best-epoch accuracy is claimed."""
    on = runner.run_matrix(tiny_profile, tmp_path / "on", data_root=real_root, progress=False)
    off = runner.run_matrix(replace(tiny_profile, clone_checkpoints=False), tmp_path / "off",
                            data_root=real_root, progress=False)
    assert _metrics(off) == _metrics(on) and all(r.status == "ok" for r in off)
    assert all(r.clone_acc_checkpoints == [] and r.clone_acc_best is None for r in off)
    assert all(r.clone_acc_best is not None for r in on)
    from bench.profiles import get_profile
    assert not get_profile("ci").clone_checkpoints and get_profile("cpu").clone_checkpoints


def test_interrupted_victim_resumes(real_root, tiny_profile, tmp_path):
    p = replace(tiny_profile, attacks={"knockoff": {"budget": 100, "epochs": 1}}, labels=("hard",))
    runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)
    cells = list((tmp_path / "records" / "cells").glob("*.json"))
    cells[0].unlink()  # as if stopped before the cell's record was written
    again = runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)
    assert again[0].status == "ok" and len(list((tmp_path / "records" / "cells").glob("*.json"))) == 1


def test_cli_bad_inputs(capsys):
    assert runner.main(["--matrix", "smok"]) == 2
    assert "Did you mean 'smoke'" in capsys.readouterr().err
    assert runner.main(["--defenses", "vanila"]) == 2
    assert "'vanilla'" in capsys.readouterr().err
    assert runner.main(["--datasets", "cifar10"]) == 2
    assert runner.main(["--labels", "logits"]) == 2
    assert runner.main(["--seeds", "a,b"]) == 2


def test_dry_run_lists_cells(capsys, tmp_path):
    assert runner.main(["--matrix", "smoke", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and all(line.startswith("to run") for line in out)


def test_composed_defense_gets_its_base_params(tiny_profile):
    from defenses import get_defense
    p = replace(tiny_profile, defense_params={"ini": {"log_cosine_epochs": 1}, "ini+mad": {"eps": 0.5}})
    kwargs = runner.defense_params(p, "ini+mad")
    d = get_defense("ini+mad", **kwargs)
    assert d.base.params["log_cosine_epochs"] == 1 and d.params["eps"] == 0.5
    # the base's params are part of the composed victim's key
    q = replace(p, defense_params={"ini+mad": {"eps": 0.5}})
    assert runner.victim_key(p, "mnist", "ini+mad", 0) != runner.victim_key(q, "mnist", "ini+mad", 0)


def test_victim_key_covers_training_roles_not_the_query_set(tiny_profile):
    """Another query set is another cell, never another victim; another OOD set retrains."""
    r = tiny_profile.roles["mnist"]
    other_query = replace(tiny_profile, roles={"mnist": replace(r, query="kmnist", query_split="test")})
    other_ood = replace(tiny_profile, roles={"mnist": replace(r, ood="fashionmnist", ood_split="train")})
    key = lambda p: runner.victim_key(p, "mnist", "ini", 0)
    assert key(other_query) == key(tiny_profile) and key(other_ood) != key(tiny_profile)
    cell = lambda p: runner.cell_key(p, "mnist", "ini", "knockoff", "soft", 0)
    assert cell(other_query) != cell(tiny_profile)


def test_a_wider_clone_is_another_cell_on_the_same_victim(real_root, tiny_profile, tmp_path, monkeypatch):
    """clone_arch_params changes the attacker's clone only: same victim key, another cell key,
    the clone built at the given width, and the record says so."""
    from attacks.base import AttackContext
    wide = replace(tiny_profile, clone_arch_params={"width": 4, "hidden": 8}, labels=("soft",),
                   attacks={"knockoff": {"budget": 300, "epochs": 1, "lr": 0.01}})
    assert runner.victim_key(wide, "mnist", "vanilla", 0) == runner.victim_key(tiny_profile, "mnist", "vanilla", 0)
    cell = lambda p: runner.cell_key(p, "mnist", "vanilla", "knockoff", "soft", 0)
    assert cell(wide) != cell(replace(wide, clone_arch_params={}))
    widths, new_clone = [], AttackContext.new_clone
    def spy(self):
        m = new_clone(self)
        widths.append(m.body[0].out_channels)
        return m
    monkeypatch.setattr(AttackContext, "new_clone", spy)
    (rec,) = runner.run_matrix(wide, tmp_path, data_root=real_root, progress=False)
    assert rec.status == "ok" and widths and set(widths) == {4}
    assert rec.attack_params["clone_arch_params"] == {"width": 4, "hidden": 8}


def test_cells_reuse_the_victims_served_predictions(real_root, tiny_profile, tmp_path):
    p = replace(tiny_profile, attacks={"knockoff": {"budget": 300, "epochs": 1, "lr": 0.01}}, labels=("hard",))
    (a,) = runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)
    served = runner.served_path(tmp_path, a.victim_key)
    assert served.exists()
    # without the saved predictions the cell recomputes them and gets the same fidelity
    served.unlink()
    for f in (tmp_path / "records" / "cells").glob("*.json"):
        f.unlink()
    (b,) = runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)
    assert (b.fidelity, b.clone_acc) == (a.fidelity, a.clone_acc)


@pytest.mark.usefixtures("one_thread")
def test_knobs_are_tuned_against_the_vanilla_victim(real_root, tiny_profile, tmp_path):
    """Paper protocol: a tuned defense stays close to *Vanilla's* benign accuracy (same data set
    and seed), not to its own base's (AM's base is the OE-trained defender)."""
    from bench.train import accuracy, predict
    # a wide tolerance: the tiny AM's defender alone may cost more than 0.5 points, which would
    # make tune_knobs fall back to its knob-off accuracy (tests/test_tune.py)
    p = replace(tiny_profile, tune=True, defenses=("am",), attacks={}, tune_tolerance=10.0)
    am, rec = runner.build_victim(p, "mnist", "am", 0, tmp_path, real_root, progress=False)
    vanilla, _ = runner.build_victim(p, "mnist", "vanilla", 0, tmp_path, real_root, progress=False)
    val = runner.load_roles(p, "mnist", real_root)["val"]
    t = rec.extra["tuning"]
    assert t["anchor"].startswith("vanilla") and t["split"] == "val"
    assert t["reference_acc"] == accuracy(predict(vanilla, val.x).argmax(1), val.y)
    base = replace(p, tune_anchor="base")
    _, rec_b = runner.build_victim(base, "mnist", "am", 0, tmp_path, real_root, progress=False)
    assert rec_b.key != rec.key and rec_b.extra["tuning"]["anchor"].startswith("base")
    assert rec_b.extra["tuning"]["reference_acc"] == accuracy(predict(am.base, val.x).argmax(1), val.y)


def test_full_profile_is_the_papers_protocol():
    from bench.profiles import get_profile
    full = get_profile("full")
    assert full.val_size == 0 and full.tune and full.tune_split == "test" and full.tune_anchor == "vanilla"
    assert runner.defense_params(full, "dcp", "cifar100")["gamma"] == 0.1
    assert runner.defense_params(full, "dcp", "cifar10") == {}
    assert runner.resolved_defense_params(full, "dcp", "cifar100")["params"]["gamma"] == 0.1
    assert not full.deviations[0].startswith("none")
    assert full.roles["fashionmnist"].query == "emnist-digits"
    vgg = get_profile("full-vgg")
    assert vgg.arch == "vgg16" and runner.defense_params(vgg, "ini+mad")["surrogate_bn"] == "eval"
    assert runner.defense_params(vgg, "ini+mad")["base_params"] == {"log_cosine_epochs": 5}
    with pytest.raises(ValueError, match="tune_split"):
        replace(full, tune_split="train")


def test_answer_stats_entropy_confidence_and_class_share():
    import torch
    from bench.victims import answer_stats
    uniform, onehot = torch.full((4, 10), 0.1), torch.eye(10)[[3, 3, 3, 1]]
    u, o = answer_stats(uniform), answer_stats(onehot)
    assert abs(u["entropy"] - 2.3026) < 1e-3 and u["max_prob"] == 0.1
    assert o["entropy"] == 0.0 and o["max_prob"] == 1.0 and o["top_class_share"] == 0.75


@pytest.mark.parametrize("name", ["vanilla", "ini", "edm"])
def test_channels_last_training_matches_the_default_format(name, monkeypatch):
    """STEALBENCH_CHANNELS_LAST=1 changes kernels, not the maths (generated data, a few steps)."""
    import torch
    from defenses import get_defense
    from tests.generated import generated_set, tiny_ctx

    def trained(flag):
        monkeypatch.setenv("STEALBENCH_CHANNELS_LAST", flag)
        ctx = tiny_ctx(n=256, hash_set=True)
        ctx.hash_set = generated_set(256, "gen-hash", 2)
        torch.manual_seed(0)
        d = get_defense(name)
        d.build(ctx)
        d.fit(ctx)
        return {k: v.float() for k, v in d.state_dict().items()}
    a, b = trained("0"), trained("1")
    for k in a:   # float drift over a few lr-0.1 steps is ~5e-5; a layout bug moves weights by ~0.1
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=2e-4), k


@pytest.mark.parametrize("flag, fmt", [(None, "channels_last"), ("0", "contiguous"), ("1", "channels_last")])
def test_records_name_the_memory_format_even_when_unset(monkeypatch, flag, fmt):
    from bench.io import platform_info
    from bench.train import channels_last
    if flag is None:
        monkeypatch.delenv("STEALBENCH_CHANNELS_LAST", raising=False)
    else:
        monkeypatch.setenv("STEALBENCH_CHANNELS_LAST", flag)
    assert platform_info()["memory_format"] == fmt
    assert channels_last() == (fmt == "channels_last")


def test_defense_seeds_cut_only_the_named_defenses(tiny_profile):
    p = replace(tiny_profile, seeds=(0, 1, 2), defenses=("vanilla", "ini-iso"), defense_seeds={"ini-iso": (0,)})
    cells = runner.plan(p)
    assert {c[4] for c in cells if c[1] == "vanilla"} == {0, 1, 2}
    assert {c[4] for c in cells if c[1] == "ini-iso"} == {0}


def test_help_names_every_profile_and_attack(capsys):
    """--help is generated from the registries, so a new profile or attack shows up in it."""
    import attacks  # noqa: F401
    from attacks.base import list_attacks

    from bench.profiles import PROFILES
    with pytest.raises(SystemExit):
        runner.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in list(PROFILES) + list_attacks():
        assert name in text.replace("- ", "-"), name


def test_attack_defenses_keep_a_costly_attack_to_some_defenses():
    """A profile's attack_defenses limits an attack to the defenses listed; others attack all."""
    from bench.profiles import get_profile
    p = replace(get_profile("smoke"), defenses=("vanilla", "mad", "ini"), attacks={"knockoff": {}, "jbda": {}},
                attack_defenses={"jbda": ("vanilla",)}, extra_defenses={}, defense_seeds={})
    cells = runner.plan(p)
    assert {c[1] for c in cells if c[2] == "jbda"} == {"vanilla"}
    assert {c[1] for c in cells if c[2] == "knockoff"} == {"vanilla", "mad", "ini"}
    ext = runner.plan(get_profile("cpu-extended"))
    assert {c[1] for c in ext if c[2] == "dfme"} == {"vanilla", "ini", "prada"}
    assert {c[1] for c in ext if c[2] == "adaptive"} == {"mad", "am", "dcp", "reverse-sigmoid", "gaussian-noise",
                                                         "grad2"}
    assert {c[3] for c in ext} == {"soft"} and {c[0] for c in ext} == {"mnist"}
    assert {c[1] for c in ext if c[2] == "knockoff"} >= {"vanilla", "ini", "prada", "ini-adv"}
    assert {c[4] for c in ext if c[1] == "ini-adv"} == {0}
    only_hard = replace(p, labels=("hard",), attack_labels={"jbda": ("soft",)})
    assert not [c for c in runner.plan(only_hard) if c[2] == "jbda"]   # --labels hard: none left
