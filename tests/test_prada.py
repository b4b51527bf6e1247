"""PRADA (Juuti et al., EuroS&P 2019): Algorithm 1, the oracle's stream hook and refusal, the
composition with other defenses, and the runner's record of a refused attack.

Streams here are generated (Gaussian images, a fixed random linear victim, JBDA-like
perturbations of a few seeds), not real data, except the last test (a tiny real-MNIST run)."""
from dataclasses import replace

import pytest
import torch

from bench.oracle import BudgetExceededError, Oracle, Refused, stream_monitors
from defenses import get_defense
from defenses import prada
from defenses.prada import PradaMonitor, benign_fpr, shapiro_w


class LinearVictim(torch.nn.Module):
    """A fixed random linear classifier on 1x8x8 generated inputs."""
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(10, 64, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return torch.softmax(self.lin(x.flatten(1)), 1)


def gaussian(n, seed):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def jbda_like(seeds=10, rounds=5, seed=0):
    """JBDA's query stream on generated data: each round re-queries the whole set and doubles it
    with x + 0.1 * sign(noise) (JBDA's step; random signs stand in for the clone's gradient)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(seeds, 1, 8, 8, generator=g)
    batches = []
    for _ in range(rounds):
        batches.append(x)
        x = torch.cat([x, x + 0.1 * torch.randn(x.shape, generator=g).sign()])
    return batches


def one_hot(classes):
    return torch.nn.functional.one_hot(torch.as_tensor(classes), 2).double()


def scalars(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)


# ------------------------------------------------------------------ Algorithm 1
def test_growing_set_threshold_and_distances_by_hand():
    """One class, 1-pixel images 0, 5, 10, 7, 7.5, 7.5 (hand-computed): the first query starts
    G = {0}, D_G = {0}, T = 0; each later one adds its min distance to D; a query farther than
    T joins G and T = max(T, mean(D_G) - std(D_G)) (population std), so T never decreases."""
    m = PradaMonitor(min_set=100)
    x = scalars([0, 5, 10, 7, 7.5, 7.5])
    assert m.observe(x, one_hot([0] * 6)) is None
    assert m.dists[:m.n_dists].tolist() == [5.0, 5.0, 2.0, 0.5, 0.5]
    assert m.sets[0][1] == 4 and m.set_dists[0] == [0.0, 5.0, 5.0, 2.0]  # 7.5 is within T: not added
    t = 10 / 3 - (50 / 9) ** 0.5       # after 10: D_G = {0, 5, 5}
    assert m.threshold[0] == pytest.approx(t)   # 7 then gives 3 - 2.12 = 0.88 < t: T kept
    assert m.seen == 6 and m.last_w is None      # |D| = 5 <= min_set: no test yet


def test_growing_sets_are_per_predicted_class():
    """-1 then 10 start one set each; 1 (class "positive") is 9 from 10, not 2 from -1."""
    m = PradaMonitor()
    m.observe(scalars([-1, 10, 1]), one_hot([0, 1, 1]))
    assert m.dists[:m.n_dists].tolist() == [9.0]


@pytest.mark.parametrize("seed", range(5))
def test_iid_gaussian_stream_is_not_flagged(seed):
    """Natural-like queries (i.i.d. Gaussian, 1,000 of them) give roughly normal min distances."""
    m = PradaMonitor()
    x = gaussian(1000, seed)
    assert m.observe(x, LinearVictim()(x)) is None
    assert m.n_dists > 900 and m.last_w > 0.95


@pytest.mark.parametrize("seed", range(3))
def test_jbda_like_stream_is_flagged_at_the_first_test(seed):
    """Re-queried seeds (distance 0) and 0.1-steps from them pile up at the bottom of D: W
    drops far below delta as soon as the test may run (|D| > 100)."""
    m, victim, verdict = PradaMonitor(), LinearVictim(), None
    for batch in jbda_like(seed=seed):
        verdict = m.observe(batch, victim(batch))
        if verdict:
            break
    assert verdict is not None and verdict["distances"] == 101 and verdict["W"] < 0.8
    assert verdict["at"] <= 120 and m.seen == verdict["at"]   # it stops at the flagging query


def sequential_distances(stream, classes):
    """Algorithm 1's D and |G_c|, one query at a time with a direct nearest-neighbour search
    (the monitor batches the search)."""
    sets, set_d, thr, dists = {}, {}, {}, []
    for row, c in zip(stream.reshape(len(stream), -1).double(), classes):
        if c not in sets:
            sets[c], set_d[c], thr[c] = [row], [0.0], 0.0
            continue
        d = min(float(((row - g) ** 2).sum().sqrt()) for g in sets[c])
        dists.append(d)
        if d > thr[c]:
            sets[c].append(row)
            set_d[c].append(d)
            t = torch.tensor(set_d[c], dtype=torch.float64)
            thr[c] = max(thr[c], float(t.mean() - t.std(correction=0)))
    return dists, {c: len(v) for c, v in sets.items()}


@pytest.mark.parametrize("batch", [1, 7, 100, 290])
def test_batched_search_equals_one_query_at_a_time(batch, monkeypatch):
    """Gaussian queries with repeats (distance 0, must not join G_c) and near-repeats, in batches
    of any size: the same D, growing sets and thresholds as the direct search."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(150, 1, 8, 8, generator=g)
    stream = torch.cat([base, base[:40], base[:40] + 1e-3, torch.randn(60, 1, 8, 8, generator=g)])
    stream = stream[torch.randperm(len(stream), generator=g)]
    classes = LinearVictim()(stream).argmax(1).tolist()
    want, sizes = sequential_distances(stream, classes)
    monkeypatch.setattr(prada, "CHUNK", 64)   # 290 rows: chunks of 64 inside one observe call
    m = PradaMonitor(min_set=10 ** 6)   # no test: compare the whole stream's distances
    for i in range(0, len(stream), batch):
        m.observe(stream[i:i + batch], one_hot_n(classes[i:i + batch]))
    assert m.dists[:m.n_dists].tolist() == pytest.approx(want, abs=1e-9)
    assert {c: v[1] for c, v in m.sets.items()} == sizes
    assert 0.0 in want   # repeats were in the stream
    # the running statistics and sorted D give Algorithm 1's test on D' as a direct computation does
    d = torch.tensor(want, dtype=torch.float64)
    kept = d[(d - d.mean()).abs() < 3 * d.std(correction=0)]
    m.min_set = 0
    m._flag()
    assert m.sorted[:m.n_dists].tolist() == pytest.approx(sorted(want), abs=1e-9)
    assert m.last_w == pytest.approx(shapiro_w(kept), abs=1e-12)


def one_hot_n(classes, n=10):
    return torch.nn.functional.one_hot(torch.as_tensor(classes), n).double()


def test_no_verdict_before_min_set_and_test_every():
    batches = jbda_like(seed=0)
    stream = torch.cat(batches)
    probs = LinearVictim()(stream)
    early = PradaMonitor(min_set=100).observe(stream, probs)
    late = PradaMonitor(min_set=130).observe(stream, probs)
    assert early["distances"] == 101 and late["distances"] == 131
    every10 = PradaMonitor(test_every=10).observe(stream, probs)   # the reference's cadence
    assert (every10["at"] - 1) % 10 == 0 and every10["at"] >= early["at"]


def test_shapiro_w_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for n in (3, 5, 6, 50, 101, 2000):
        for v in (torch.randn(n, generator=g), torch.rand(n, generator=g) ** 4):
            assert shapiro_w(v) == pytest.approx(stats.shapiro(v.numpy()).statistic, abs=1e-6)


def test_shapiro_w_edge_cases():
    assert shapiro_w([1.0, 2.0]) is None and shapiro_w([3.0] * 10) == 1.0
    normal = torch.special.ndtri((torch.arange(1, 501) - 0.5) / 500)
    assert shapiro_w(normal) > 0.999
    assert shapiro_w(torch.cat([torch.zeros(50), torch.ones(50)])) < 0.7


# ------------------------------------------------------------------ the oracle
def test_oracle_refuses_after_the_flag_and_counts_answered_queries():
    batches = jbda_like(seed=1)   # 10, 20, 40, 80, 160: the flag falls in the 80-query batch
    oracle = Oracle(LinearVictim(), 10_000, monitors=[PradaMonitor()])
    answered = 0
    with pytest.raises(Refused) as info:
        for b in batches:
            oracle.query(b)
            answered += len(b)
    assert answered == 70 and oracle.queries_used == 70       # the flagged batch got no answer
    assert info.value.answered == 70 and 70 < info.value.verdict["at"] <= 150
    with pytest.raises(Refused, match="70 queries answered"):   # and nothing after it
        oracle.query(gaussian(1, 0))
    assert oracle.queries_used == 70 and oracle.monitors[0].seen == info.value.verdict["at"]


def test_budget_is_checked_before_the_monitor_sees_the_batch():
    m = PradaMonitor()
    oracle = Oracle(LinearVictim(), 5, monitors=[m])
    with pytest.raises(BudgetExceededError):
        oracle.query(gaussian(6, 0))
    assert m.seen == 0


def test_oracle_without_monitors_is_unchanged():
    oracle = Oracle(LinearVictim(), 10_000, "hard")
    for b in jbda_like(seed=0):
        assert oracle.query(b).shape == (len(b),)
    assert oracle.monitors == [] and oracle.queries_used == 310


# ------------------------------------------------------------------ composition
@pytest.mark.parametrize("name,outer", [("prada", "prada"), ("vanilla+prada", "prada"),
                                        ("mad+prada", "prada"), ("ini+mad+prada", "prada"),
                                        ("vanilla+prada+mad", "mad"), ("ini+prada+am", "am")])
def test_composed_victims_offer_one_fresh_monitor(name, outer):
    """rsplit('+', 1) nests: the PRADA layer is found wherever it sits; each oracle (account)
    gets its own monitor."""
    d = get_defense(name)
    assert d.name == outer
    a, b = stream_monitors(d), stream_monitors(d)
    assert [type(m) for m in a] == [PradaMonitor] and a[0] is not b[0]


def test_composed_names_and_params():
    d = get_defense("ini+mad+prada", delta=0.8)
    assert (d.name, d.base.name, d.base.base.name) == ("prada", "mad", "ini")
    assert stream_monitors(d)[0].delta == 0.8 and d.display.endswith("+PRADA")
    with pytest.raises(ValueError, match=r"delta=1.5 out of range; accepted \[0.0, 1.0\]"):
        get_defense("prada", delta=1.5)
    with pytest.raises(ValueError, match="min_set must be an integer >= 3"):
        get_defense("prada", min_set=2.5)


def test_prada_serves_its_base_unchanged_and_the_oracle_finds_it():
    from tests.generated import tiny_ctx
    ctx = tiny_ctx(n=32)
    d = get_defense("vanilla+prada")
    d.build(ctx)
    d.base.fit(ctx)
    d.eval()
    x = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert torch.equal(d(x), d.base(x))
    oracle = Oracle(d, 100)
    oracle.query(x)
    assert oracle.monitors[0].seen == 7


# ------------------------------------------------------------------ benign accounts
def test_benign_fpr_counts_flagged_accounts():
    images = gaussian(600, 5)
    res = benign_fpr(LinearVictim(), images, streams=3, length=500)
    assert res["fpr"] == 0.0 and res["flagged_at"] == [None] * 3 and min(res["last_w"]) > 0.95
    # the same accounts against delta 1 (everything flagged at the first test)
    res = benign_fpr(LinearVictim(), images, streams=3, length=500, delta=1.0)
    assert res["fpr"] == 1.0 and all(a is not None and a > 100 for a in res["flagged_at"])


# ------------------------------------------------------------------ the runner
def test_refused_attack_records_detected_at_and_last_checkpoint(real_root, tiny_profile, tmp_path,
                                                                monkeypatch):
    """JBDA (20 seeds, rounds of 20/40/80 queries) against PRADA with min_set 60: the flag comes
    in round 3; the cell keeps the 60 answered queries and scores the round-2 clone."""
    from bench import run as runner
    from bench.train import TrainConfig
    p = replace(tiny_profile, defenses=("prada",), labels=("soft",), train_size=500,
                arch_params={"width": 4, "hidden": 16}, train={"mnist": TrainConfig(epochs=1, lr=0.05)},
                defense_params={"prada": {"min_set": 60}},
                attacks={"jbda": {"seed_size": 20, "rounds": 3, "epochs_per_round": 1, "lr": 0.01}})
    (r,) = runner.run_matrix(p, tmp_path, data_root=real_root, progress=False)
    assert r.status == "ok", r.error
    assert r.detected_at == r.queries_used == 60 and r.budget == 140
    assert r.detection["monitor"] == "prada" and 60 < r.detection["at"] <= 140
    assert r.detection["clone"] == "last checkpoint" and len(r.clone_acc_checkpoints) == 2
    assert r.clone_acc == r.clone_acc_checkpoints[-1] and r.fidelity is not None

    # an attack refused before it ever trained: no clone to score, and the record says so
    import attacks

    class Requery:
        """Queries 60 query-set images, then the same 60 again, before any training."""
        name = display = "requery"
        params = {}

        def budget(self):
            return 120

        def seed_images(self):
            return 0

        def run(self, oracle, actx):
            for _ in range(2):
                oracle.query(actx.query_set[:60])
            raise AssertionError("not refused")

    real_get = attacks.get_attack
    monkeypatch.setattr(attacks, "get_attack", lambda n, **k: Requery() if n == "requery" else real_get(n, **k))
    (r,) = runner.run_matrix(replace(p, attacks={"requery": {}}), tmp_path, data_root=real_root, progress=False)
    assert r.status == "ok", r.error
    assert r.detected_at == r.queries_used == 60 and r.detection["at"] > 60
    assert r.detection["clone"] == "none: refused before a clone existed"
    assert r.clone_acc is r.fidelity is r.relative is r.clone_acc_best is None


def test_records_written_before_detection_existed_still_load(tmp_path):
    from bench import records as R
    rec = R.CellRecord(profile="p", dataset="mnist", arch="smallcnn", defense="vanilla", defense_label="Vanilla",
                       defense_params={}, attack="jbda", attack_label="JBDA", attack_params={}, label="soft", seed=0)
    R.save(tmp_path / "r.json", rec)
    import json
    d = json.loads((tmp_path / "r.json").read_text())
    del d["detected_at"], d["detection"]
    (tmp_path / "r.json").write_text(json.dumps(d))
    old = R.load(tmp_path / "r.json")
    assert old.detected_at is None and old.detection == {} and old == rec
