"""Uniform-noise discrete diffusion: the masked loop of diffusion.py, with random letters for noise.

What it teaches: MASK is not the only way to destroy text. Here each position is resampled,
with probability 1 - alpha(t), to a token drawn uniformly from the K real tokens (for names:
PAD and the 26 letters; MASK is never used, and the ids are diffusion.build_vocab's, so
n_tokens = K is numerically diffusion's mask_id). At t = 1 every sequence is uniform noise,
whatever x0 was: that is the prior. A corrupted letter looks like any other letter, so the
denoiser predicts x0 at every position, and it must be told t (xt does not show its noise level).

    from torch_version.processes import uniform
    t = uniform.sample_times(len(x0), g)                         # (B,) float64, host
    xt = uniform.corrupt(x0, t, n_tokens, g)                     # (B, L): letters, never MASK
    loss = uniform.nelbo_loss(denoise(xt, t.float()), x0, xt, t)
    nelbo = uniform.estimate_nelbo(x0, denoise, n_tokens, g)     # (N,) nats per sequence

The bound. Per position the forward process is a Markov chain in continuous time that jumps at
rate beta(t) = -alpha'(t) / alpha(t) to a uniform token (perhaps itself), so
q_t(y | v) = alpha [y = v] + c with c = (1 - alpha) / K. Its time reversal jumps from the current
token x to y != x at rate (beta / K) * r_y, r_y = q_t(y | x0) / q_t(x | x0) given x0. The model
averages the same ratio over its x0 distribution p (B, L, K):
    r_hat_y = sum_v p_v q_t(y | v) / q_t(x | v) = 1 - p_x alpha / (alpha + c) + p_y alpha / c,
which is the exact reverse rate when p is the true posterior q(x0_l | xt): the forward process
factorises, so only that marginal matters. The KL between the forward path given x0 and the
model's reverse path, run from the uniform prior, is
    NELBO(x0) = KL(q_1(. | x0) || uniform)                                      = 0 (q_1 is uniform)
              + int_EPS^1 E_xt [ sum_l (beta / K) sum_{y != x_l} r_y phi(r_hat_y / r_y) ] dt
              + E_{x_EPS} [ -sum_l log p(x0_l | x_EPS, EPS) ]           (reconstruction at t = EPS)
with phi(z) = z - 1 - log z >= 0, zero only where the rates agree (a Bregman divergence: the
continuous-time limit of D3PM's KL terms, and SEDD's score entropy). The integrand stays finite
at t = 1 (phi ~ alpha^2 beats beta ~ 1 / alpha), but for a model that leaves mass p_y on other
tokens where xt looks clean it grows like p_y K / t as t -> 0: hence the clip at EPS and the
reconstruction term that closes the bound there. With the exact denoiser the bound is
    -log q(x0) + E_{x_EPS} [ log q(x0 | x_EPS) - sum_l log q(x0_l | x_EPS) ],
the second part O(EPS): the reconstruction reads positions independently (tests check both).

Changes from diffusion.py (the masked loop):
- corrupt writes a uniformly drawn real token where diffusion.py writes MASK;
- the denoiser takes (xt, t) and every position counts, clean-looking or not;
- weight(t) is the resampling rate -alpha'/alpha, not -alpha'/(1 - alpha);
- the loss compares reverse rates (above), not a cross-entropy at the masked positions;
- estimate_nelbo integrates over t on stratified times (no count-the-masks discrete form)
  and adds the reconstruction term;
- sample_ancestral lives here (not in sample.py): it starts from uniform noise, and every
  step may change every position.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from torch_version.diffusion import (EPS, SCHEDULE, alpha, build_vocab, decode, encode,  # noqa: F401
                                     per_char, sample_times)  # the masked loop's vocabulary, schedule and times

STEPS = 64  # estimate_nelbo: stratified times per sequence and draw

# ---------------------------------------------------------------- data and tokens
# build_vocab, encode, decode: diffusion.py's, imported above. MASK keeps its id (the last) but is never drawn.


# ---------------------------------------------------------------- forward process
# alpha(t), the chance that a position was never resampled, and sample_times: diffusion.py's.
def weight(t, schedule=SCHEDULE):
    """Resampling rate beta(t) = -alpha'(t) / alpha(t): infinite at t = 1, where alpha = 0."""  # changed
    if schedule == "linear":
        return 1 / (1 - t)
    return (math.pi / 2) * torch.tan(math.pi * t / 2)


