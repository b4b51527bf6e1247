"""Resumable victim training: a unit stopped after an epoch and resumed in a fresh "process"
(new defense object, new Context) ends bit-identical to one that was never stopped, with the
same fit logs. All data here is small and randomly generated (not a real data set)."""
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import bench.train as T
from bench.data import ImageSet
from bench.io import load_state, write_json
from bench.train import Context, TrainConfig, fit, seed_everything
from bench.victims import train_unit
from defenses import get_defense

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 3


class Interrupted(Exception):
    """Stands for a kill: raised from inside training."""


def images(n, seed, augment=False):
    g = torch.Generator().manual_seed(seed)
    return ImageSet("gen", f"s{seed}", torch.randn(n, 1, 8, 8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), 10, (0.0,), (1.0,), augment)


def tiny_ctx(seed=0, ood_augment=False):
    # 48 ID images in batches of 16: 3 steps an epoch; 40 OOD images: 2 batches a pass, so the
    # OOD stream's passes do not line up with epochs. step_every=1: the LR schedule matters.
    return Context(arch="smallcnn", num_classes=10, in_channels=1, input_size=8, id_train=images(48, 1),
                   ood_train=images(40, 2, ood_augment), hash_set=images(32, 3),
                   train=TrainConfig(epochs=EPOCHS, batch_size=16, step_every=1, gamma=0.5),
                   seed=seed, progress=False, arch_params={"width": 4, "hidden": 16})


def interrupt_at(monkeypatch, call, after=1):
    """Raise during the ``call``-th pass over training data (counted over every fit call,
    1-based) after ``after`` of its batches: the epoch before it finished and was saved."""
    real, seen = T.batches, {"n": 0}

    def batches(x, y, *a, **kw):
        if y is None:   # the OOD stream: untouched
            yield from real(x, y, *a, **kw)
            return
        seen["n"] += 1
        for i, b in enumerate(real(x, y, *a, **kw)):
            if seen["n"] == call and i == after:
                raise Interrupted
            yield b
    monkeypatch.setattr(T, "batches", batches)
    return seen


# every registered defense whose units train, with params that exercise its step's state
TRAINED = {
    "vanilla": ({}, 2),
    "am-defender": ({}, 2),
    "am": ({}, 5),                                  # misinformation unit, after its base's
    "am-id": ({"mis_data": "id"}, 5),
    "edm": ({"n_members": 3}, 5),                    # the hash net's fit, after the members' one
    "edm-members": ({"n_members": 3}, 2),
    "ini": ({"log_cosine_epochs": 2}, 2),            # Figure 3's cosine log spans the stop
    "ini-iso": ({"log_cosine_epochs": 1}, 3),
    "ini-ind": ({}, 2),
    "ini-nogradnorm": ({}, 2),
    "ini-adv": ({"adv_every": 2}, 2),                # C's step phase crosses epochs
    "ini-adv-strong": ({}, 3),
    "grad2": ({"surrogate_epochs": EPOCHS}, 5),      # the distilled surrogate, after its base
}
NAMES = {"am-id": "am", "edm-members": "edm"}


def train(name, params, root, seed=0, ood_augment=False):
    """build_victim's unit loop on a tiny Context: a unit with state.pt is loaded, not trained."""
    ctx = tiny_ctx(seed, ood_augment)
    seed_everything(seed)
    d = get_defense(NAMES.get(name, name), **params)
    d.build(ctx)
    logs = {}
    for unit in d.units():
        unit_dir = root / unit.name
        if (unit_dir / "state.pt").exists():
            unit.nets.load_state_dict(load_state(unit_dir / "state.pt"))
        else:
            train_unit(unit, ctx, unit_dir, {"unit": unit.name, "params": unit.train_params(), "seed": seed}, seed)
            logs[unit.name] = getattr(unit, "fit_log", None)
    return d, logs


