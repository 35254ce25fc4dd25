"""The diffusion loop of the torch tier: tokens, noising, loss, held-out NELBO and the sampler.

What it teaches: the same algorithm as minimal/train_minimal.py (docs/algorithm.md), with
the same function names in the same order, written with torch tensors so that it runs
batched on a GPU. The denoiser is any callable xt (B, L) -> logits (B, L, V-1); in this
tier it is model.Transformer. The training loop lives in train.py, the other samplers
(confidence, threshold, infill, long text) in sample.py.

    from torch_version import diffusion
    stoi, itos = diffusion.build_vocab(words)
    x0 = diffusion.encode(words, stoi, block_size=16)        # (N, 16) int64

Every process file has this one's interface, so train.py picks a file and calls the same
names whatever the process (processes/uniform.py, processes/gaussian.py, processes/block.py
vary this file; `diff` one against it shows what that process changes):
    OPTIONS                                   the settings it reads (train.py flags of those names)
    model_args(n_tokens, **options)           what the denoiser needs (model.ModelConfig fields)
    corrupt_batch(x0, n_tokens, g, **options) the forward process on a training batch, drawn on the host
    batch_loss(model, x0, noisy, **options)   the per-token NELBO of those rows (what training minimises)
    estimate_nelbo(x0, denoise, n_tokens, g, draws, one_pass, batch_size, **options)  the held-out bound
    sample_ancestral(denoise, n, L, n_tokens, g, steps, **options)                    the reverse process
n_tokens is the number of real tokens K; here it is also MASK's id (the last one).

Changes from pure:
- tensors and a torch.Generator instead of NumPy arrays and a NumPy Generator;
- the vocabulary also serves free-running text (no PAD) and picks MASK/PAD symbols
  that do not occur in the data;
- a second, exact form of the loss (`sample_k` + `corrupt_k`): k masked positions
  with k uniform in 1..L, weighted by L / k. It is the continuous-time NELBO with t
  integrated out, so it has the same expectation and a lower variance; train.py
  trains on it by default (`--objective time` trains on the continuous form);
- estimate_nelbo batches the L mask sizes of the discrete form into one forward pass,
  and has the one-pass L / k form for long windows (SPEC 4);
- the sampler takes top-k / top-p truncation and records what an animation needs (Sampled);
- the autoregressive twin's loss, scored on the same sequences (ar_inputs, ar_nll).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-3             # t is clipped to [EPS, 1] so the weight 1/t stays finite
SCHEDULE = "linear"    # alpha(t) = 1 - t; "cosine" is the other choice (SPEC 2)
OBJECTIVE = "k"        # train on the k-masked form of the NELBO ("time": the continuous-time form)
OPTIONS = ("objective", "schedule")  # the settings this process reads

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


def weight(t, schedule=SCHEDULE):
    """ELBO weight w(t) = -alpha'(t) / (1 - alpha(t))."""
    if schedule == "linear":
        return 1 / t
    return (math.pi / 2) * torch.sin(math.pi * t / 2) / (1 - torch.cos(math.pi * t / 2))


# The draws below come from a CPU generator (torch.Generator()) and are made on the host, in
# float64 where it helps; only their results (masks, ids) move to x0's device. So the noise is
# the same on every device, and a GPU without float64 (Apple's MPS) never sees one.
def sample_times(batch_size, generator):
    """Antithetic times: one uniform u per batch, spread evenly over (EPS, 1]. (B,) float64, host."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    i = torch.arange(batch_size, dtype=torch.float64)
    return EPS + (1 - EPS) * ((u + i / batch_size) % 1)


def corrupt(x0, t, mask_id, generator, schedule=SCHEDULE):
    """Mask each position independently with probability 1 - alpha(t). (B, L) -> (B, L), and the mask."""
    u = torch.rand(x0.shape, generator=generator, dtype=torch.float64)  # host
    mask = (u < (1 - alpha(t.cpu(), schedule))[:, None]).to(x0.device)
    return torch.where(mask, mask_id, x0), mask


def sample_k(batch_size, L, generator):
    """The discrete form's 'time': how many of the L positions to mask, antithetic over the
    batch like sample_times, so every k in 1..L appears about equally often. (B,) int64, host."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    i = torch.arange(batch_size, dtype=torch.float64)
    return 1 + ((u + i / batch_size) % 1 * L).long().clamp(max=L - 1)


def corrupt_k(x0, k, mask_id, generator):
    """Mask exactly k[b] positions of row b, a uniformly random set. (B, L) -> (B, L), and the mask.
    The ranks of L uniforms are a random permutation; the k smallest ranks are the masked set."""
    u = torch.rand(x0.shape, generator=generator).to(x0.device)  # float32 uniforms; ranked on the device
    mask = u.argsort(-1).argsort(-1) < k.to(x0.device)[..., None]
    return torch.where(mask, mask_id, x0), mask


