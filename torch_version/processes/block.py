"""Block diffusion: the loop of diffusion.py, cut into blocks written left to right.

What it teaches: the knob between the AR twin and the masked denoiser (Arriola et al., "Block
Diffusion: Interpolating Between Autoregressive and Diffusion Language Models", ICLR 2025). Cut
each sequence of L positions into blocks of `block` positions. The blocks are modelled left to
right, as an AR model models characters: -log p(x0) = sum_j -log p(block j | blocks before j);
and each block is modelled by masked diffusion given the clean blocks before it. block = 1 is an
autoregressive model (each "block" is one fully masked position, predicted from the clean ones
before it); block = L is diffusion.py's masked model (one block, nothing before it). In between,
the bound tightens towards the AR twin's loss as blocks shrink, and sampling writes text of any
length, a block at a time, each block emerging from masks.

    from torch_version.processes import block
    noisy = block.corrupt_batch(x0, mask_id, g, block=4)           # k masks in every block of 4
    loss = block.batch_loss(model, x0, noisy, block=4)            # model(xt, x0=x0): one pass
    nelbo = block.estimate_nelbo(x0, model, mask_id, g, block=4)   # (N,) nats per sequence

The bound, block by block. Block j's term is the masked discrete form (SPEC 4) of that block,
its context the clean blocks before it:
    NELBO(x0) = sum_j sum_{k=1..block} (1/k) E_{S: k positions of block j} [ sum_{l in S} -log p(x0_l | x0_<j, block j with S masked) ]
Each term bounds -log p(block j | x0_<j), so the sum bounds -log p(x0). Training draws one k per
block (weight block / k, the one-pass form) and scores every block in one forward pass: the
denoiser reads the noisy sequence and the clean one side by side, [xt, x0], both at positions
0..L-1, with attention cut so that a noisy block sees its own noise and the clean blocks before
it, never its own clean copy (model.block_diffusion_mask). Blocks do not see each other's noise,
so masking all of them at once costs nothing in exactness. The clean half works as an AR model
over blocks; its keys and values are what the sampler's KV cache holds. The price: every step
reads 2L positions, twice the masked model's.

It has diffusion.py's interface (OPTIONS, model_args, corrupt_batch, batch_loss, estimate_nelbo,
sample_ancestral), so train.py runs it with --block B. Functions it shares with diffusion.py are
copies, kept identical by tests/test_processes.py; `# changed` marks the rest.

Changes from diffusion.py (the masked loop):
- sample_k and corrupt_k draw a mask size and a mask set per block, not per sequence;
- the loss weights each block by block / k, and the denoiser also reads the clean copy;
- estimate_nelbo sums the blocks' discrete forms, all blocks in one pass per mask size;
- the sampler writes one block at a time (sample_blocks), each by the masked sampler
  (sample_within: diffusion.py's sample_ancestral), the clean blocks before it in a KV cache;
- only the k-masked form (no continuous-time objective), and no AR twin here (it is diffusion.py's).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-3             # t is clipped to [EPS, 1] so the weight 1/t stays finite
SCHEDULE = "linear"    # alpha(t) = 1 - t; "cosine" is the other choice (SPEC 2)
BLOCK = 4              # positions per block (--block): 1 is the AR twin's factorisation, L the masked model's  # changed
OPTIONS = ("block",)   # the settings this process reads  # changed: the block size; the k-masked form only
STEPS_PER_POSITION = 16  # ancestral sampling: default steps per position of a block  # changed: new
#                          The network is called only after a step unmasks something (at most b calls
#                          per block), and with this many steps two positions rarely share a step
#                          (drawn independently where they do): the model's own distribution, nearly,
#                          at no extra network evaluation

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


def sample_k(batch_size, L, generator, block=BLOCK):  # changed: one k per block
    """The discrete form's 'time', per block: how many of each block's positions to mask, k in
    1..block, antithetic over the batch like sample_times, so that in every block each k appears
    about equally often. A uniform per block (not one per batch), so a row's blocks do not share
    one k. (B, L // block) int64, host."""
    u = torch.rand((L // block,), generator=generator, dtype=torch.float64)
    i = torch.arange(batch_size, dtype=torch.float64)[:, None]
    return 1 + ((u + i / batch_size) % 1 * block).long().clamp(max=block - 1)


def corrupt_k(x0, k, mask_id, generator):  # changed: a mask set in every block
    """Mask exactly k[b, j] positions of block j of row b, a uniformly random set. (B, L), (B, L // block)
    -> (B, L), and the mask. The ranks of a block's uniforms are a random permutation of it; the k
    smallest ranks are the masked set."""
    B, L = x0.shape
    u = torch.rand(x0.shape, generator=generator).to(x0.device)  # float32 uniforms; ranked on the device
    ranks = u.view(B, k.shape[1], -1).argsort(-1).argsort(-1)  # (B, n, block)
    mask = (ranks < k.to(x0.device)[..., None]).view(B, L)
    return torch.where(mask, mask_id, x0), mask


# ---------------------------------------------------------------- the denoiser
def model_args(n_tokens, block=BLOCK, **options):  # changed
    """What the denoiser needs (model.ModelConfig fields): it reads the real tokens and MASK, no
    time, and attention cut in blocks (block_len): it reads [xt, x0] when trained and scored."""
    return dict(vocab_size=n_tokens + 1, block_len=block)


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


def nelbo_loss_k(logits, x0, mask, k):  # changed: each block weighted by its own block / k
    """The per-token NELBO of a batch in the discrete form, block by block: (block / k_j) * summed
    NLL of the k_j masked positions of block j, over every block, / (B * L). Its expectation over
    k_j ~ U{1..block} is the sum of the blocks' bounds."""
    nll = token_nll(logits, x0)  # (B, L)
    block = x0.shape[1] // k.shape[1]
    w = (block / k.to(nll.device)).repeat_interleave(block, dim=1) * mask
    return (w * nll).sum() / x0.numel()


def corrupt_batch(x0, mask_id, generator, block=BLOCK, **options):  # changed: k masks in every block
    """The forward process on a training batch x0 (B, L): its draws, made on the host for the whole
    batch, as a dict of per-row tensors (a slice of its rows is the corruption of those rows)."""
    k = sample_k(len(x0), x0.shape[1], generator, block)
    xt, mask = corrupt_k(x0, k, mask_id, generator)
    return dict(xt=xt, mask=mask, k=k)


def batch_loss(model, x0, noisy, **options):  # changed: the denoiser reads the clean copy too
    """Per-token NELBO of the rows of x0, given their corruption (corrupt_batch): every block scored
    in one forward pass of [xt, x0]."""
    logits = model(noisy["xt"], x0=x0)  # (B, L, V-1): block j from its own noise and the clean blocks before it
    return nelbo_loss_k(logits, x0, noisy["mask"], noisy["k"])


# ---------------------------------------------------------------- evaluation: the held-out NELBO
@torch.no_grad()
def estimate_nelbo(x0, denoise, mask_id, generator, draws=1, one_pass=False, batch_size=4096, block=BLOCK,  # changed
                   **options):
    """NELBO of each sequence of x0 (N, L), in nats, float64 (N,): the sum over blocks of each block's
    discrete form given the clean blocks before it, averaged over `draws`. For k = 1..block, a row
    masks a random set of k positions in every block at once (the blocks never see each other's
    noise), so a sequence costs `block` forward passes of [xt, x0], not L. one_pass=True: one k per
    block and draw (stratified over the set), weighted by block / k. denoise(xt, x0=x0) -> logits.
    block = L draws exactly what diffusion.estimate_nelbo draws; block = 1 draws nothing that
    matters (every position masked, k = 1): the AR factorisation's exact NLL."""
    N, L = x0.shape
    total = torch.zeros(N, dtype=torch.float64)  # host: float64 sums, whatever the device
    for _ in range(draws):
        if one_pass:
            rows = torch.arange(N)
            k = sample_k(N, L, generator, block)
            k = k[torch.randperm(N, generator=generator)]  # no k tied to a row's place
            scale = block / k.double()
        else:
            rows = torch.arange(N).repeat_interleave(block)  # every sequence `block` times ...
            k = torch.arange(1, block + 1).repeat(N)[:, None].expand(-1, L // block)  # ... once with each k, in every block
            scale = 1 / k.double()
        for start in range(0, len(rows), batch_size):
            r, kk = rows[start:start + batch_size], k[start:start + batch_size]
            clean = x0[r.to(x0.device)]
            xt, mask = corrupt_k(clean, kk, mask_id, generator)
            nll = host_nll(denoise(xt, x0=clean), clean)  # (b, L)
            per_block = torch.where(mask.cpu(), nll, 0).view(len(r), -1, block).sum(-1)  # (b, n); clean positions: 0
            total.index_add_(0, r, (per_block * scale[start:start + batch_size]).sum(1))
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


def sample_within(denoise, n, L, mask_id, generator, steps, temperature=1.0, xt=None,  # changed: the name
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


@torch.no_grad()
def sample_blocks(within, denoise, n, L, mask_id, generator, xt=None, block=BLOCK, **kw):  # changed: new
    """The reverse process of block diffusion: blocks of `block` positions left to right, each written
    by the masked sampler `within` (sample_within, or sample.py's confidence and threshold samplers,
    called with kw) given the clean blocks before it. Their keys and values sit in the denoiser's KV
    cache: a finished block enters it, clean, in the same network call as the next block's first
    step (block-causally: the clean block does not see the noisy one), and a noisy block reads the
    cache and itself. A block of s steps costs s network evaluations. Positions already set in
    xt (a prompt, an infill template) are kept. L may exceed the denoiser's window: the window then
    restarts from the last half of it (whole blocks), read again with the next first step.
    denoise(x, kv_cache=, start_pos=) -> logits, denoise.new_kv_cache(n), denoise.config.block_size.
    -> Sampled: the trajectory is the whole sequence after every step of every block."""
    xt = torch.full((n, L), mask_id, dtype=torch.long) if xt is None else xt.clone()
    out, window = Sampled(xt, trajectory=[xt.clone()], times=[1.0]), denoise.config.block_size
    cache, offset, cached = denoise.new_kv_cache(n), 0, 0  # the window starts at `offset`; its first `cached` positions are in the cache
    for start in range(0, L, block):
        end = min(start + block, L)
        if end - offset > window:  # the window is full: keep its last half, in whole blocks
            offset, cache, cached = start - window // 2 // block * block, denoise.new_kv_cache(n), 0
        if not (xt[:, start:end] == mask_id).any():
            continue
        clean = xt[:, offset + cached:start]  # clean blocks the cache lacks: they ride with the first step

        def block_denoise(x, at=start - offset):  # the block's logits; the cache holds every clean block before it
            nonlocal clean
            logits = denoise(torch.cat([clean, x], 1), kv_cache=cache, start_pos=at - clean.shape[1])
            logits, clean = logits[:, clean.shape[1]:], clean[:, :0]  # in the cache from now on
            return logits
        result = within(block_denoise, n, end - start, mask_id, generator, xt=xt[:, start:end], **kw)
        cached = start - offset
        out.nfe += result.nfe
        for x, t, c in zip(result.trajectory[1:], result.times[1:], result.confidence):
            frame, confidence = xt.clone(), torch.full((n, L), float("nan"))
            frame[:, start:end], confidence[:, start:end] = x, c
            out.trajectory.append(frame)
            out.times.append(t)
            out.confidence.append(confidence)
        xt[:, start:end] = result.samples
    out.samples = xt
    return out


@torch.no_grad()
def sample_ancestral(denoise, n, L, mask_id, generator, steps, temperature=1.0, xt=None,  # changed: block by block
                     top_k=None, top_p=None, schedule=SCHEDULE, block=BLOCK, **options):
    """The reverse process block by block (sample_blocks), each block by diffusion.py's ancestral
    sampler (sample_within) with `steps` steps."""
    return sample_blocks(sample_within, denoise, n, L, mask_id, generator, xt, block, steps=steps,
                         temperature=temperature, top_k=top_k, top_p=top_p, schedule=schedule)
