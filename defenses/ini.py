"""InI: Isolation and Induction (Guo et al., ACM MM 2023), with its Table 5 ablations.

Every step takes an ID batch (x, y) and an OOD batch x_o and a surrogate clone C of the
victim's architecture that stays randomly initialized, in eval mode and is never updated.
Objectives (weights as in the official code, which produced the published numbers):

- ``ben``: CE(V(x), y), weight 1.
- ``iso``: cosine between grad_thetaC of the adversary's loss on x with V's outputs as
  targets and grad_thetaC CE(C(x), y), weight ``w_iso`` (code: delta = 1). Adversary loss:
  ``adv_loss="kl"``: KL(p_C || p_V) (code) or ``"softce"``: -sum p_V log p_C (paper, eq. 4).
- ``ind``: ``ind_loss="code"``: mean |C(x_o) - (log_softmax V(x_o) - its mean)| (an L1
  distance from the clone's logits to V's centred log-probabilities), or ``"paper"``: the
  information gain KL(p_C || p_V) on x_o (eq. 7); weight ``w_ind`` (code: gamma = 0.3).
- ``gradnorm``: the size of grad_thetaC L_ig, L_ig = KL(p_C || p_V) on x_o; code: mean
  absolute value, paper: L2 norm (eq. 8); weight ``w_gradnorm`` (code: epsilon = 1000).

The per-objective gradients w.r.t. V's parameters are combined with PCGrad (bench.pcgrad).

How the second-order terms are computed (exactly, without a create_graph backward through
the clone): C is fixed, so grad_thetaC of a loss on C's logits z_C is J_C^T a, where J_C is
C's Jacobian on the batch (independent of V) and a = d loss / d z_C is a small (B, K) tensor
that depends on V's logits. For L = f(J_C^T a), dL/da = J_C (grad f), one forward-mode
Jacobian-vector product of C (torch.func.jvp); from there back-propagation into V is an
ordinary backward pass from V's logits. This is the double backward of the paper, done with
one clone forward+VJP per batch and one JVP per second-order objective, and no backward
through a backward graph. tests/test_ini.py checks it against finite differences and against
``train_impl="reference"``, the official code's create_graph double backward.

Cost: PCGrad needs one backward pass through V per objective, so even with free second-order
terms a step costs 2 forwards + 4 backwards of V plus 2 clone forwards, about 4x a Vanilla
step; the clone's VJPs and JVPs come on top.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp, vjp

from bench.pcgrad import cosines, gram, pcgrad_weights, projected_gram
from bench.train import fit, to_loop_format
from defenses.base import Defense, register_defense

OBJECTIVES = ("ben", "iso", "ind", "gradnorm")


# ---------------------------------------------------------------- logit-level losses
def kl_c_v(zc: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
    """KL(p_C || p_V), batch mean (the official code's "kl")."""
    lc = F.log_softmax(zc, 1)
    return (lc.exp() * (lc - F.log_softmax(zv, 1))).sum(1).mean()


def soft_ce(zc: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of C's prediction to V's probabilities (the paper's eq. 4)."""
    return -(F.softmax(zv, 1) * F.log_softmax(zc, 1)).sum(1).mean()


ADV_LOSSES = {"kl": kl_c_v, "softce": soft_ce}


def centred_l1(zc: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
    """The code's induction loss: L1 from C's logits to V's mean-centred log-softmax."""
    lv = F.log_softmax(zv, 1)
    return (zc - (lv - lv.mean(1, keepdim=True))).abs().mean()


def clone_cotangent(loss_fn, zc: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
    """d loss(z_C, z_V) / d z_C as a (B, K) tensor that stays differentiable in z_V."""
    zc = zc.detach().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(loss_fn(zc, zv), zc, create_graph=True)[0]


def cosine_and_grad(g1: torch.Tensor, g2: torch.Tensor, eps: float = 1e-12):
    """cos(g1, g2) and its gradient w.r.t. g1."""
    n1, n2 = g1.norm().clamp_min(eps), g2.norm().clamp_min(eps)
    cos = (g1 @ g2) / (n1 * n2)
    return cos, g2 / (n1 * n2) - cos * g1 / (n1 * n1)


# ---------------------------------------------------------------- the fixed surrogate clone
class Surrogate:
    """A model used as a fixed function of its parameters: VJPs and JVPs w.r.t. them."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval().requires_grad_(False)
        self.params = {k: p.detach() for k, p in model.named_parameters()}
        self.shapes = [(k, p.shape, p.numel()) for k, p in self.params.items()]

    def _f(self, x):
        return lambda p: functional_call(self.model, p, (x,))

    def flat(self, d: dict) -> torch.Tensor:
        return torch.cat([d[k].reshape(-1) for k, _, _ in self.shapes])

    def unflat(self, v: torch.Tensor) -> dict:
        out, i = {}, 0
        for k, shape, n in self.shapes:
            out[k] = v[i:i + n].view(shape)
            i += n
        return out

    def vjp(self, x):
        """C(x) and a function mapping a logit cotangent (B, K) to a flat parameter gradient."""
        z, fn = vjp(self._f(x), self.params)
        return z, lambda a: self.flat(fn(a)[0])

    def jvp(self, x, v: torch.Tensor) -> torch.Tensor:
        """J_C(x) v for a flat parameter direction v: (B, K)."""
        return jvp(self._f(x), (self.params,), (self.unflat(v),))[1]


def isolation(sur: Surrogate, x, y, zc, clone_vjp, zv, adv_loss: str = "kl"):
    """L_iso = cos(grad_C adv(C(x), V(x)), grad_C CE(C(x), y)) and dL_iso/dz_V."""
    a = clone_cotangent(ADV_LOSSES[adv_loss], zc, zv)
    b = (F.softmax(zc, 1) - F.one_hot(y, zc.shape[1]).to(zc)) / len(y)  # d CE / d z_C
    g1, g2 = clone_vjp(a.detach()), clone_vjp(b)
    cos, dg1 = cosine_and_grad(g1, g2)
    da = sur.jvp(x, dg1)
    return cos, torch.autograd.grad(a, zv, da, retain_graph=True)[0]


def gradient_norm(sur: Surrogate, xo, zco, clone_vjp, zvo, form: str = "code"):
    """||grad_C KL(p_C || p_V)|| on x_o (code: mean |.|, paper: L2) and d/dz_V of it."""
    c = clone_cotangent(kl_c_v, zco, zvo)
    g = clone_vjp(c.detach())
    if form == "code":
        value, dg = g.abs().mean(), torch.sign(g) / g.numel()
    else:
        value = g.norm()
        dg = g / value.clamp_min(1e-12)
    dc = sur.jvp(xo, dg)
    return value, torch.autograd.grad(c, zvo, dc, retain_graph=True)[0]


# ---------------------------------------------------------------- the defense
@register_defense("ini")
class InI(Defense):
    label = "InI"
    objectives = OBJECTIVES
    defaults = {"adv_loss": "kl", "ind_loss": "code", "w_iso": 1.0, "w_ind": 0.3,
                "w_gradnorm": 1000.0, "lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3,
                "log_cosine_epochs": 0, "train_impl": "fast"}

    def _check_params(self):
        super()._check_params()
        p = self.params
        if p["adv_loss"] not in ADV_LOSSES:
            raise ValueError(f"{self.name}: adv_loss={p['adv_loss']!r}; accepted: {sorted(ADV_LOSSES)}")
        if p["ind_loss"] not in ("code", "paper"):
            raise ValueError(f"{self.name}: ind_loss={p['ind_loss']!r}; accepted: ['code', 'paper']")
        if p["train_impl"] not in ("fast", "reference"):
            raise ValueError(f"{self.name}: train_impl={p['train_impl']!r}; accepted: ['fast', 'reference']")
        if not isinstance(p["log_cosine_epochs"], int) or p["log_cosine_epochs"] < 0:
            raise ValueError(f"{self.name}: log_cosine_epochs must be an int >= 0")

    def _build(self, ctx):
        self.nets["model"] = ctx.new_model()
        self.aux = {}  # not a submodule: the surrogate is never saved or served

    def make_surrogate(self, ctx) -> Surrogate:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed * 1000 + 17)
            model = ctx.new_model()
        return Surrogate(to_loop_format(model))   # V's format: mixed-format VJP/JVPs cost 1.2x the step

    def fit(self, ctx):
        if ctx.ood_train is None:
            raise ValueError(f"{self.name} needs an OOD training set (ctx.ood_train)")
        v, p = self.nets["model"], self.params
        sur = self.aux["surrogate"] = self.make_surrogate(ctx)
        cfg = ctx.train.replace(lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        params = [q for q in v.parameters() if q.requires_grad]
        steps_per_epoch = -(-len(ctx.id_train) // cfg.batch_size)
        log_steps = p["log_cosine_epochs"] * steps_per_epoch
        names = list(self.objectives)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        cos_log = {f"{a}|{b}": {"before": [], "after": []} for a, b in pairs}
        sums, state = {n: 0.0 for n in names}, {"step": 0}
        epoch_losses = {n: [] for n in names}
        gen = ctx.generator(3)
        grads_fn = self.objective_grads if p["train_impl"] == "fast" else self.objective_grads_reference

        def step(x, y, xo):
            self.before_step(sur, v, x, xo, state["step"])
            values, grads = grads_fn(sur, v, params, x, y, xo)
            G = torch.stack(grads)
            gm = gram(G)
            W = pcgrad_weights(gm, gen)
            update = W.mean(0).to(G) @ G
            i = 0
            for q in params:
                q.grad = update[i:i + q.numel()].view_as(q).clone()
                i += q.numel()
            for n in names:
                sums[n] += values[n]
            state["step"] += 1
            if state["step"] <= log_steps:
                before, after = cosines(gm), cosines(projected_gram(gm, W))
                for a, b in pairs:
                    ia, ib = names.index(a), names.index(b)
                    cos_log[f"{a}|{b}"]["before"].append(round(before[ia, ib].item(), 6))
                    cos_log[f"{a}|{b}"]["after"].append(round(after[ia, ib].item(), 6))
            if state["step"] % steps_per_epoch == 0:
                for n in names:
                    epoch_losses[n].append(float(sums[n]) / steps_per_epoch)
                    sums[n] = 0.0
            return None

        fit(params, ctx, step, cfg, desc=self.name, modules=[v], with_ood=True,
            extra_state={"step": state, "sums": sums, "epoch_losses": epoch_losses, "cos_log": cos_log,
                         "pcgrad_order": gen, **self.step_state(sur)})
        v.eval()
        self.fit_log = {"objectives": names, "adv_loss": p["adv_loss"], "ind_loss": p["ind_loss"],
                        "weights": {n: w for n, w in [("ben", 1.0), ("iso", p["w_iso"]), ("ind", p["w_ind"]),
                                                      ("gradnorm", p["w_gradnorm"])] if n in names},
                        "combine": "pcgrad-mean", "train_impl": p["train_impl"],
                        "epoch_losses": epoch_losses}
        if log_steps:
            self.fit_log["pcgrad_cosines"] = cos_log
            self.fit_log["pcgrad_cosine_epochs"] = p["log_cosine_epochs"]

    def before_step(self, sur: Surrogate, v, x, xo, step: int) -> None:
        """Called before each of V's steps; InI's surrogate stays as initialized."""

    def ind_target(self, xo, zco) -> torch.Tensor:
        """The induction term's target on the OOD batch: the surrogate's logits (detached)."""
        return zco.detach()

    def step_state(self, sur: Surrogate) -> dict:
        """Set up what before_step changes and name it for fit's checkpoints (resumable
        training): nothing for InI, whose surrogate is rebuilt from the seed."""
        return {}

    def objective_grads(self, sur: Surrogate, v, params, x, y, xo):
        """Objective values (detached) and flat weighted gradients w.r.t. V's parameters, in
        self.objectives order."""
        p, need = self.params, set(self.objectives)
        zv = v(x)
        cot = {}   # objective -> (V output, weighted cotangent on it)
        values = {}
        if "ben" in need:
            loss = F.cross_entropy(zv, y)
            values["ben"] = loss.detach()
            cot["ben"] = (zv, torch.autograd.grad(loss, zv, retain_graph=True)[0])
        if "iso" in need:
            zc, cvjp = sur.vjp(x)
            val, dz = isolation(sur, x, y, zc, cvjp, zv, p["adv_loss"])
            values["iso"] = val.detach()
            cot["iso"] = (zv, p["w_iso"] * dz)
        # V sees the OOD batch in every variant, as in the official code: it feeds V's BN
        # running statistics even when no OOD objective is trained (the L_iso-only ablation)
        with torch.set_grad_enabled(bool(need & {"ind", "gradnorm"})):
            zvo = v(xo)
        if need & {"ind", "gradnorm"}:
            if "gradnorm" in need:
                zco, cvjp_o = sur.vjp(xo)
                val, dz = gradient_norm(sur, xo, zco, cvjp_o, zvo, p["ind_loss"])
                values["gradnorm"] = val.detach()
                cot["gradnorm"] = (zvo, p["w_gradnorm"] * dz)
            else:
                with torch.no_grad():
                    zco = sur.model(xo)
            if "ind" in need:
                loss = (centred_l1 if p["ind_loss"] == "code" else kl_c_v)(self.ind_target(xo, zco), zvo)
                values["ind"] = loss.detach()
                cot["ind"] = (zvo, p["w_ind"] * torch.autograd.grad(loss, zvo, retain_graph=True)[0])
        grads = []
        for i, name in enumerate(self.objectives):
            out, c = cot[name]
            last = all(cot[m][0] is not out for m in self.objectives[i + 1:])
            g = torch.autograd.grad(out, params, c, retain_graph=not last, allow_unused=True)
            grads.append(torch.cat([(gi if gi is not None else torch.zeros_like(q)).reshape(-1)
                                    for gi, q in zip(g, params)]))
        return values, grads

    def objective_grads_reference(self, sur: Surrogate, v, params, x, y, xo):
        """Same as objective_grads, the way the official code computes it: create_graph
        backward passes through the clone and one backward per weighted objective."""
        p = self.params
        cp = {k: t.detach().requires_grad_(True) for k, t in sur.params.items()}
        clone = lambda inp: functional_call(sur.model, cp, (inp,))
        flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
        zv, zc, zvo, zco = v(x), clone(x), v(xo), clone(xo)
        raw = {"ben": F.cross_entropy(zv, y)}
        g1 = flat(torch.autograd.grad(ADV_LOSSES[p["adv_loss"]](zc, zv), list(cp.values()), create_graph=True))
        g2 = flat(torch.autograd.grad(F.cross_entropy(zc, y), list(cp.values()), retain_graph=True)).detach()
        raw["iso"] = F.cosine_similarity(g1, g2, dim=0)
        raw["ind"] = (centred_l1 if p["ind_loss"] == "code" else kl_c_v)(self.ind_target(xo, zco), zvo)
        g3 = flat(torch.autograd.grad(kl_c_v(zco, zvo), list(cp.values()), create_graph=True))
        raw["gradnorm"] = g3.abs().mean() if p["ind_loss"] == "code" else g3.norm()
        weight = {"ben": 1.0, "iso": p["w_iso"], "ind": p["w_ind"], "gradnorm": p["w_gradnorm"]}
        loss = {n: weight[n] * raw[n] for n in self.objectives}
        values = {n: raw[n].detach() for n in self.objectives}
        grads = [flat(torch.autograd.grad(loss[n], params, retain_graph=True)) for n in self.objectives]
        return values, grads

    def _proba(self, x):
        return torch.softmax(self.nets["model"](x), dim=1)


@register_defense("ini-iso")
class InIIsolationOnly(InI):
    label = "L_iso"
    objectives = ("ben", "iso")


@register_defense("ini-ind")
class InIInductionOnly(InI):
    label = "L_ind"
    objectives = ("ben", "ind", "gradnorm")


@register_defense("ini-nogradnorm")
class InINoGradNorm(InI):
    label = "w/o grad L_ig"
    objectives = ("ben", "iso", "ind")


@register_defense("ini-adv")
class InIAdversarialSurrogate(InI):
    """Table C.1: InI whose surrogate adversary is trained against V, alternating with V's steps.

    Every ``adv_every`` steps of V, the surrogate C takes one SGD step (lr ``adv_lr``) on the
    adversary's training loss (``adv_train_loss``: C learns V's served answers) on the ID and
    OOD batches, V's outputs taken in eval mode, as the deployed model answers them. The
    isolation and gradient-norm terms use this C; the induction term's target stays the fixed,
    untrained C (``ind_target``). Two choices made after the first version broke training on
    MNIST (seed 0, cpu-extended, at 1b69dfc: both victims answered one class to every test
    image, benign accuracy 13.4 % and 9.7 %):
    - C trains on soft cross-entropy, the attacker's own loss (KnockoffNets'), whose gradient on
      C's logits is bounded (p_C - p_V); KL(p_C || p_V) (the isolation term's ``adv_loss``,
      ``adv_train_loss="kl"``) scales C's steps with -log p_V, about 100 off a confident V's
      top-1, and C's logits blew up;
    - with the adversarial C as the induction target, V's OOD logits chased C's while C learned
      V's answers: in a one-epoch check (12,800 MNIST images, ini-adv-strong) training went NaN
      even with soft cross-entropy; with the fixed target it reached 78.6 % (InI: 86.5 %).
    C's BatchNorm is in train mode for its own step (``adv_bn="train"``: batch statistics, and
    its running statistics follow them, as an attacker trains its clone) and in eval mode when
    the InI terms use it; ``"eval"`` keeps the fixed surrogate's fresh statistics throughout,
    which leaves C unnormalized: at lr 0.1 every step (ini-adv-strong) training went NaN in the
    first MNIST epoch even with the two fixes above, while ini-adv (lr 0.01) trained.
    The paper does not publish its two settings ("Adv Training 1/2"); ``ini-adv`` is a weak
    adversary (lr 0.01, every 10 steps) and ``ini-adv-strong`` a strong one (lr 0.1, every step).
    """
    label = "InI, adversarial C"
    defaults = {**InI.defaults, "adv_lr": 0.01, "adv_every": 10, "adv_train_loss": "softce", "adv_bn": "train"}

    def _check_params(self):
        super()._check_params()
        p = self.params
        if not isinstance(p["adv_every"], int) or p["adv_every"] < 1:
            raise ValueError(f"{self.name}: adv_every must be an int >= 1, got {p['adv_every']!r}")
        if not p["adv_lr"] > 0:
            raise ValueError(f"{self.name}: adv_lr must be > 0, got {p['adv_lr']!r}")
        if p["adv_bn"] not in ("train", "eval"):
            raise ValueError(f"{self.name}: adv_bn={p['adv_bn']!r}; accepted: ['eval', 'train']")
        if p["adv_train_loss"] not in ADV_LOSSES:
            raise ValueError(f"{self.name}: adv_train_loss={p['adv_train_loss']!r}; accepted: {sorted(ADV_LOSSES)}")

    def before_step(self, sur, v, x, xo, step):
        if step % self.params["adv_every"]:
            return
        c = sur.model
        xs = torch.cat([x, xo])
        v.eval()
        with torch.no_grad():
            zv = v(xs)
        v.train()
        c.requires_grad_(True).train(self.params["adv_bn"] == "train")
        opt = self.aux["adv_opt"]
        opt.zero_grad(set_to_none=True)
        ADV_LOSSES[self.params["adv_train_loss"]](c(xs), zv).backward()
        opt.step()   # in place: the surrogate's detached parameter views see the update
        c.requires_grad_(False).eval()

    def ind_target(self, xo, zco) -> torch.Tensor:
        """The fixed surrogate's logits: induction keeps pulling V's OOD answers towards an
        untrained network's, not towards the adversarial C, which learns V's answers (with C as
        the target, V's OOD logits and C's chased each other: the ``kl`` victims collapsed, and
        with soft cross-entropy the 1-epoch check went NaN; generated-data test below)."""
        with torch.no_grad():
            return self.aux["fixed"](xo)

    def step_state(self, sur):
        """C and its optimizer, made once per fit (so a second fit never steps an old C); the
        fixed copy is taken here, before fit restores a checkpoint's C, so it is C's init."""
        self.aux["fixed"] = copy.deepcopy(sur.model).requires_grad_(False)
        self.aux["adv_opt"] = torch.optim.SGD(sur.model.parameters(), lr=self.params["adv_lr"], momentum=0.9)
        return {"surrogate": sur.model, "adv_opt": self.aux["adv_opt"]}


@register_defense("ini-adv-strong")
class InIAdversarialSurrogateStrong(InIAdversarialSurrogate):
    label = "InI, adversarial C (strong)"
    defaults = {**InIAdversarialSurrogate.defaults, "adv_lr": 0.1, "adv_every": 1}
