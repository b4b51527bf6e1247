"""Training-cost floors: what InI's and EDM's steps cannot avoid, timed primitive by primitive.

    python -m bench.floor --arch smallcnn --device cpu      (about a minute on 2 CPU cores)

InI's step needs, at the least (defenses/ini.py explains how each term is computed):
  V forward on the ID batch and on the OOD batch                      2 x V_fwd
  one V backward per objective (PCGrad needs the four gradients apart) 4 x V_bwd
  the surrogate's forward + VJP set-up on ID and OOD                   2 x C_fwd
  three surrogate parameter gradients (iso: adversary and CE; gradnorm) 3 x C_vjp
  two forward-mode products (the double backward of iso and gradnorm)  2 x C_jvp
  the optimizer step                                                    1 x opt
EDM's step: each member forwards the ID and the OOD batch and back-propagates both:
  N x (2 x V_fwd + 2 x V_bwd) + opt over N members.
Vanilla's step: V_fwd + V_bwd + opt. Floors are reported in Vanilla steps, beside the
measured step of the real implementation, so "InI's epoch is X times its floor" is one
number. Primitives are timed interleaved (A B C A B C ...), medians over repeats, so a burst
of background load hits all of them; the load average before and after is recorded.

Also measures the machine's peak (a large matmul and a large convolution, FLOP/s) and the
Vanilla training throughput as a fraction of it (FLOPs per training image counted with
torch.utils.flop_counter).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp, vjp

from .io import provenance, write_json
from .models import build
from .timing import load_reading, sync
from .train import channels_last, to_format, to_loop_format

IN_SHAPES = {"smallcnn": (1, 28, 28), "resnet18": (3, 32, 32), "vgg16": (3, 32, 32)}


def fmt(*ts):
    """Models and image batches in the training loop's memory format (STEALBENCH_CHANNELS_LAST)."""
    if not channels_last():
        return ts if len(ts) > 1 else ts[0]
    out = [to_loop_format(t) if isinstance(t, torch.nn.Module) else to_format(t) for t in ts]
    return out if len(out) > 1 else out[0]