# ---------------------------------------------------------------- the denoiser
def model_args(n_tokens, **options):
    """What the denoiser needs (model.ModelConfig fields): it reads the real tokens and MASK, and
    no time (SPEC 3: the share of masks already says how noisy xt is)."""
    return dict(vocab_size=n_tokens + 1)


# ---------------------------------------------------------------- the loss: the NELBO
log_softmax = F.log_softmax  # torch's, numerically the same as the minimal tier's


def token_nll(logits, targets):
    """-log p(target) at every position: logits (B, L, V), targets (B, L) -> (B, L); a target of -1
    gives 0. Unreduced on purpose: CUDA's deterministic mode refuses the averaging form of this loss."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-1)


def host_nll(logits, targets):
    """The same in float64 on the host, for evaluation: logits (B, L, V) on any device -> (B, L) CPU
    float64. A held-out figure adds up millions of these; float64 keeps its sum exact to far below
    the digits reported, and it exists on the host whatever the device (Apple's MPS has none)."""
    logp = log_softmax(logits.cpu().double(), dim=-1)
    targets = targets.cpu()
    return torch.where(targets >= 0, -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0], 0)


def nelbo_loss(logits, x0, mask, t, schedule=SCHEDULE):
    """Per-token NELBO of a batch: sum of w(t) * NLL over masked positions / (B * L).
    (Autograd gives the gradient that minimal's nelbo_loss returns by hand.)"""
    nll = token_nll(logits, x0)  # (B, L)
    w = weight(t.cpu(), schedule).to(nll.dtype).to(nll.device)[:, None] * mask  # cast on the host; clean positions: 0
    return (w * nll).sum() / x0.numel()


def nelbo_loss_k(logits, x0, mask, k):
    """The same per-token NELBO in the discrete form: (L / k) * summed NLL of the k masked
    positions, / (B * L). Its expectation over k ~ U{1..L} equals nelbo_loss's over t.
    Per sequence this is L times the mean NLL of its masked positions: a masked cross-entropy
    averaged per sequence, with k uniform, is the NELBO; pooled over a batch it is not (SPEC 8)."""
    nll = token_nll(logits, x0)  # (B, L)
    w = (x0.shape[1] / k.to(nll.device))[:, None] * mask
    return (w * nll).sum() / x0.numel()


def corrupt_batch(x0, mask_id, generator, objective=OBJECTIVE, schedule=SCHEDULE, **options):
    """The forward process on a training batch x0 (B, L): its draws, made on the host for the whole
    batch, as a dict of per-row tensors (a slice of its rows is the corruption of those rows)."""
    if objective == "k":  # k ~ U{1..L} masked positions, weight L / k: the same NELBO, lower variance
        k = sample_k(len(x0), x0.shape[1], generator)
        xt, mask = corrupt_k(x0, k, mask_id, generator)
        return dict(xt=xt, mask=mask, k=k)
    t = sample_times(len(x0), generator)
    xt, mask = corrupt(x0, t, mask_id, generator, schedule)
    return dict(xt=xt, mask=mask, t=t)


def batch_loss(model, x0, noisy, schedule=SCHEDULE, **options):
    """Per-token NELBO of the rows of x0 (SPEC 4), given their corruption (corrupt_batch)."""
    logits = model(noisy["xt"])  # (B, L, V-1)
    if "k" in noisy:
        return nelbo_loss_k(logits, x0, noisy["mask"], noisy["k"])
    return nelbo_loss(logits, x0, noisy["mask"], noisy["t"], schedule)


# ---------------------------------------------------------------- evaluation: the held-out NELBO
@torch.no_grad()
def estimate_nelbo(x0, denoise, mask_id, generator, draws=1, one_pass=False, batch_size=4096, **options):
    """NELBO of each sequence of x0 (N, L), in nats, float64 (N,). Discrete form (SPEC 4):
    sum over k = 1..L of (1/k) * NLL of a random set of k masked positions, averaged over `draws`.
    The L mask sizes of a sequence go through the denoiser together, `batch_size` rows at a time.
    one_pass=True: one k per sequence per draw (stratified over the set), weighted by L / k;
    the same expectation at 1/L of the cost, for long windows."""
    N, L = x0.shape
    total = torch.zeros(N, dtype=torch.float64)  # host: float64 sums, whatever the device
    for _ in range(draws):
        if one_pass:
            rows = torch.arange(N)
            k = sample_k(N, L, generator)
            k = k[torch.randperm(N, generator=generator)]  # no k tied to a row's place
            scale = L / k.double()
        else:
            rows = torch.arange(N).repeat_interleave(L)  # every sequence L times ...
            k = torch.arange(1, L + 1).repeat(N)  # ... once with each k
            scale = 1 / k.double()
        for start in range(0, len(rows), batch_size):
            r, kk = rows[start:start + batch_size], k[start:start + batch_size]
            clean = x0[r.to(x0.device)]
            xt, mask = corrupt_k(clean, kk, mask_id, generator)
            nll = host_nll(denoise(xt), clean)  # (b, L)
            per_row = torch.where(mask.cpu(), nll, 0).sum(1) * scale[start:start + batch_size]  # clean positions: 0
            total.index_add_(0, r, per_row)
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


