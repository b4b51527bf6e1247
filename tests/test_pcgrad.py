import torch

from bench.pcgrad import gram, pairwise_cosines, pcgrad, pcgrad_weights, projected_gram


def test_two_conflicting_gradients_hand_computed():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g1.g2 = -1: g1 -> g1 + g2/2 = (0.5, 0.5); g2 -> g2 + g1 = (0, 1); mean = (0.25, 0.75)
    out = pcgrad([g1, g2], torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.tensor([0.25, 0.75]))


def test_no_conflict_is_plain_mean():
    grads = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 0.0, 3.0]), torch.tensor([0.0, 1.0, 1.0])]
    out = pcgrad(grads, torch.Generator().manual_seed(1))
    assert torch.allclose(out, torch.stack(grads).mean(0))


def test_projected_pair_no_longer_conflicts():
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
        G = gram([a, b])
        W = pcgrad_weights(G, g)
        pg = projected_gram(G, W)
        # each projected gradient against the original it was projected off
        proj = W.float() @ torch.stack([a, b])
        assert proj[0] @ b >= -1e-5 and proj[1] @ a >= -1e-5
        if a @ b < 0:
            assert not torch.allclose(proj, torch.stack([a, b]))
        assert pg.shape == (2, 2)


def test_matches_explicit_loop_with_many_objectives():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(30, generator=gen, dtype=torch.float64) for _ in range(4)]
    order_gen = torch.Generator().manual_seed(7)
    fast = pcgrad(grads, torch.Generator().manual_seed(7))
    # the reference algorithm on the vectors themselves, same random orders
    proj = []
    for i, gi in enumerate(grads):
        v = gi.clone()
        for j in torch.randperm(4, generator=order_gen).tolist():
            if j != i and v @ grads[j] < 0:
                v = v - (v @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        proj.append(v)
    assert torch.allclose(fast, torch.stack(proj).mean(0))


def test_pairwise_cosines():
    c = pairwise_cosines([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.zeros(2)])
    assert abs(c[0, 1].item() - 2 ** -0.5) < 1e-6 and c[0, 2] == 0 and abs(c[0, 0].item() - 1) < 1e-6
