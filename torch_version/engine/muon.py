"""Muon for the weight matrices, AdamW for the rest: the optimizer of the names config.

What it teaches: AdamW scales the step of every single weight by that weight's own gradient
history. Muon looks at a weight matrix as one object. It keeps a momentum of the matrix's
gradient and replaces it by the nearest matrix whose singular values are all about 1 (an
"orthogonalized" update, U V^T where the momentum is U S V^T), so that every direction the
matrix can move in moves by the same amount, including the directions a few large gradient
entries would otherwise drown. Five Newton-Schulz iterations (matrix products only) do this
without an SVD. Muon is meant for the hidden matrices of the transformer blocks; the
embeddings, the output head and the norms' gains keep AdamW, in the same optimizer.

    from torch_version.engine.muon import MuonAdamW
    optimizer = MuonAdamW([dict(params=block_matrices, muon=True, weight_decay=0.1),
                           dict(params=embeddings_and_head, muon=False, weight_decay=0.1),
                           dict(params=gains, muon=False, weight_decay=0.0)], lr=1.5e-2)

One learning rate serves both rules: each Muon update is rescaled to the size of a typical
AdamW update (0.2 * sqrt(larger side of the matrix), the rule of Moonshot's "Muon is scalable
for LLM training"), so AdamW's learning rate and weight decay carry over. On names it lowers
the denoiser's held-out NELBO from 2.110 to 2.070 nats/char after the same 3,500 steps, for
about 7% more time per step on a CPU (bench/names.py with and without --optimizer adamw; see
docs/results.md). tests/test_torch_train.py checks both rules against torch.optim.Muon and
torch.optim.AdamW.

Changes from pure: pure trains with Adam written out by hand in NumPy; here both rules are
written out in torch, and the transformer's matrices get the matrix-wise one.
"""
import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz: s -> a s + b s^3 + c s^5, steep at 0
NS_STEPS = 5           # iterations: enough to push every singular value into about [0.7, 1.2]
MOMENTUM = 0.95        # Muon's momentum (an average over about 20 steps), with a Nesterov look-ahead


def orthogonalize(G, steps=NS_STEPS):
    """G (m, n) -> about U V^T where G = U S V^T: the same singular vectors, singular values near 1.
    Dividing by the Frobenius norm puts every singular value in [0, 1]; each iteration maps every
    singular value s to a s + b s^3 + c s^5 (the products below act on S alone), a polynomial that
    lifts small values fast and settles all of them near 1 (not exactly 1: as good for training)."""
    a, b, c = NS_COEFFICIENTS
    X = G / G.norm().clamp(min=1e-7)
    wide = X.shape[0] <= X.shape[1]
    X = X if wide else X.T  # iterate on the smaller Gram matrix X X^T
    for _ in range(steps):
        A = X @ X.T  # (m, m): U S^2 U^T
        X = a * X + (b * A + c * A @ A) @ X
    return X if wide else X.T


class MuonAdamW(torch.optim.Optimizer):
    """Each param group says which rule it follows: muon=True (2-D matrices) or muon=False (AdamW).
    Both apply decoupled weight decay: w <- w * (1 - lr * weight_decay), then the step."""

    def __init__(self, param_groups, lr, weight_decay=0.0, momentum=MOMENTUM, betas=(0.9, 0.99), eps=1e-8):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, betas=betas, eps=eps, muon=False)
        super().__init__(param_groups, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon updates 2-D weight matrices only; give other parameters muon=False")

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                p.mul_(1 - lr * decay)
                if group["muon"]:
                    if not state:
                        state["momentum"] = torch.zeros_like(p)
                    m = state["momentum"].lerp_(g, 1 - group["momentum"])  # moving average of gradients
                    update = orthogonalize(g.lerp(m, group["momentum"]))  # Nesterov: a step further along m
                    p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))  # RMS of an AdamW step
                else:
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    beta1, beta2 = group["betas"]
                    state["step"] += 1
                    state["exp_avg"].lerp_(g, 1 - beta1)  # first moment: averaged gradient
                    state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)  # second: its scale
                    bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]  # zero start
                    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias2)).add_(group["eps"])
                    p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)
