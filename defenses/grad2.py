"""GRAD^2: gradient redirection (Mazeika, Li & Forsyth, "How to Steer Your Adversary: Targeted
and Efficient Model Stealing Defenses with Gradient Redirection", ICML 2022).

An attacker distilling the served answer y' with cross-entropy moves its parameters, per query,
along  G^T y' = sum_k y'_k grad_theta log f_k(x)  (G: the Jacobian of the log-probabilities
w.r.t. the parameters; this is minus the cross-entropy gradient, i.e. the SGD step direction).
GRAD^2 serves the answer within eps (L1) of the true y that steers that step toward a target a:

    max_{y'}  <G^T y', a>   s.t.  y' in the simplex,  ||y' - y||_1 <= eps.

The objective is linear in y': <G^T y', a> = sum_k y'_k c_k with c_k = <grad log f_k(x), a>,
so the problem is a linear program over the simplex cut by an L1 ball, and its optimum is
greedy (the paper's provably optimal algorithm): move d = min(eps/2, 1 - y_top) of probability
mass to the class top = argmax_k c_k, taking it from the classes with the smallest c first,
each down to 0. Only the order of c matters, so a's scale is irrelevant.

Equation numbers are not cited: the paper's text was not reachable from here. The formulas
follow the reference code (github mmazeika/model-stealing-defenses, batch_training/defenses.py:
``get_Gty``, ``method_gradient_redirection``), which minimizes <G^T y', o> with o = -a; its
sort-and-take loop is the greedy step above, done here for the whole batch with tensor ops.

c for every query and class comes from one forward-mode pass: c = d/dt log f(x; theta + t a)
at t = 0 (a Jacobian-vector product through the surrogate), instead of the reference's double
backward; the two are the same derivative.

``target`` (a, the direction the attacker's steps are pushed toward):
- ``"all-ones"`` (default): a = 1 on every parameter, shared by all queries. The reference's
  ``ALL-ONES`` runs, which its makebatches.sh calls "the main GRAD^2 setting": one fixed
  direction for every query, so the perturbations of different queries push the same way.
  (The last layer's share of c cancels for this target: its log-softmax gradients sum to 0 over
  the parameters, so the steering acts through the layers below it.)
- ``"min-ip"``: the untargeted variant, a = -G^T y for the query's own answer (push each step
  away from the step the true answer would cause). The reference uses the batch-mean gradient
  as the target; here each query uses its own, so an answer never depends on its batch.
- ``"watermark"``: a = grad log f_t(x_w) for one ID training image x_w (the reference: a test
  image) and a random label t, both seeded by ctx.seed, as the reference's ``WATERMARK`` runs:
  the attacker is steered toward fitting (x_w, t).

``surrogate_epochs``: the paper's surrogate is a clone distilled from the victim on the
transfer (query) set and stopped early (10 of 50 epochs in the main setting, ``ALL-ONES_10``).
0 (default) serves a randomly initialized surrogate, seeded from ctx.seed as MAD's (the
reference's ``ALL-ONES_0`` ablation; no training cost). N > 0 distills the surrogate for N
epochs on the defender's OOD set (ctx.ood_train) from the base's soft answers, with the
harness's optimizer recipe (the reference: SGD + cosine schedule over 50 epochs).
The surrogate always serves in eval mode (the reference's ``surrogate.eval()``).

The paper has no argmax-preserving variant (its "argmax" is an attacker countermeasure).
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad, jvp, vmap

from bench.train import fit, to_loop_format, to_serving_format
from defenses.base import PostProcessor, register_defense

SURROGATE_SEED_OFFSET = 523   # the surrogate's init seed is ctx.seed * 1000 + this (MAD uses 517)
WATERMARK_OFFSET = 524        # ctx.generator offset that picks the watermark image and label
MIN_IP_CHUNK = 64             # queries per vmap call for "min-ip" (per-query gradients in memory)


# ---------------------------------------------------------------- class scores c (B, K)
def _state(net):
    params = {n: p.detach() for n, p in net.named_parameters()}
    return params, dict(net.named_buffers())


def _log_probs(net, params, buffers, x):
    return torch.log_softmax(functional_call(net, (params, buffers), (x,)), dim=1)


def scores_along(net, x: torch.Tensor, direction: dict) -> torch.Tensor:
    """c[i, k] = <grad_theta log f_k(x_i), a> for one parameter direction a (name -> tensor):
    a single Jacobian-vector product over the batch."""
    params, buffers = _state(net)
    _, c = jvp(lambda p: _log_probs(net, p, buffers, x), (params,), (direction,))
    return c


def all_ones_direction(net) -> dict:
    return {n: torch.ones_like(p) for n, p in net.named_parameters()}


def watermark_direction(net, xw: torch.Tensor, label: int) -> dict:
    """a = grad_theta log f_label(xw): the step that fits the watermark pair (G_w^T y_w, y_w one-hot)."""
    params, buffers = _state(net)
    return grad(lambda p: _log_probs(net, p, buffers, xw.unsqueeze(0))[0, label])(params)


def scores_min_ip(net, x: torch.Tensor, y: torch.Tensor, chunk: int = MIN_IP_CHUNK) -> torch.Tensor:
    """c[i, k] = <grad log f_k(x_i), -G_i^T y_i>: each query's own gradient is the target to
    turn away from (per-query gradient by vmap(grad), then a per-query JVP)."""
    params, buffers = _state(net)

    def one(xi, yi):
        def logp(p):
            return _log_probs(net, p, buffers, xi.unsqueeze(0))[0]
        g = grad(lambda p: (yi * logp(p)).sum())(params)
        return -jvp(logp, (params,), (g,))[1]

    return torch.cat([vmap(one)(x[i:i + chunk], y[i:i + chunk]) for i in range(0, len(x), chunk)])


# ---------------------------------------------------------------- the optimal perturbation
def redirect(y: torch.Tensor, c: torch.Tensor, eps: float) -> torch.Tensor:
    """argmax_{y'} <c, y'> over the simplex with ||y' - y||_1 <= eps, per row (greedy, optimal).

    Gives d = min(eps/2, 1 - y_top) to top = argmax c (first on ties) and takes d from the
    other classes in increasing order of c (index order on ties), each down to 0."""
    if eps <= 0:
        return y.clone()
    rows = torch.arange(len(y), device=y.device)
    top = c.argmax(1)
    give = (1 - y[rows, top]).clamp_min(0).clamp_max(eps / 2)
    key = c.clone()
    key[rows, top] = float("inf")                   # the receiving class gives nothing
    order = key.argsort(dim=1, stable=True)            # smallest c first
    ys = y.gather(1, order)
    before = ys.cumsum(1) - ys                       # mass available in the classes taken earlier
    take = (give.unsqueeze(1) - before).clamp_min(0).minimum(ys)
    out = y.scatter_add(1, order, -take)
    out[rows, top] += take.sum(1)                    # what was taken, so rows keep their sum
    return out.clamp_min(0)


# ---------------------------------------------------------------- the defense
@register_defense("grad2")
class GRAD2(PostProcessor):
    label = "GRAD2"
    TARGETS = ("all-ones", "min-ip", "watermark")
    knobs = {"eps": (0.0, 2.0)}
    defaults = {"eps": 0.5, "target": "all-ones", "surrogate_epochs": 0}
    tune_knob = "eps"
    tune_grid = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)   # MAD's: same L1 budget scale
    tune_strongest = "high"

    def _check_params(self):
        super()._check_params()
        if self.params["target"] not in self.TARGETS:
            raise ValueError(f"{self.name}: target={self.params['target']!r}; accepted: {list(self.TARGETS)}")
        e = self.params["surrogate_epochs"]
        if isinstance(e, bool) or not isinstance(e, int) or e < 0:
            raise ValueError(f"{self.name}: surrogate_epochs={e!r}; accepted: an integer >= 0 "
                             "(0: random surrogate, N: distilled from the base for N epochs)")

    def train_params(self):
        # the target is a serving choice: every target shares one trained surrogate
        p = {k: v for k, v in super().train_params().items() if k != "target"}
        if p["surrogate_epochs"] > 0:  # distilled from the base's answers: the base is part of the unit
            p = {**p, "base": self.base.name, "base_params": self.base.train_params()}
        return p

    def _build(self, ctx):
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the global RNG
            torch.manual_seed(ctx.seed * 1000 + SURROGATE_SEED_OFFSET)
            self.nets["surrogate"] = ctx.new_model()
        self.nets["surrogate"].eval()
        if self.params["target"] != "watermark":   # only the watermark needs an ID image (bench.estimate
            return                                  # builds defenses from shapes only, with none)
        if ctx.id_train is None:
            raise ValueError(f"{self.name}: target='watermark' picks an ID training image, but the context has none")
        gen = ctx.generator(WATERMARK_OFFSET)
        i = int(torch.randint(len(ctx.id_train.x), (1,), generator=gen))
        self.watermark_label = int(torch.randint(ctx.num_classes, (1,), generator=gen))
        self.register_buffer("watermark_x", ctx.id_train.x[i].clone().to(ctx.device), persistent=False)

    def fit(self, ctx):
        epochs = self.params["surrogate_epochs"]
        if epochs == 0:
            return
        if ctx.ood_train is None:
            raise ValueError(f"{self.name}: surrogate_epochs > 0 distills on the OOD set, but ctx.ood_train is None")
        sur = self.nets["surrogate"]
        # the base in the loop's memory format while it makes the targets (fit converts only the
        # modules it trains), served again in NCHW afterwards like every trained or loaded victim
        to_loop_format(self.base).eval()

        def step(x, _y, _xo):
            with torch.no_grad():
                target = self.base._proba(x)
            return {"distill": -(target * torch.log_softmax(sur(x), 1)).sum(1).mean()}

        curves = fit(sur.parameters(), ctx, step, ctx.train.replace(epochs=epochs), desc="grad2-surrogate",
                     modules=[sur], data=ctx.ood_train)
        to_serving_format([self.base])
        sur.eval()
        self.fit_log = {"surrogate_epochs": epochs, "epoch_losses": curves}

    def train(self, mode: bool = True):
        super().train(mode)
        if "surrogate" in self.nets:
            self.nets["surrogate"].eval()  # served in eval mode (BN running statistics)
        return self

    def class_scores(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """c (B, K): how much a unit of mass on class k moves the attacker's step along the target."""
        sur, target = self.nets["surrogate"], self.params["target"]
        if target == "min-ip":
            return scores_min_ip(sur, x, probs.to(x.dtype))
        if target == "watermark":
            return scores_along(sur, x, watermark_direction(sur, self.watermark_x, self.watermark_label))
        return scores_along(sur, x, all_ones_direction(sur))

    def perturb(self, x, probs):
        eps = float(self.params["eps"])
        if eps <= 0:
            return probs
        return redirect(probs, self.class_scores(x, probs).to(probs.dtype), eps)