def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_every_defense_that_trains_is_covered(monkeypatch):
    """TRAINED lists every registered defense whose own unit trains (a base's units are the
    base's): a new trained defense must join the resume check."""
    from defenses import list_defenses
    covered = {NAMES.get(k, k) for k in TRAINED}
    trains = set()
    for name in list_defenses():
        params = next((p for k, (p, _) in TRAINED.items() if NAMES.get(k, k) == name), {})
        d = get_defense(name, **params)
        d.build(tiny_ctx())
        interrupt_at(monkeypatch, 1, after=0)
        try:
            if any(u is d for u in d.units()):
                d.fit(tiny_ctx())
        except Interrupted:
            trains.add(name)
        monkeypatch.undo()
    assert trains == covered


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_interrupted_training_resumes_bit_identical(name, tmp_path, monkeypatch):
    params, call = TRAINED[name]
    whole, whole_logs = train(name, params, tmp_path / "whole")
    seen = interrupt_at(monkeypatch, call)
    with pytest.raises(Interrupted):
        train(name, params, tmp_path / "cut")
    assert seen["n"] == call
    partial = [p for p in (tmp_path / "cut").glob("*/partial") if list(p.glob("fit*.pt"))]
    assert len(partial) == 1   # the stopped unit's epochs are on disk
    monkeypatch.undo()
    resumed, logs = train(name, params, tmp_path / "cut")
    assert_same(whole, resumed)
    stopped = partial[0].parent.name
    assert logs[stopped] == whole_logs[stopped]
    assert not partial[0].exists()   # removed once state.pt is written
    assert (partial[0].parent / "state.pt").exists()


def test_resuming_differs_from_restarting(tmp_path, monkeypatch):
    """The check above can fail: training the stopped unit again from epoch 0 on top of the
    in-memory state it had is not the same run."""
    whole, _ = train("ini-adv", {}, tmp_path / "whole")
    ctx = tiny_ctx()
    seed_everything(0)
    d = get_defense("ini-adv")
    d.build(ctx)
    interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        d.fit(ctx)
    monkeypatch.undo()
    d.fit(ctx)
    assert any(not torch.equal(a, b) for a, b in zip(whole.state_dict().values(), d.state_dict().values()))


def _fitted_edm(folder):
    """A 2-member EDM fitted with its checkpoints in folder."""
    ctx = tiny_ctx()
    seed_everything(0)
    d = get_defense("edm", n_members=2)
    d.build(ctx)
    ctx.begin_checkpoints(folder)
    d.fit(ctx)
    return d


def test_finished_fit_is_loaded_without_training(tmp_path, monkeypatch):
    d = _fitted_edm(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("fit*.pt")) == ["fit0.pt", "fit1.pt"]
    seen = interrupt_at(monkeypatch, call=10 ** 6)   # counts passes over training data
    again = _fitted_edm(tmp_path)
    assert seen["n"] == 0
    assert_same(d, again)
    assert again.fit_log == d.fit_log