def corrupt(x0, t, n_tokens, generator, schedule=SCHEDULE):
    """Resample each position independently with probability 1 - alpha(t), to a token uniform over
    the n_tokens real ones (it may draw its own token back). (B, L) -> (B, L), and the resampled set."""
    u = torch.rand(x0.shape, generator=generator, dtype=torch.float64)  # host
    resampled = (u < (1 - alpha(t.cpu(), schedule))[:, None]).to(x0.device)
    noise = torch.randint(n_tokens, x0.shape, generator=generator).to(x0.device)  # changed: a real token, not MASK
    return torch.where(resampled, noise, x0), resampled


def stratified_times(n, steps, generator, eps=EPS):
    """`steps` times per row, one uniform in each of `steps` equal slices of (eps, 1). (n, steps)
    float64, host. Unbiased for an integral over t, with less variance than independent times."""
    u = torch.rand((n, steps), generator=generator, dtype=torch.float64)
    return eps + (1 - eps) * (torch.arange(steps, dtype=torch.float64) + u) / steps


# ---------------------------------------------------------------- the loss: the NELBO
def token_nll(logits, targets):
    """-log p(target) at every position: logits (B, L, K), targets (B, L) -> (B, L)."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def nelbo_integrand(logits, x0, xt, t, schedule=SCHEDULE):
    """The diffusion term's integrand at each position: (beta / K) sum_{y != x} r_y phi(r_hat_y / r_y).
    logits (B, L, K) for x0 given (xt, t); t (B,) float64 on the host. -> (B, L), >= 0.
    Float32 throughout, so three cases: d = r_hat / r - 1 is built from p - onehot(x0), never as a
    ratio minus 1; for small d (near t = 1, d ~ alpha), phi = d - log1p(d) ~ d^2 / 2 would cancel,
    so its series is used; near t = EPS, r_hat / r can be ~1e-9 (d rounds to -1), so phi takes
    log r_hat - log r, both ratios being sums of positive parts."""
    K = logits.shape[-1]
    t = t.cpu().double()  # the schedule in float64 on the host, then float32 on the device
    a, c, beta = (v.float().to(logits.device)[:, None, None]
                  for v in (alpha(t, schedule), (1 - alpha(t, schedule)) / K, weight(t, schedule)))
    p, o = logits.float().softmax(-1), F.one_hot(x0, K).float()  # model and true x0 distributions (B, L, K)
    p_x, o_x = p.gather(-1, xt[..., None]), o.gather(-1, xt[..., None])  # at the current token x (B, L, 1)
    r_hat = (1 - p_x) + p_x * c / (a + c) + p * a / c            # model ratios r_hat_y (B, L, K)
    r = (1 - o_x) + o_x * c / (a + c) + o * a / c                # true ratios r_y
    d = a * ((p - o) / c - (p_x - o_x) / (a + c)) / r           # r_hat_y / r_y - 1
    series = d * d * (0.5 - d / 3 + d * d / 4)                  # phi for small d, where d - log1p(d) cancels
    log_ratio = torch.where(d.abs() < 0.5, torch.log1p(d.clamp(min=-0.5)), r_hat.log() - r.log())
    phi = torch.where(d.abs() < 1e-2, series, (d - log_ratio).clamp(min=0))  # clamp: rounding only
    others = F.one_hot(xt, K) == 0                              # y != x: a jump to itself is no jump
    return (beta / K * torch.where(others, r * phi, 0)).sum(-1)


def nelbo_loss(logits, x0, xt, t, schedule=SCHEDULE):
    """Per-token NELBO of a batch, its diffusion term: (1 - EPS) * sum over ALL positions of the
    integrand / (B * L), for t from sample_times (uniform on (EPS, 1]). The reconstruction term
    (estimate_nelbo adds it) is O(EPS) for a good denoiser and is left out of training."""
    return (1 - EPS) * nelbo_integrand(logits, x0, xt, t, schedule).sum() / x0.numel()  # changed: every position


# ---------------------------------------------------------------- evaluation: the held-out NELBO
@torch.no_grad()
def estimate_nelbo(x0, denoise, n_tokens, generator, steps=STEPS, draws=1, schedule=SCHEDULE, eps=EPS,
                   batch_size=4096):
    """NELBO of each sequence of x0 (N, L), in nats, float64 (N,) on the host: the diffusion term on
    `steps` stratified times per sequence (one xt each), plus the reconstruction term at t = eps
    (one x_eps per sequence), averaged over `draws`. Unbiased; no time-grid discretisation error."""
    N, L = x0.shape
    total = torch.zeros(N, dtype=torch.float64)  # host: float64 sums, whatever the device
    for _ in range(draws):
        t = torch.cat([stratified_times(N, steps, generator, eps).reshape(-1),
                       torch.full((N,), eps, dtype=torch.float64)])
        rows = torch.cat([torch.arange(N).repeat_interleave(steps), torch.arange(N)])
        is_reconstruction = torch.arange(len(rows)) >= N * steps  # the last N rows sit at t = eps
        for start in range(0, len(rows), batch_size):
            r, tt = rows[start:start + batch_size], t[start:start + batch_size]
            clean = x0[r.to(x0.device)]
            xt, _ = corrupt(clean, tt, n_tokens, generator, schedule)
            logits = denoise(xt, tt.float().to(x0.device)).float()  # (b, L, K), on the device
            diffusion = nelbo_integrand(logits, clean, xt, tt, schedule).cpu().double().sum(1) * (1 - eps) / steps
            reconstruction = token_nll(logits, clean).cpu().double().sum(1)
            total.index_add_(0, r, torch.where(is_reconstruction[start:start + batch_size], reconstruction, diffusion))
    return total / draws


# ---------------------------------------------------------------- sampling
def draw_from(p, generator):
    """One token per position from probabilities p (..., K) float64, by inverse CDF on float64
    uniforms (SPEC 6), as sample.draw_from; kept here so that sample.py may import this file."""
    u = torch.rand(p.shape[:-1] + (1,), generator=generator, dtype=torch.float64)
    cdf = p.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[..., -1:], right=True)[..., 0].clamp(max=p.shape[-1] - 1)


def reverse_step(p, xt, t, s, schedule=SCHEDULE):
    """q(x_s = y | xt, x0 ~ p) for every y: the true posterior, averaged over the denoiser's x0
    distribution p (n, L, K) float64; xt (n, L), s < t. -> (n, L, K) float64, rows sum to 1.
    q(x_s = y | xt, v) = q(xt | y) q_s(y | v) / q_t(xt | v), with q(xt | y) the step t|s, alpha_t / alpha_s."""
    K = p.shape[-1]
    a_t, a_s = (float(alpha(torch.tensor(v, dtype=torch.float64), schedule)) for v in (t, s))
    is_xt = F.one_hot(xt, K).double()  # (n, L, K)
    w = p / (a_t * is_xt + (1 - a_t) / K)  # p_v / q_t(xt | v)
    forward_step = (a_t / a_s) * is_xt + (1 - a_t / a_s) / K  # q(xt | x_s = y)
    return forward_step * (a_s * w + (1 - a_s) / K * w.sum(-1, keepdim=True))


@torch.no_grad()
def sample_ancestral(denoise, n, L, n_tokens, generator, steps, temperature=1.0, schedule=SCHEDULE, device="cpu"):
    """Reverse process from uniform noise on a uniform time grid 1 -> 0. Each step calls the
    denoiser once and redraws every position from reverse_step; at s = 0 that is p itself.
    Positions are drawn independently given xt: exact for the exact denoiser as steps grow.
    -> samples (n, L) and the trajectory [x_1, ..., x_0] (host)."""
    if steps < 1:
        raise ValueError(f"the ancestral sampler needs at least 1 step, not {steps}.")
    xt = torch.randint(n_tokens, (n, L), generator=generator)  # the prior, on the host
    trajectory = [xt]
    times = np.linspace(1, 0, steps + 1).tolist()
    for t, s in zip(times[:-1], times[1:]):
        logits = denoise(xt.to(device), torch.full((n,), t, device=device))
        p = torch.softmax(logits.cpu().double() / temperature, dim=-1)  # (n, L, K), host float64
        xt = draw_from(reverse_step(p, xt, t, s, schedule), generator)
        trajectory.append(xt)
    return xt.to(device), trajectory
