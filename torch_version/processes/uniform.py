"""Uniform-noise discrete diffusion: the loop of diffusion.py, with random letters for noise.

What it teaches: MASK is not the only way to destroy text. Here each position is resampled,
with probability 1 - alpha(t), to a token drawn uniformly from the K real tokens (for names:
PAD and the 26 letters; MASK is never used, and the ids are build_vocab's, so n_tokens = K is
numerically diffusion.py's mask_id). At t = 1 every sequence is uniform noise, whatever x0 was:
that is the prior. A corrupted letter looks like any other letter, so the denoiser predicts x0
at every position, and it must be told t (xt does not show its noise level).

    from torch_version.processes import uniform
    t = uniform.sample_times(len(x0), g)                         # (B,) float64, host
    xt, _ = uniform.corrupt(x0, t, n_tokens, g)                  # (B, L): letters, never MASK
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

It has diffusion.py's interface (OPTIONS, model_args, corrupt_batch, batch_loss, estimate_nelbo,
sample_ancestral), so train.py runs it with --noise uniform. Functions it shares with
diffusion.py are copies, kept identical by tests/test_processes.py; `# changed` marks the rest.

Changes from diffusion.py (the masked loop):
- corrupt writes a uniformly drawn real token where diffusion.py writes MASK;
- the denoiser takes (xt, t) and every position counts, clean-looking or not;
- weight(t) is the resampling rate -alpha'/alpha, not -alpha'/(1 - alpha);
- the loss compares reverse rates (above), not a cross-entropy at the masked positions;
- estimate_nelbo integrates over t on stratified times (no count-the-masks discrete form)
  and adds the reconstruction term;
- sample_ancestral starts from uniform noise, and every step may change every position.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-3             # t is clipped to [EPS, 1] so the weight 1/t stays finite
SCHEDULE = "linear"    # alpha(t) = 1 - t; "cosine" is the other choice (SPEC 2)
OPTIONS = ("schedule",)  # the settings this process reads  # changed: no objective (no k-masked form)

# ---------------------------------------------------------------- data and tokens
PAD, MASK = ".", "_"   # shown as themselves; PAD ends a name, MASK is the noise
SPARE_SYMBOLS = "~#|^@*"  # used for PAD or MASK instead when the data itself holds '.' or '_'


def build_vocab(texts, pad=True):
    """(stoi, itos) for the characters of `texts` (a list of names, or [one long text]).
    PAD is id 0 when pad=True (names), the data's characters follow in sorted order, MASK is
    the last id (the denoiser never outputs it). PAD and MASK are '.' and '_' unless the
    data uses them; then the first unused spare symbol stands in, so decode stays readable."""
    chars = sorted(set("".join(texts)))
    spare = [c for c in SPARE_SYMBOLS if c not in chars]
    specials = []
    for symbol in ([PAD] if pad else []) + [MASK]:
        specials.append(symbol if symbol not in chars and symbol not in specials else spare.pop(0))
    itos = specials[:-1] + chars + specials[-1:]
    return {c: i for i, c in enumerate(itos)}, itos


def encode(items, stoi, block_size=None):
    """A string -> (len,) ids; a list of names -> (N, block_size) ids, each padded with PAD (id 0)."""
    def ids(s):
        unknown = sorted(set(s) - set(stoi))
        if unknown:
            raise ValueError(f"characters {''.join(unknown)!r} are not in the model's vocabulary")
        return [stoi[c] for c in s]
    if isinstance(items, str):
        return torch.tensor(ids(items), dtype=torch.long)
    if any(len(w) > block_size for w in items):
        raise ValueError(f"an item is longer than the block size {block_size}")
    return torch.tensor([ids(w) + [0] * (block_size - len(w)) for w in items], dtype=torch.long)


def decode(ids, itos):
    """Keeps PAD and MASK visible: stripping them would hide invalid samples (SPEC 8)."""
    return "".join(itos[i] for i in ids.tolist())


# ---------------------------------------------------------------- forward process
def alpha(t, schedule=SCHEDULE):
    """Chance that a token is still clean at time t: alpha(0) = 1, alpha(1) = 0."""
    return 1 - t if schedule == "linear" else torch.cos(math.pi * t / 2)


def weight(t, schedule=SCHEDULE):  # changed
    """Resampling rate beta(t) = -alpha'(t) / alpha(t): infinite at t = 1, where alpha = 0."""
    if schedule == "linear":
        return 1 / (1 - t)
    return (math.pi / 2) * torch.tan(math.pi * t / 2)


