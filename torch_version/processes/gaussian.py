"""Gaussian diffusion in a character-embedding space: the loop of diffusion.py, with images' kind
of noise.

What it teaches: text can diffuse the way pixels do, once each token is a vector. Token v
becomes its embedding e(v); Gaussian noise is mixed in, z_t = alpha_t e(x0) + sigma_t eps,
until only noise is left; a denoiser reads z_t and says which characters it thinks were there.
It must be told t: nothing in z_t says how much of it is noise.

    from torch_version.processes import gaussian
    t = gaussian.sample_times(len(x0), g)                        # (B,) float64, host
    zt = gaussian.corrupt(x0, t, n_tokens, g)                    # (B, L, K) float32
    loss = gaussian.nelbo_loss(denoise(zt, t.float()), x0, t)
    nelbo = gaussian.estimate_nelbo(x0, denoise, n_tokens, g)    # (N,) nats per sequence

Embeddings: fixed, e(v) = the v-th unit vector of R^K (K real tokens: PAD and the letters for
names; MASK is never used). Why fixed and one-hot: learned embeddings let the diffusion term be
gamed (shrink them, or pull them together, and denoising gets easy; Diffusion-LM, CDCD and
Plaid each need a normalisation or an extra loss to stop that), while fixed unit vectors cannot
collapse, keep every pair of tokens the same distance (sqrt 2) apart, so no letter is privileged,
and make the decoder below a plain softmax. Their scale is no choice at all: scaling e by s only
shifts log-SNR by 2 log s, which the schedule's end points already set. The price: z has K
dimensions per position (27 for names), and the geometry knows nothing of letters.

Schedule (variance preserving, in log-SNR as in VDM): gamma(t) = -log SNR(t) runs linearly from
gamma_min at t = 0 to gamma_max at t = 1; alpha_t^2 = sigmoid(-gamma), sigma_t^2 = sigmoid(gamma).

The bound (VDM, in continuous time), in nats per sequence, three terms:
    NELBO(x0) = KL(q(z_1 | x0) || N(0, I))                                              prior
              + int_0^1 0.5 * (-SNR'(t)) * E_eps ||e(x0) - e_hat(z_t, t)||^2 dt          diffusion
              + E_{z_0} [ -log p(x0 | z_0) ]                                           reconstruction
- prior: closed form, L * 0.5 * (alpha_1^2 |e|^2 + K (sigma_1^2 - 1 - log sigma_1^2));
- diffusion: -SNR' = gamma' SNR, and e_hat = sum_v p_v e(v) (= p for unit vectors) is the
  denoiser's x0 estimate, the mean embedding under its softmax;
- reconstruction: p(x0_l = v | z_0) is proportional to the Gaussian likelihood
  N(z_0,l; alpha_0 e(v), sigma_0^2 I), a uniform prior over tokens; for unit vectors that is
  softmax(alpha_0 z_0,l / sigma_0^2). Positions are decoded independently.
The embeddings and the decoder have no parameters, so the prior and reconstruction terms are
constants of training: the diffusion term alone (nelbo_loss) trains on the whole bound.
With the exact denoiser the bound is -log q(x0) plus two end-point gaps, both computed in the
tests: E_{z_0}[log q(x0 | z_0) - log p(x0 | z_0)] (decoding positions independently, without
the data's prior) and E_{z_1}[log q(z_1) - log N(z_1; 0, I)] (the prior is not exactly q(z_1)).
At the default end points (log-SNR from +10 to -10) both are below 1e-4 per position.

It has diffusion.py's interface (OPTIONS, model_args, corrupt_batch, batch_loss, estimate_nelbo,
sample_ancestral), so train.py runs it with --noise gaussian. Functions it shares with
diffusion.py are copies, kept identical by tests/test_processes.py; `# changed` marks the rest.

Changes from diffusion.py (the masked loop):
- a token becomes a vector, and noise is Gaussian: corrupt returns z_t (B, L, K), not ids;
- the schedule is a log-SNR line; alpha and sigma are the signal and noise scales;
- the denoiser takes (z_t, t); the loss is a weighted squared error of its mean embedding at
  every position, and two end-point terms complete the bound;
- estimate_nelbo integrates over t on stratified times; t needs no clip (the weight is finite);
- two samplers: ancestral (DDPM) and deterministic (DDIM), both from N(0, I) and both decoding
  z_0 to characters with a draw from p(x0 | z_0).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

SCHEDULE = (-10.0, 10.0)  # (gamma_min, gamma_max): log-SNR runs from +10 at t = 0 down to -10 at t = 1  # changed
OPTIONS = ()              # the settings this process reads  # changed: none; the schedule is its own

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


def embed(x0, n_tokens):  # changed: a token becomes a vector
    """e(x0): token v -> the v-th unit vector of R^K. (B, L) ids -> (B, L, K) float32."""
    return F.one_hot(x0, n_tokens).float()


def expected_embedding(logits):  # changed
    """The denoiser's x0 estimate e_hat = sum_v p_v e(v): for unit vectors, p itself. (B, L, K)."""
    return logits.float().softmax(-1)