def draw(logits, generator, temperature=1.0, top_k=None, top_p=None):
    """One token per position from softmax(logits / T), truncated by top_k / top_p."""
    return draw_from(probabilities(logits, temperature, top_k, top_p), generator)


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


def top_confidence(p, masked):
    """(n, L) float32: the largest probability at each masked position, NaN at clean ones."""
    return p.max(-1).values.float().masked_fill(~masked, float("nan"))


def schedule_alpha(t, schedule):
    """alpha(t) of a Python float, as a float (alpha works on tensors)."""
    return float(alpha(torch.tensor(t, dtype=torch.float64), schedule))


def sample_ancestral(denoise, n, L, mask_id, generator, steps, temperature=1.0, xt=None,
                     top_k=None, top_p=None, schedule=SCHEDULE, **options):
    """Reverse process from all MASK (or a given xt) on a uniform time grid 1 -> 0 (SPEC 6), as in
    the minimal tier: random numbers are drawn in the same order, so given the same uniforms both
    tiers return the same samples. The denoiser is called only after xt changed: NFE <= steps."""
    if steps < 1:
        raise ValueError(f"the ancestral sampler needs at least 1 step, not {steps}.")
    xt = torch.full((n, L), mask_id, dtype=torch.long) if xt is None else xt.clone()
    out, p = Sampled(xt, trajectory=[xt.clone()], times=[1.0]), None
    confidence = torch.full((n, L), float("nan"))
    times = np.linspace(1, 0, steps + 1).tolist()  # the NumPy tiers' grid, to the last bit
    for t, s in zip(times[:-1], times[1:]):
        masked = xt == mask_id
        if p is None and masked.any():  # cache: the denoiser sees no time, so an unchanged xt gives
            p = probabilities(denoise(xt), temperature, top_k, top_p)  # the same logits (SPEC 6)
            out.nfe += 1
            confidence = top_confidence(p, masked)
        out.confidence.append(confidence if masked.any() else torch.full((n, L), float("nan")))
        p_unmask = (schedule_alpha(s, schedule) - schedule_alpha(t, schedule)) / (1 - schedule_alpha(t, schedule))
        unmask = masked & (torch.rand(xt.shape, generator=generator, dtype=torch.float64) < p_unmask)
        if unmask.any():
            xt = torch.where(unmask, draw_from(p, generator), xt)  # clean positions never change
            p = None
        out.trajectory.append(xt.clone())
        out.times.append(s)
    out.samples = xt
    return out


# ---------------------------------------------------------------- the autoregressive twin
def ar_inputs(x0, bos_id):
    """What the AR twin reads to predict x0: a start token, then x0 shifted right by one.
    The start token is MASK: like the diffusion model's all-MASK start, it says 'nothing known
    yet', so both models score exactly the same L characters and need no extra vocabulary."""
    return torch.cat([torch.full_like(x0[:, :1], bos_id), x0[:, :-1]], dim=1)


def ar_targets(x0, pad_id=None):
    """The AR twin's targets: x0, where positions after a name's first PAD are ignored (-1):
    a name costs len(name) + 1 predictions, its letters and its end (SPEC 5). Text: all of x0."""
    if pad_id is None:
        return x0
    after_end = (x0 == pad_id).long().cumsum(1) > 1  # PADs after the first one
    return x0.masked_fill(after_end, -1)


@torch.no_grad()
def ar_nll(x0, model_fn, bos_id, pad_id=None, batch_size=4096):
    """Exact -log p(x0) of each sequence under the AR twin, in nats, float64 (N,)."""
    total = []
    for start in range(0, len(x0), batch_size):
        clean = x0[start:start + batch_size]
        nll = host_nll(model_fn(ar_inputs(clean, bos_id)), ar_targets(clean, pad_id))  # (b, L); ignored: 0
        total.append(nll.sum(1))
    return torch.cat(total)