# The draws below come from a CPU generator (torch.Generator()) and are made on the host, in
# float64 where it helps; only their results (the letters drawn) move to x0's device. So the noise is
# the same on every device, and a GPU without float64 (Apple's MPS) never sees one.
def sample_times(batch_size, generator):
    """Antithetic times: one uniform u per batch, spread evenly over (EPS, 1]. (B,) float64, host."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    i = torch.arange(batch_size, dtype=torch.float64)
    return EPS + (1 - EPS) * ((u + i / batch_size) % 1)


def corrupt(x0, t, n_tokens, generator, schedule=SCHEDULE):  # changed
    """Resample each position independently with probability 1 - alpha(t), to a token uniform over
    the n_tokens real ones (it may draw its own token back). (B, L) -> (B, L), and the resampled set."""
    u = torch.rand(x0.shape, generator=generator, dtype=torch.float64)  # host
    resampled = (u < (1 - alpha(t.cpu(), schedule))[:, None]).to(x0.device)
    noise = torch.randint(n_tokens, x0.shape, generator=generator).to(x0.device)  # a real token, not MASK
    return torch.where(resampled, noise, x0), resampled


def stratified_times(n, steps, generator, eps=EPS):  # changed: replaces the k-masked form's sample_k
    """`steps` times per row, one uniform in each of `steps` equal slices of (eps, 1). (n, steps)
    float64, host. Unbiased for an integral over t, with less variance than independent times."""
    u = torch.rand((n, steps), generator=generator, dtype=torch.float64)
    return eps + (1 - eps) * (torch.arange(steps, dtype=torch.float64) + u) / steps


# ---------------------------------------------------------------- the denoiser
def model_args(n_tokens, **options):  # changed
    """What the denoiser needs (model.ModelConfig fields): it reads the K real tokens only (no
    MASK), and is told t, which nothing in xt shows."""
    return dict(vocab_size=n_tokens, time_input=True)


# ---------------------------------------------------------------- the loss: the NELBO
def token_nll(logits, targets):
    """-log p(target) at every position: logits (B, L, V), targets (B, L) -> (B, L); a target of -1
    gives 0. Unreduced on purpose: CUDA's deterministic mode refuses the averaging form of this loss."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-1)


def nelbo_integrand(logits, x0, xt, t, schedule=SCHEDULE):  # changed: reverse rates, not a cross-entropy
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


def nelbo_loss(logits, x0, xt, t, schedule=SCHEDULE):  # changed
    """Per-token NELBO of a batch, its diffusion term: (1 - EPS) * sum over ALL positions of the
    integrand / (B * L), for t from sample_times (uniform on (EPS, 1]). The reconstruction term
    (estimate_nelbo adds it) is O(EPS) for a good denoiser and is left out of training."""
    return (1 - EPS) * nelbo_integrand(logits, x0, xt, t, schedule).sum() / x0.numel()  # every position


def corrupt_batch(x0, n_tokens, generator, schedule=SCHEDULE, **options):  # changed: one form, random letters
    """The forward process on a training batch x0 (B, L): its draws, made on the host for the whole
    batch, as a dict of per-row tensors (a slice of its rows is the corruption of those rows)."""
    t = sample_times(len(x0), generator)
    xt, _ = corrupt(x0, t, n_tokens, generator, schedule)
    return dict(xt=xt, t=t)


def batch_loss(model, x0, noisy, schedule=SCHEDULE, **options):  # changed: the model is told t
    """Per-token NELBO of the rows of x0, given their corruption (corrupt_batch)."""
    logits = model(noisy["xt"], noisy["t"].float().to(x0.device))  # (B, L, K)
    return nelbo_loss(logits, x0, noisy["xt"], noisy["t"], schedule)


# ---------------------------------------------------------------- evaluation: the held-out NELBO
@torch.no_grad()
def estimate_nelbo(x0, denoise, n_tokens, generator, draws=1, one_pass=False, batch_size=4096, steps=None,  # changed
                   schedule=SCHEDULE, eps=EPS, **options):
    """NELBO of each sequence of x0 (N, L), in nats, float64 (N,) on the host: the diffusion term on
    `steps` stratified times per sequence (one xt each; default L, the masked discrete form's number
    of passes, or 1 with one_pass), plus the reconstruction term at t = eps (one x_eps per sequence),
    averaged over `draws`. Unbiased; no time-grid discretisation error. denoise(xt, t) -> logits."""
    N, L = x0.shape
    steps = steps or (1 if one_pass else L)
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


def per_char(nelbo, n_chars):
    """Total NELBO / total characters (SPEC 5), and its standard error (ratio estimator)."""
    nelbo, n_chars = nelbo.double(), n_chars.double()
    r = nelbo.sum() / n_chars.sum()
    se = (nelbo - r * n_chars).std() / math.sqrt(len(nelbo)) / n_chars.mean()
    return r.item(), se.item()


