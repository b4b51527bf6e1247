"""pytest-benchmark: one served batch of every registered defense and implementation.

Skipped by the default run (--benchmark-skip); run with
``pytest tests/benchmarks --benchmark-only``. Random weights and random inputs; the
architecture and batch size come from $STEALBENCH_BENCH_ARCH (default resnet18) and
$STEALBENCH_BENCH_BATCH (default 32), the device from $STEALBENCH_BENCH_DEVICE (default cpu).
"""
import os

import pytest
import torch

from bench import speed

ARCH = os.environ.get("STEALBENCH_BENCH_ARCH", "resnet18")
BATCH = int(os.environ.get("STEALBENCH_BENCH_BATCH", "32"))
DEVICE = os.environ.get("STEALBENCH_BENCH_DEVICE", "cpu")
CASES = [v for name in speed.default_defenses() for v in speed.variants(name)]


@pytest.fixture(scope="module")
def ctx():
    return speed.make_context(ARCH, DEVICE, n=16)


@pytest.mark.parametrize("variant", CASES, ids=lambda v: v.name + (f"-{v.impl}" if v.impl else ""))
def test_serve_step(benchmark, ctx, variant):
    torch.manual_seed(0)
    d = speed.build_served(variant, ctx)
    x = torch.randn(BATCH, *speed.SHAPE, device=DEVICE)
    if DEVICE.startswith("cuda"):
        def serve():
            d(x)
            torch.cuda.synchronize()
    else:
        def serve():
            d(x)
    benchmark.extra_info.update({"arch": ARCH, "batch_size": BATCH, "style": variant.style})
    benchmark.pedantic(serve, rounds=5, warmup_rounds=1, iterations=1)
    out = d(x)
    assert out.shape == (BATCH, speed.NUM_CLASSES)
    assert torch.allclose(out.sum(1), torch.ones(BATCH, device=DEVICE), atol=1e-4)