def timed(fn, device, n: int) -> float:
    """Median seconds of n calls."""
    out = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def primitives(arch: str, batch: int, device: str, seed: int = 0) -> dict:
    """Callables for each primitive on a fixed batch (random images: timing only)."""
    torch.manual_seed(seed)
    shape = IN_SHAPES[arch]
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    v = build(arch, 10, shape[0]).to(device).train()
    c = build(arch, 10, shape[0]).to(device).eval().requires_grad_(False)
    x, v, c = fmt(x, v, c)
    params = list(v.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    cparams = {k: p.detach() for k, p in c.named_parameters()}
    f = lambda p: functional_call(c, p, (x,))
    zc, cvjp = vjp(f, cparams)
    a = torch.randn_like(zc)
    tangent = {k: torch.randn_like(p) for k, p in cparams.items()}
    state = {}

    def v_fwd():
        state["z"] = v(x)

    def v_bwd():
        if "z" not in state:
            v_fwd()
        torch.autograd.grad(state["z"], params, torch.ones_like(state["z"]), retain_graph=True)

    def step_vanilla():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(v(x), y).backward()
        opt.step()

    def opt_step():
        for p in params:
            p.grad = torch.zeros_like(p) if p.grad is None else p.grad
        opt.step()

    return {"V_fwd": v_fwd, "V_bwd": v_bwd, "C_fwd": lambda: vjp(f, cparams),
            "C_vjp": lambda: cvjp(a), "C_jvp": lambda: jvp(f, (cparams,), (tangent,)),
            "opt": opt_step, "vanilla_step": step_vanilla}


def ini_step(arch: str, batch: int, device: str, impl: str = "fast", seed: int = 0):
    """One real InI training step (objective gradients, PCGrad, optimizer), as defenses/ini.py runs it."""
    from bench.pcgrad import gram, pcgrad_weights
    from defenses import get_defense
    torch.manual_seed(seed)
    shape = IN_SHAPES[arch]
    x, xo = torch.randn(batch, *shape, device=device), torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    d = get_defense("ini", train_impl=impl)
    v = build(arch, 10, shape[0]).to(device).train()
    x, xo, v = fmt(x, xo, v)

    class Ctx:  # the two things make_surrogate reads
        seed = 0

        def new_model(self):
            return build(arch, 10, shape[0]).to(device)
    sur = d.make_surrogate(Ctx())
    params = list(v.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.5, weight_decay=1e-3)
    fn = d.objective_grads if impl == "fast" else d.objective_grads_reference
    gen = torch.Generator().manual_seed(0)

    def step():
        opt.zero_grad(set_to_none=True)
        _, grads = fn(sur, v, params, x, y, xo)
        G = torch.stack(grads)
        update = pcgrad_weights(gram(G), gen).mean(0).to(G) @ G
        i = 0
        for q in params:
            q.grad = update[i:i + q.numel()].view_as(q)
            i += q.numel()
        opt.step()
    return step


def edm_step(arch: str, batch: int, device: str, n_members: int = 5, seed: int = 0):
    from defenses.edm import diversity
    torch.manual_seed(seed)
    shape = IN_SHAPES[arch]
    x, xo = torch.randn(batch, *shape, device=device), torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    members = torch.nn.ModuleList(build(arch, 10, shape[0]) for _ in range(n_members)).to(device).train()
    x, xo, members = fmt(x, xo, members)
    opt = torch.optim.SGD(members.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        ce = sum(F.cross_entropy(m(x), y) for m in members)
        div = diversity(torch.stack([torch.softmax(m(xo), 1) for m in members]))
        (ce + div).backward()
        opt.step()
    return step


INI_FLOOR = {"V_fwd": 2, "V_bwd": 4, "C_fwd": 2, "C_vjp": 3, "C_jvp": 2, "opt": 1}


def edm_floor(n: int) -> dict:
    return {"V_fwd": 2 * n, "V_bwd": 2 * n, "opt": n}


def measure_floors(arch: str, batch: int, device: str, repeats: int, calls: int) -> dict:
    prim = primitives(arch, batch, device)
    real = {"ini_step": ini_step(arch, batch, device), "edm_step": edm_step(arch, batch, device)}
    fns = {**prim, **real}
    for fn in fns.values():   # warm-up
        fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved: A B C A B C ...
        for k, fn in fns.items():
            samples[k].append(timed(fn, device, calls))
    med = {k: statistics.median(v) for k, v in samples.items()}
    spread = {k: [min(v), max(v)] for k, v in samples.items()}
    van = med["vanilla_step"]
    floor = lambda counts: sum(med[k] * n for k, n in counts.items())
    ini_floor, edm_fl = floor(INI_FLOOR), floor(edm_floor(5))
    return {"primitives_s": med, "spread_s": spread, "repeats": repeats, "calls": calls,
            "ini": {"floor_counts": INI_FLOOR, "floor_vanilla_steps": ini_floor / van,
                    "step_vanilla_steps": med["ini_step"] / van, "step_over_floor": med["ini_step"] / ini_floor},
            "edm": {"floor_counts": edm_floor(5), "floor_vanilla_steps": edm_fl / van,
                    "step_vanilla_steps": med["edm_step"] / van, "step_over_floor": med["edm_step"] / edm_fl}}


def peak_flops(device: str, n: int = 2048, repeats: int = 5) -> dict:
    """FLOP/s of a large fp32 matmul and a large 3x3 convolution."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t_mm = min(timed(lambda: a @ b, device, 1) for _ in range(repeats))
    x = torch.randn(64, 64, 56, 56, device=device)
    w = torch.randn(64, 64, 3, 3, device=device)
    t_conv = min(timed(lambda: F.conv2d(x, w, padding=1), device, 1) for _ in range(repeats))
    return {"matmul_flops": 2 * n ** 3 / t_mm, "conv_flops": 2 * 64 * 64 * 9 * 64 * 56 * 56 / t_conv}


def train_flops_per_image(arch: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    shape = IN_SHAPES[arch]
    m = build(arch, 10, shape[0]).train()
    x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(m(x), y).backward()
    return fc.get_total_flops() / 32


def run(args) -> dict:
    t0 = time.time()
    load_before = load_reading()
    floors = measure_floors(args.arch, args.batch, args.device, args.repeats, args.calls)
    peak = peak_flops(args.device)
    fpi = train_flops_per_image(args.arch)
    van_img_s = args.batch / floors["primitives_s"]["vanilla_step"]
    load_after = load_reading()
    cores = os.cpu_count() or 1
    return {"arch": args.arch, "batch": args.batch, "device": args.device, "threads": torch.get_num_threads(),
            "channels_last": channels_last(),
            "floors": floors, "peak": peak, "train_flops_per_image": fpi,
            "vanilla_images_per_s": van_img_s,
            "vanilla_fraction_of_peak": van_img_s * fpi / max(peak["matmul_flops"], peak["conv_flops"]),
            "load_before": load_before, "load_after": load_after,
            "loaded": any(l and l[0] > cores for l in (load_before, load_after)),
            "machine": platform.processor() or platform.machine(),
            "provenance": provenance(args.device), "wall_time_s": time.time() - t0}


def render(rec: dict) -> str:
    f = rec["floors"]
    lines = [f"# Training-cost floors ({rec['arch']}, batch {rec['batch']}, {rec['device']}, "
             f"{rec['threads']} threads{', channels-last' if rec['channels_last'] else ''})", "",
             f"Load average before/after: {rec['load_before']} / {rec['load_after']}"
             + (" -- LOADED: more runnable threads than cores, numbers unreliable" if rec["loaded"] else ""), "",
             "| primitive | median ms | min-max ms |", "|---|---:|---:|"]
    for k, v in f["primitives_s"].items():
        lo, hi = f["spread_s"][k]
        lines.append(f"| {k} | {1e3 * v:.2f} | {1e3 * lo:.2f}-{1e3 * hi:.2f} |")
    lines += ["", "| defense | floor (Vanilla steps) | measured step (Vanilla steps) | step / floor |",
              "|---|---:|---:|---:|"]
    for d in ("ini", "edm"):
        lines.append(f"| {d} | {f[d]['floor_vanilla_steps']:.2f} | {f[d]['step_vanilla_steps']:.2f} "
                     f"| {f[d]['step_over_floor']:.2f} |")
    p = rec["peak"]
    lines += ["", f"Peak: matmul {p['matmul_flops'] / 1e9:.1f} GFLOP/s, conv {p['conv_flops'] / 1e9:.1f} GFLOP/s; "
              f"Vanilla training {rec['vanilla_images_per_s']:.0f} images/s x "
              f"{rec['train_flops_per_image'] / 1e6:.1f} MFLOP/image = "
              f"{100 * rec['vanilla_fraction_of_peak']:.1f}% of peak."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="smallcnn", choices=sorted(IN_SHAPES))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--calls", type=int, default=5, help="calls per primitive per round (default 5)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default torch's)")
    ap.add_argument("--out", help="write floor.json and floor.md here")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.batch < 1 or a.repeats < 1 or a.calls < 1:
        print("error: --batch, --repeats and --calls must be >= 1", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    rec = run(a)
    text = render(rec)
    print(text)
    if a.out:
        out = Path(a.out)
        tag = f"{a.arch}{'_cl' if rec['channels_last'] else ''}"
        write_json(out / f"floor_{tag}.json", rec)
        (out / f"floor_{tag}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