# ---------------------------------------------------------------- sampling
def probabilities(logits, temperature=1.0, top_k=None, top_p=None):
    """softmax(logits / T) in float64 (..., V), optionally truncated to the top_k tokens or to
    the smallest set holding top_p of the mass (nucleus), and renormalised."""
    logits = logits.cpu().double() / temperature  # float64 on the host only (MPS has none)
    if top_k:  # keep the k largest logits; ties at the k-th value all stay
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    p = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = p.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens more likely than each one
        drop_sorted = mass_before >= top_p  # the likeliest token always stays
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        p = p.masked_fill(drop, 0)
        p = p / p.sum(-1, keepdim=True)
    return p


def inverse_cdf(p, u):
    """The token whose cumulative probability first passes u: p (..., V) float64, u (..., 1) in [0, 1).
    u is scaled by the total so a rounding error in the sum can never select a token of probability 0."""
    cdf = p.cumsum(-1)
    token = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)[..., 0]
    return token.clamp(max=p.shape[-1] - 1)


def draw_from(p, generator):
    """One token per position from probabilities p (..., V), by inverse CDF on float64 uniforms:
    with float32 a token rarer than ~6e-8 could never be drawn, a hidden truncation that
    flatters perplexity (SPEC 6)."""
    return inverse_cdf(p, torch.rand(p.shape[:-1] + (1,), generator=generator, dtype=torch.float64))


@dataclass
class Sampled:
    """What a sampler returns. The trajectory, its time labels and the confidences are what an
    animation or a heat map needs (tools/visualize.py): trajectory[j + 1] follows step j, taken with
    confidence[j] (n, L), the top probability of the distribution drawn from at every position
    still masked before the step (NaN at clean positions)."""
    samples: torch.Tensor                            # (n, L) token ids, no MASK left
    nfe: int = 0                                     # network evaluations (denoiser calls)
    trajectory: list = field(default_factory=list)  # xt (n, L): the start, then one per step
    times: list = field(default_factory=list)       # t of each trajectory entry (threshold: the masked share)
    confidence: list = field(default_factory=list)  # one (n, L) float32 per step


def schedule_alpha(t, schedule):
    """alpha(t) of a Python float, as a float (alpha works on tensors)."""
    return float(alpha(torch.tensor(t, dtype=torch.float64), schedule))


def reverse_step(p, xt, t, s, schedule=SCHEDULE):  # changed: replaces the masked unmasking rule
    """q(x_s = y | xt, x0 ~ p) for every y: the true posterior, averaged over the denoiser's x0
    distribution p (n, L, K) float64; xt (n, L), s < t. -> (n, L, K) float64, rows sum to 1.
    q(x_s = y | xt, v) = q(xt | y) q_s(y | v) / q_t(xt | v), with q(xt | y) the step t|s, alpha_t / alpha_s."""
    K = p.shape[-1]
    a_t, a_s = schedule_alpha(t, schedule), schedule_alpha(s, schedule)
    is_xt = F.one_hot(xt, K).double()  # (n, L, K)
    w = p / (a_t * is_xt + (1 - a_t) / K)  # p_v / q_t(xt | v)
    forward_step = (a_t / a_s) * is_xt + (1 - a_t / a_s) / K  # q(xt | x_s = y)
    return forward_step * (a_s * w + (1 - a_s) / K * w.sum(-1, keepdim=True))


@torch.no_grad()
def sample_ancestral(denoise, n, L, n_tokens, generator, steps, temperature=1.0, schedule=SCHEDULE,  # changed
                     **options):
    """Reverse process from uniform noise on a uniform time grid 1 -> 0. Each step calls the
    denoiser, denoise(xt, t) -> logits, once and redraws every position from reverse_step; at s = 0
    that is p itself. Positions are drawn independently given xt: exact for the exact denoiser as
    steps grow. The trajectory holds x_1, ..., x_0 (host)."""
    if steps < 1:
        raise ValueError(f"the ancestral sampler needs at least 1 step, not {steps}.")
    xt = torch.randint(n_tokens, (n, L), generator=generator)  # the prior, on the host
    out = Sampled(xt, trajectory=[xt], times=[1.0])
    times = np.linspace(1, 0, steps + 1).tolist()
    for t, s in zip(times[:-1], times[1:]):
        p = probabilities(denoise(xt, torch.full((n,), t)), temperature)  # (n, L, K), host float64
        out.nfe += 1
        xt = draw_from(reverse_step(p, xt, t, s, schedule), generator)
        out.trajectory.append(xt)
        out.times.append(s)
    out.samples = xt
    return out
