"""How much of a defense the adaptive attacker's map undoes, measured where only the experimenter
can: against the victim's undefended outputs on the attacker's queries (a diagnostic, not a
result; the attack itself never sees them). Uses a run folder's trained victim and the attack's
own steps (KnockoffNets' draw of queries, shadow, factory, map), then prints one JSON line: top-1
agreement and KL of the served and of the mapped answers with the undefended ones.

    python tools/adaptive_diag.py --out results/cpu-new --defense mad [--profile cpu-extended]
        [--seed 0] [--set '{"map_frame": "classes"}']

Session 17 measured with it, on the MNIST MAD victim (seed 0): served 71.9 %, class-frame map
56.2 %, sorted-frame map 93.9 % (KL 0.463 -> 0.056).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder holding the trained victims (bench.run --out)")
    p.add_argument("--defense", required=True, help="a defense the adaptive attacker can rebuild, e.g. mad")
    p.add_argument("--profile", default="cpu-extended", help="profile whose victim and attack params to use")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack", default="adaptive", choices=("adaptive", "adaptive-filter"),
                   help="which adaptive attacker (adaptive-filter: also how its selection splits the answers)")
    p.add_argument("--set", default="{}", help="JSON object of adaptive attack params to override")
    p.add_argument("--data-root", default=None, help="data root (default $STEALBENCH_DATA)")
    a = p.parse_args(argv)
    try:
        a.set = json.loads(a.set)
        assert isinstance(a.set, dict)
    except (ValueError, AssertionError):
        p.exit(2, f"adaptive_diag: --set must be a JSON object, got {a.set!r}\n")
    return a


def agreement(a, b) -> float:
    return round(100 * float((a.argmax(1) == b.argmax(1)).float().mean()), 2)


def kl(p, q) -> float:
    return round(float((p * (p.clamp_min(1e-8).log() - q.clamp_min(1e-8).log())).sum(1).mean()), 3)


def main(argv=None) -> int:
    a = parse(argv)
    from attacks import get_attack
    from bench.cells import attack_context
    from bench.profiles import get_profile
    from bench.roles import load_roles
    from bench.train import seed_everything
    from bench.victims import build_victim
    prof = get_profile(a.profile)
    victim, _ = build_victim(prof, a.dataset, a.defense, a.seed, a.out, a.data_root, "cpu", progress=False)
    victim.eval()
    if not hasattr(victim, "base"):
        print(f"adaptive_diag: {a.defense!r} is not an output post-processor (no undefended base to compare)",
              file=sys.stderr)
        return 2
    roles = load_roles(prof, a.dataset, a.data_root)
    attack = get_attack(a.attack, **{**prof.attacks[a.attack], **a.set})
    actx = attack_context(prof, a.defense, attack, victim, roles, a.seed)
    seed_everything(a.seed)   # as run_cell does before attack.run: the shadow's random state is the cell's
    x, own = attack.draw(actx)   # the attack's own draw
    b = len(x)
    with torch.no_grad():
        served = torch.cat([victim(x[i:i + 1024]) for i in range(0, b, 1024)]).float()
        clean = torch.cat([victim.base(x[i:i + 1024]) for i in range(0, b, 1024)]).float()
    t0 = time.time()
    attack.log = {}
    mapped = attack._invert(actx, x, own, served)
    row = {"defense": a.defense, "attack": a.attack, "seed": a.seed, "set": a.set,
           "served_agree": agreement(served, clean), "mapped_agree": agreement(mapped, clean),
           "served_kl": kl(clean, served), "mapped_kl": kl(clean, mapped)}
    keep = attack.select(actx, served)
    if keep is not None:   # how well the kept and the left-out answers' mapped top-1 agree
        row.update(kept_agree=agreement(mapped[keep], clean[keep]), dropped_agree=agreement(mapped[~keep], clean[~keep]))
    print(json.dumps({**row, "invert_s": round(time.time() - t0), "log": attack.log}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