# ---------------------------------------------------------------- forward process
def gamma(t, schedule=SCHEDULE):  # changed
    """-log SNR(t), a straight line from gamma_min (t = 0, nearly clean) to gamma_max (t = 1, noise)."""
    gamma_min, gamma_max = schedule
    return gamma_min + (gamma_max - gamma_min) * t


def alpha(t, schedule=SCHEDULE):  # changed
    """Signal scale alpha_t = sqrt(sigmoid(-gamma)): alpha^2 + sigma^2 = 1 (variance preserving)."""
    return torch.sigmoid(-gamma(t, schedule)).sqrt()


def sigma(t, schedule=SCHEDULE):  # changed
    """Noise scale sigma_t = sqrt(sigmoid(gamma))."""
    return torch.sigmoid(gamma(t, schedule)).sqrt()


def weight(t, schedule=SCHEDULE):  # changed
    """ELBO weight w(t) = -SNR'(t) / 2 = gamma'(t) exp(-gamma(t)) / 2: finite on all of [0, 1]."""
    gamma_min, gamma_max = schedule
    return 0.5 * (gamma_max - gamma_min) * torch.exp(-gamma(t, schedule))


# The draws below come from a CPU generator (torch.Generator()) and are made on the host, in
# float64 where it helps; only their results (the noise vectors) move to x0's device. So the noise is
# the same on every device, and a GPU without float64 (Apple's MPS) never sees one.
def sample_times(batch_size, generator):  # changed: no EPS
    """Antithetic times: one uniform u per batch, spread evenly over [0, 1). (B,) float64, host.
    No clip: the weight is finite at t = 0."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    i = torch.arange(batch_size, dtype=torch.float64)
    return (u + i / batch_size) % 1


def corrupt(x0, t, n_tokens, generator, schedule=SCHEDULE):  # changed: Gaussian noise, not masks
    """z_t = alpha_t e(x0) + sigma_t eps, eps ~ N(0, I) drawn on the host. (B, L) -> (B, L, K) float32."""
    eps = torch.randn(x0.shape + (n_tokens,), generator=generator).to(x0.device)
    a, s = (v(t.cpu().double(), schedule).float().to(x0.device)[:, None, None] for v in (alpha, sigma))
    return a * embed(x0, n_tokens) + s * eps


def stratified_times(n, steps, generator):  # changed: replaces the k-masked form's sample_k
    """`steps` times per row, one uniform in each of `steps` equal slices of [0, 1). (n, steps)
    float64, host. Unbiased for an integral over t, with less variance than independent times."""
    u = torch.rand((n, steps), generator=generator, dtype=torch.float64)
    return (torch.arange(steps, dtype=torch.float64) + u) / steps


# ---------------------------------------------------------------- the denoiser
def model_args(n_tokens, **options):  # changed
    """What the denoiser needs (model.ModelConfig fields): a K-vector per position, read by a linear
    map (for a one-hot vector exactly an embedding row), and t, which nothing in z_t shows."""
    return dict(vocab_size=n_tokens + 1, time_input=True, vector_input=n_tokens)


# ---------------------------------------------------------------- the loss: the NELBO
def squared_error(logits, x0):  # changed: a distance between vectors, not a cross-entropy
    """||e(x0) - e_hat||^2 at every position, summed over the K embedding dimensions. (B, L)."""
    return (embed(x0, logits.shape[-1]) - expected_embedding(logits)).pow(2).sum(-1)


def nelbo_loss(logits, x0, t, schedule=SCHEDULE):  # changed
    """Per-token NELBO of a batch, its diffusion term: sum over ALL positions of w(t) * squared
    error / (B * L), for t from sample_times. The other two terms do not depend on the denoiser."""
    se = squared_error(logits, x0)  # (B, L)
    w = weight(t.cpu().double(), schedule).float().to(se.device)[:, None]  # every position counts
    return (w * se).sum() / x0.numel()


def corrupt_batch(x0, n_tokens, generator, **options):  # changed: one form, Gaussian noise
    """The forward process on a training batch x0 (B, L): its draws, made on the host for the whole
    batch, as a dict of per-row tensors (a slice of its rows is the corruption of those rows)."""
    t = sample_times(len(x0), generator)
    return dict(zt=corrupt(x0, t, n_tokens, generator), t=t)


def batch_loss(model, x0, noisy, **options):  # changed: the model reads vectors and is told t
    """Per-token NELBO of the rows of x0, its diffusion term, given their corruption (corrupt_batch)."""
    logits = model(noisy["zt"], noisy["t"].float().to(x0.device))  # (B, L, K)
    return nelbo_loss(logits, x0, noisy["t"])


def prior_kl(L, n_tokens, schedule=SCHEDULE):  # changed: a term the masked bound does not have
    """KL(q(z_1 | x0) || N(0, I)) per sequence, the same for every x0 (all |e| = 1). float, nats.
    Per dimension KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2, with s^2 - 1 = -alpha^2."""
    g1 = torch.tensor(schedule[1], dtype=torch.float64)
    alpha2, log_sigma2 = torch.sigmoid(-g1), F.logsigmoid(g1)
    return float(L * 0.5 * (alpha2 + n_tokens * (-alpha2 - log_sigma2)))


def decoder_logits(z0, schedule=SCHEDULE):  # changed: the reconstruction term's decoder
    """log p(x0_l = v | z_0) up to a constant: -|z_0 - alpha_0 e(v)|^2 / (2 sigma_0^2), which for unit
    vectors is alpha_0 z_0,v / sigma_0^2 (the |z_0|^2 and |e(v)|^2 parts are the same for every v)."""
    t0 = torch.zeros(1, dtype=torch.float64)
    return (alpha(t0, schedule) / sigma(t0, schedule) ** 2).item() * z0


# ---------------------------------------------------------------- evaluation: the held-out NELBO
@torch.no_grad()
def estimate_nelbo(x0, denoise, n_tokens, generator, draws=1, one_pass=False, batch_size=4096, steps=None,  # changed
                   schedule=SCHEDULE, **options):
    """NELBO of each sequence of x0 (N, L), in nats, float64 (N,) on the host: the prior term
    (exact), the diffusion term on `steps` stratified times per sequence (one z_t each; default L,
    the masked discrete form's number of passes, or 1 with one_pass) and the reconstruction term
    (one z_0 per sequence), averaged over `draws`. Unbiased. denoise(z_t, t) -> logits."""
    N, L = x0.shape
    steps = steps or (1 if one_pass else L)
    total = torch.full((N,), prior_kl(L, n_tokens, schedule), dtype=torch.float64)  # host float64 sums
    for _ in range(draws):
        t = stratified_times(N, steps, generator).reshape(-1)
        rows = torch.arange(N).repeat_interleave(steps)
        for start in range(0, len(rows), batch_size):
            r, tt = rows[start:start + batch_size], t[start:start + batch_size]
            clean = x0[r.to(x0.device)]
            zt = corrupt(clean, tt, n_tokens, generator, schedule)
            logits = denoise(zt, tt.float().to(x0.device)).float()  # (b, L, K), on the device
            w = weight(tt, schedule)[:, None] / steps / draws  # (b, 1) float64, host
            total.index_add_(0, r, (w * squared_error(logits, clean).cpu().double()).sum(1))
        z0 = corrupt(x0, torch.zeros(N, dtype=torch.float64), n_tokens, generator, schedule)
        nll = F.cross_entropy(decoder_logits(z0, schedule).transpose(1, 2), x0, reduction="none")  # (N, L)
        total += nll.cpu().double().sum(1) / draws
    return total


def per_char(nelbo, n_chars):
    """Total NELBO / total characters (SPEC 5), and its standard error (ratio estimator)."""
    nelbo, n_chars = nelbo.double(), n_chars.double()
    r = nelbo.sum() / n_chars.sum()
    se = (nelbo - r * n_chars).std() / math.sqrt(len(nelbo)) / n_chars.mean()
    return r.item(), se.item()


# ---------------------------------------------------------------- sampling
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


def decode_z(z0, generator, schedule=SCHEDULE):  # changed: vectors back to characters
    """Characters from z_0: one draw per position from p(x0 | z_0), the decoder of the bound, in
    float64 on the host (SPEC 6). At SNR(0) = e^10 it is, in practice, its argmax. (n, L) ids."""
    return draw_from(torch.softmax(decoder_logits(z0.cpu().double(), schedule), dim=-1), generator)


def scales(t, schedule=SCHEDULE):  # changed
    """(alpha_t, sigma_t, gamma_t) of a Python float, as floats: the samplers' step coefficients."""
    t = torch.tensor(t, dtype=torch.float64)
    return float(alpha(t, schedule)), float(sigma(t, schedule)), float(gamma(t, schedule))


@torch.no_grad()
def sample_ancestral(denoise, n, L, n_tokens, generator, steps, schedule=SCHEDULE, deterministic=False,  # changed
                     **options):
    """Reverse process from z_1 ~ N(0, I) on a uniform time grid 1 -> 0, then z_0 -> characters.
    Ancestral (DDPM): z_s ~ q(z_s | z_t, x0 = e_hat), the true posterior with the mean embedding put
    in for e(x0): mean alpha_s ((1 - c) z_t / alpha_t + c e_hat), variance c sigma_s^2, where
    c = 1 - SNR(t) / SNR(s) = -expm1(gamma_s - gamma_t). deterministic=True is DDIM: z_s =
    alpha_s e_hat + sigma_s eps_hat, eps_hat = (z_t - alpha_t e_hat) / sigma_t, the noise it implies.
    denoise(z_t, t) -> logits. The trajectory holds z_1, ..., z_0 (n, L, K) float32, on the host."""
    if steps < 1:
        raise ValueError(f"the sampler needs at least 1 step, not {steps}.")
    zt = torch.randn((n, L, n_tokens), generator=generator)  # the prior N(0, I), on the host
    out = Sampled(zt, trajectory=[zt], times=[1.0])
    times = np.linspace(1, 0, steps + 1).tolist()
    for t, s in zip(times[:-1], times[1:]):
        e_hat = expected_embedding(denoise(zt, torch.full((n,), t)).cpu())  # (n, L, K)
        out.nfe += 1
        (a_t, s_t, g_t), (a_s, s_s, g_s) = scales(t, schedule), scales(s, schedule)
        if deterministic:
            zt = a_s * e_hat + s_s * (zt - a_t * e_hat) / s_t
        else:
            c = -float(np.expm1(g_s - g_t))  # in (0, 1): the share of z_s's variance that is new noise
            noise = torch.randn(zt.shape, generator=generator)
            zt = a_s * ((1 - c) * zt / a_t + c * e_hat) + (c ** 0.5) * s_s * noise
        out.trajectory.append(zt)
        out.times.append(s)
    out.samples = decode_z(zt, generator, schedule)
    return out


def sample_ddim(denoise, n, L, n_tokens, generator, steps, schedule=SCHEDULE, **options):  # changed
    """The deterministic sampler (DDIM, eta = 0): the same grid and start, no noise added on the way."""
    return sample_ancestral(denoise, n, L, n_tokens, generator, steps, schedule, deterministic=True)