def test_checkpoints_load_with_weights_only(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        train("ini-adv", {"log_cosine_epochs": 1}, tmp_path)
    path = tmp_path / "ini-adv" / "partial" / "fit0.pt"
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 2 and set(saved["extra"]) >= {"surrogate", "adv_opt", "cos_log", "pcgrad_order"}
    assert len(saved["curves"]) == 0 and len(saved["extra"]["epoch_losses"]["ben"]) == 2
    assert saved["extra"]["step"] == {"step": 6}


def test_partial_dir_of_another_spec_is_discarded(tmp_path, monkeypatch):
    """A seed-1 run's checkpoints (same shapes and calls) under a seed-0 unit: not reused."""
    def stop_seed1_run(root):
        interrupt_at(monkeypatch, 3)
        with pytest.raises(Interrupted):
            train("vanilla", {}, root, seed=1)
        monkeypatch.undo()
    whole, _ = train("vanilla", {}, tmp_path / "whole", seed=0)
    stop_seed1_run(tmp_path / "stale")
    resumed, _ = train("vanilla", {}, tmp_path / "stale", seed=0)
    assert_same(whole, resumed)
    # the same files under a spec that claims seed 0 are resumed: so the check above can fail
    stop_seed1_run(tmp_path / "lie")
    spec = tmp_path / "lie" / "vanilla" / "partial" / "spec.json"
    write_json(spec, {**json.loads(spec.read_text()), "seed": 0})
    lied, _ = train("vanilla", {}, tmp_path / "lie", seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(whole.state_dict().values(), lied.state_dict().values()))


def test_checkpoint_of_another_call_is_set_aside(tmp_path):
    ctx = tiny_ctx()
    seed_everything(0)
    d = get_defense("vanilla")
    d.build(ctx)
    ctx.begin_checkpoints(tmp_path)
    d.fit(ctx)
    ctx2 = replace(tiny_ctx(), train=replace(tiny_ctx().train, lr=0.05))
    seed_everything(0)
    other = get_defense("vanilla")
    other.build(ctx2)
    ctx2.begin_checkpoints(tmp_path)
    with pytest.warns(UserWarning, match="another fit call"):
        other.fit(ctx2)
    ref = get_defense("vanilla")
    ctx3 = replace(tiny_ctx(), train=replace(tiny_ctx().train, lr=0.05))
    seed_everything(0)
    ref.build(ctx3)
    ref.fit(ctx3)
    assert_same(ref, other)


def test_fit_restores_global_rng_ood_augmentation_and_extra_state(tmp_path, monkeypatch):
    """A step that draws from torch's global RNG (dropout) and from its own generator, an
    augmented OOD stream, a trained tensor outside the modules and a step-kept log all come
    back as they were; the resumed "process" starts from another global RNG state."""
    def run(root, rng_seed):
        ctx = tiny_ctx(ood_augment=True)
        ctx.begin_checkpoints(root)
        torch.manual_seed(rng_seed)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        bias = torch.nn.Parameter(torch.randn(10))
        log, gen = {"n": 0, "seen": []}, torch.Generator().manual_seed(rng_seed)

        def step(x, y, xo):
            log["n"] += 1
            log["seen"].append(round(float(xo.sum()), 4))
            z = F.dropout(net(x), 0.5) + bias + torch.rand(1, generator=gen)
            return {"ce": F.cross_entropy(z, y), "ood": net(xo).pow(2).mean()}
        curves = fit(list(net.parameters()) + [bias], ctx, step, modules=[net], with_ood=True,
                     extra_state={"log": log, "noise": gen})
        return [*net.state_dict().values(), bias.detach()], log, curves

    whole = run(tmp_path / "whole", 0)
    interrupt_at(monkeypatch, 2, after=2)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", 0)
    monkeypatch.undo()
    resumed = run(tmp_path / "cut", 5)
    assert all(torch.equal(a, b) for a, b in zip(whole[0], resumed[0]))
    assert whole[1] == resumed[1] and whole[1]["n"] == EPOCHS * 3 and whole[2] == resumed[2]
    # the global RNG matters here: without restoring it the resumed run differs
    interrupt_at(monkeypatch, 2, after=2)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut2", 0)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    broken = run(tmp_path / "cut2", 5)
    monkeypatch.undo()
    assert any(not torch.equal(a, b) for a, b in zip(whole[0], broken[0]))


def test_build_victim_resumes_a_stopped_unit(real_root, tiny_profile, tmp_path, monkeypatch):
    """Through build_victim on real MNIST (the tiny profile, 2 epochs): stopped in epoch 2, run
    again, the unit's state.pt and fit log equal an uninterrupted run's; partial/ is gone."""
    from bench.victims import build_victim
    tiny_profile = replace(tiny_profile, train_size=1000, test_size=200, query_size=500, val_size=100)
    build_victim(tiny_profile, "mnist", "vanilla", 0, tmp_path / "whole", real_root, progress=False)
    interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        build_victim(tiny_profile, "mnist", "vanilla", 0, tmp_path / "cut", real_root, progress=False)
    monkeypatch.undo()
    [unit] = [p.parent for p in (tmp_path / "cut" / "victims").glob("*/partial")]
    assert (unit / "partial" / "fit0.pt").exists() and not (unit / "state.pt").exists()
    _, rec = build_victim(tiny_profile, "mnist", "vanilla", 0, tmp_path / "cut", real_root, progress=False)
    assert rec.extra["train_s"] == {"vanilla": json.loads((unit / "train_time.json").read_text())["train_s"]}
    ref = tmp_path / "whole" / "victims" / unit.name
    a, b = load_state(ref / "state.pt"), load_state(unit / "state.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((unit / "fit_log.json").read_text()) == json.loads((ref / "fit_log.json").read_text())
    assert not (unit / "partial").exists()


def test_training_time_counts_the_epochs_of_earlier_processes(tmp_path, monkeypatch):
    """train_time.json holds the unit's training seconds, epochs restored from a checkpoint
    included: a stopped-and-resumed unit reports what an unstopped one does. A fake clock
    advances 1 s per reading; an epoch reads it at its start and end: 1 s per epoch."""
    class Clock:
        now = 0.0

        @classmethod
        def time(cls):
            cls.now += 1.0
            return cls.now
    monkeypatch.setattr(T, "time", Clock)
    train("vanilla", {}, tmp_path / "whole")
    assert json.loads((tmp_path / "whole/vanilla/train_time.json").read_text()) == {"train_s": EPOCHS}
    interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        train("vanilla", {}, tmp_path / "cut")
    monkeypatch.undo()                         # a new process: the real batches, the same clock
    monkeypatch.setattr(T, "time", Clock)
    train("vanilla", {}, tmp_path / "cut")      # epoch 1 restored (1 s), epochs 2-3 run (2 s)
    assert json.loads((tmp_path / "cut/vanilla/train_time.json").read_text()) == {"train_s": EPOCHS}
