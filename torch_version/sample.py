"""Sampling from the torch tier: three ways to turn masks into text, and the AR twin beside them.

What it teaches: a trained denoiser is only half of a diffusion model; the sampler is the
other half, and it sets the price (network evaluations, NFE) and the quality of the text.
- ancestral: the reverse process the ELBO describes (SPEC 6). Positions unmask at random
  times; a step that unmasks nothing reuses the last logits, so NFE <= steps.
- confidence (MaskGIT): the schedule says how many positions to unmask per step; the
  most confident ones go first.
- threshold: every position whose confidence reaches tau unmasks at once; hard text
  takes many steps, easy text few.
Prompts fix some positions from the start (prefix, infill); long text is generated block
by block, each block conditioned on the text before it. The AR twin samples one token per
network call, with a KV cache.

    python3 torch_version/sample.py                                   # 20 names, ancestral
    python3 torch_version/sample.py --sampler confidence --steps 8    # 8 network calls
    python3 torch_version/sample.py --prompt em                       # names that start with "em"
    python3 torch_version/sample.py --infill 'ma__n'                  # '_' marks the blanks
    python3 torch_version/sample.py --infill 'ma?n' --blank '?' --infill-lengths 1-6
    python3 torch_version/sample.py --ar                              # the AR twin, for comparison
    python3 torch_version/sample.py --dataset shakespeare --chars 2000 --sampler threshold --tau 0.9
    python3 torch_version/sample.py --dataset shakespeare --ar --chars 2000

Changes from pure: the samplers take a torch.Generator and tensors; a prompt or template
fixes positions; top-k / top-p truncation; confidence- and threshold-based samplers beside
ancestral; variable-length infill scored by the NELBO; long text in blocks; an AR sampler
with a KV cache. Every draw is still an inverse CDF on float64 uniforms (SPEC 6).
"""
import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version.diffusion import (Sampled, decode, draw, draw_from, estimate_nelbo, probabilities,  # noqa: E402, F401
                                     sample_ancestral, schedule_alpha, top_confidence)
from torch_version.engine.checkpoints import CheckpointError, load_checkpoint  # noqa: E402
from torch_version.processes import block  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"  # checkpoints: out/<dataset>/ckpt.pt and ckpt_ar.pt
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # committed weights-only copies (weights/README.md)
SAMPLER = "ancestral"  # ancestral | confidence | threshold
TAU = 0.9              # threshold sampler: unmask every position at least this confident
NAMES = 20             # names per run (text: one text)
CHARS = 500            # characters of text per run (--chars)
NELBO_DRAWS = 4        # variable-length infill: mask sets per (sequence, k) when scoring a fill
BLOCK_STEPS = block.STEPS_PER_POSITION  # block diffusion's ancestral sampler: default steps per position of a block


# ---------------------------------------------------------------- the samplers
# sample_ancestral, the reverse process the ELBO describes, is diffusion.py's (imported above).
def sample_confidence(denoise, n, L, mask_id, generator, steps, temperature=1.0, xt=None,
                      top_k=None, top_p=None, schedule="linear"):
    """MaskGIT: every step draws a token at each masked position, then keeps the most confident
    ones (probability of the drawn token) so that round(M * (1 - alpha(s))) masks remain, M being
    a row's masks at the start; at least one position unmasks per step. Exactly `steps` NFE."""
    xt = torch.full((n, L), mask_id, dtype=torch.long) if xt is None else xt.clone()
    masks_at_start = (xt == mask_id).sum(1)  # (n,)
    if not 1 <= steps <= masks_at_start.max():
        raise ValueError(f"the confidence sampler unmasks at least one position per step, so --steps must be "
                         f"between 1 and the {int(masks_at_start.max())} masked positions, not {steps}.")
    out = Sampled(xt, trajectory=[xt.clone()], times=[1.0])
    for s in np.linspace(1, 0, steps + 1)[1:].tolist():
        masked = xt == mask_id
        p = probabilities(denoise(xt), temperature, top_k, top_p)  # (n, L, V)
        out.nfe += 1
        out.confidence.append(top_confidence(p, masked))
        x0_hat = draw_from(p, generator)  # (n, L): a proposal at every position
        conf = p.gather(-1, x0_hat[..., None])[..., 0].masked_fill(~masked, -1.0)  # clean ones are never picked
        remain = torch.round(masks_at_start.double() * (1 - schedule_alpha(s, schedule))).long()  # masks to keep
        k = torch.minimum((masked.sum(1) - remain).clamp(min=1), masked.sum(1))  # (n,) positions to unmask
        rank = conf.sort(dim=1, descending=True, stable=True).indices.argsort(dim=1)  # 0 = most confident
        xt = torch.where(masked & (rank < k[:, None]), x0_hat, xt)
        out.trajectory.append(xt.clone())
        out.times.append(s)
    out.samples = xt
    return out


def sample_threshold(denoise, n, L, mask_id, generator, tau=TAU, temperature=1.0, xt=None,
                     top_k=None, top_p=None):
    """Parallel decoding: unmask every masked position whose drawn token has probability >= tau;
    a row where none does unmasks its single most confident position. NFE <= masked positions."""
    if not 0 < tau <= 1:
        raise ValueError(f"the threshold tau must be in (0, 1], not {tau}.")
    xt = torch.full((n, L), mask_id, dtype=torch.long) if xt is None else xt.clone()
    out = Sampled(xt, trajectory=[xt.clone()], times=[(xt == mask_id).double().mean().item()])
    while (masked := xt == mask_id).any():
        p = probabilities(denoise(xt), temperature, top_k, top_p)  # (n, L, V)
        out.nfe += 1
        out.confidence.append(top_confidence(p, masked))
        x0_hat = draw_from(p, generator)
        conf = p.gather(-1, x0_hat[..., None])[..., 0].masked_fill(~masked, -1.0)
        unmask = masked & (conf >= tau)
        stuck = masked.any(1) & ~unmask.any(1)  # rows with masks but no confident position
        unmask[stuck, conf[stuck].argmax(1)] = True
        xt = torch.where(unmask, x0_hat, xt)
        out.trajectory.append(xt.clone())
        out.times.append((xt == mask_id).double().mean().item())  # with alpha = 1 - t, the masked share is t
    out.samples = xt
    return out


SAMPLERS = {"ancestral": sample_ancestral, "confidence": sample_confidence, "threshold": sample_threshold}


# ---------------------------------------------------------------- block diffusion
def blockwise(sampler, block_len):
    """The sampler of a block-diffusion denoiser (processes/block.py): the sequence written block
    by block, left to right, each block by `sampler` given the clean blocks before it, which the
    denoiser keeps in its KV cache. Same arguments as the samplers above, so every path of this
    file takes it, with `steps` counted per block; text of any length comes out of one call."""
    def within(denoise, n, L, mask_id, generator, xt=None, **kw):
        if sampler is sample_confidence:  # it unmasks at least one position per step
            kw["steps"] = min(kw["steps"], int((xt == mask_id).sum(1).max()))
        return sampler(denoise, n, L, mask_id, generator, xt=xt, **kw)

    def sample(denoise, n, L, mask_id, generator, xt=None, **kw):
        return block.sample_blocks(within, denoise, n, L, mask_id, generator, xt=xt, block=block_len, **kw)
    sample.block_len = block_len  # sample_text: one call writes the whole text
    return sample


def samplers_for(model):
    """SAMPLERS as `model` needs them: block by block for a block-diffusion denoiser."""
    if not model.config.block_len:
        return SAMPLERS
    return {name: blockwise(sampler, model.config.block_len) for name, sampler in SAMPLERS.items()}


def estimate_for(model):
    """The held-out NELBO estimator of `model`'s process: diffusion.py's, or block diffusion's."""
    return partial(block.estimate_nelbo, block=model.config.block_len) if model.config.block_len else estimate_nelbo


# ---------------------------------------------------------------- prompts and infill
def encode_prompt(text, stoi, mask_id, blank=None):
    """A prompt, or an infill template whose `blank` characters become MASK -> (len,) ids.
    One-sentence ValueError for characters the model does not know (MASK's symbol included)."""
    mask_symbol = next(c for c, i in stoi.items() if i == mask_id)
    unknown = sorted({c for c in text if c != blank and (c not in stoi or c == mask_symbol)})
    if unknown:
        hint = ""
        if blank:
            hint = f" (its blanks are {blank!r}; --blank picks another character)"
        elif mask_symbol in unknown:
            hint = f" ('{mask_symbol}' is the MASK; mark blanks with --infill)"
        raise ValueError(f"the {'template' if blank else 'prompt'} has characters the model does not know: "
                         f"{''.join(unknown)!r}{hint}.")
    return torch.tensor([mask_id if c == blank else stoi[c] for c in text], dtype=torch.long)


def gaps(ids, mask_id):
    """(start, end) of every run of MASK in a 1-D template."""
    runs, start = [], None
    for i, masked in enumerate((ids == mask_id).tolist() + [False]):
        if masked and start is None:
            start = i
        elif not masked and start is not None:
            runs.append((start, i))
            start = None
    return runs


def fill_variable(denoise, template, lengths, n, L, mask_id, generator, sampler, pad_id=None, estimate=estimate_nelbo,
                  **kw):
    """Variable-length infill (SPEC 6): the template's one gap becomes each length in `lengths`
    (0: no gap at all), n fills per length; every fill is scored by its NELBO per character of
    the whole sequence (`estimate`: diffusion.estimate_nelbo, or the model's, estimate_for), and
    each of the n rows keeps the length that scored best.
    Names (pad_id given): the template is a whole name, PADs fill the window of L; text: the
    sequence is the template itself, at most L characters.
    Returns (best fills: n rows of ids, their scores (n,), {length: (fills, scores)}, NFE)."""
    (start, end), = gaps(template, mask_id)
    calls = [0]

    def counted(xt, **kw):  # the scoring passes are network evaluations too
        calls[0] += 1
        return denoise(xt, **kw)

    tried = {}
    for g in lengths:
        row = torch.cat([template[:start], torch.full((g,), mask_id), template[end:]])
        limit = L - 1 if pad_id is not None else L  # a name keeps room for its end
        if len(row) > limit:
            raise ValueError(f"a gap of {g} makes the sequence {len(row)} characters long; the window holds {limit}.")
        xt = torch.full((n, L if pad_id is not None else len(row)), pad_id if pad_id is not None else mask_id)
        xt[:, :len(row)] = row
        if g == 0:  # the template without its gap: nothing to fill, only to score
            samples = xt
        else:
            per_gap = dict(kw, steps=g) if kw.get("steps", 0) is None else kw  # steps=None: one per blank
            result = sampler(denoise, n, xt.shape[1], mask_id, generator, xt=xt, **per_gap)
            samples, calls[0] = result.samples, calls[0] + result.nfe
        nelbo = estimate(samples, counted, mask_id, generator, draws=NELBO_DRAWS)  # (n,) nats
        n_chars = first_pad(samples, pad_id) + 1 if pad_id is not None else torch.full((n,), len(row))
        tried[g] = (samples, nelbo / n_chars)
    scores = torch.stack([per for _, per in tried.values()])  # (G, n)
    best = scores.argmin(0).tolist()  # per row, the index of its best length
    fills = [tried[lengths[b]][0][i] for i, b in enumerate(best)]  # rows may differ in length (text)
    return fills, scores.min(0).values, tried, calls[0]


def first_pad(samples, pad_id):
    """(n,) index of each row's first PAD: the name's length (L when there is none)."""
    is_pad = samples == pad_id
    return torch.where(is_pad.any(1), is_pad.float().argmax(1), samples.shape[1])


# ---------------------------------------------------------------- long text in blocks
def sample_text(denoise, sampler, n, n_chars, block_size, mask_id, generator, prompt=None,
                block_chars=None, steps=None, **kw):
    """n texts of n_chars new characters, block by block (SPEC 6): each block is conditioned on
    the end of the text so far, context + new block <= block_size. The first block fills the
    window; later blocks add block_chars (default half a window). `steps` are per block_chars
    characters; a block of another size gets proportionally many (at least 1).
    Returns (ids (n, prompt + n_chars), total NFE, [(start of window, Sampled) per block]).
    A block-diffusion sampler (blockwise) writes text of any length itself: one call, `steps` per block."""
    text = torch.empty((n, 0), dtype=torch.long) if prompt is None else prompt.expand(n, -1).clone()
    if getattr(sampler, "block_len", 0):
        xt = torch.cat([text, torch.full((n, n_chars), mask_id)], dim=1)
        result = sampler(denoise, n, xt.shape[1], mask_id, generator, xt=xt, **kw,
                         **({} if steps is None else dict(steps=steps)))
        return result.samples, result.nfe, [(0, result)]
    block_chars = block_chars or block_size // 2
    made, nfe, blocks = 0, 0, []
    while made < n_chars:
        new = min(n_chars - made, block_size - min(text.shape[1], block_size - block_chars))
        context = min(text.shape[1], block_size - new)
        xt = torch.cat([text[:, text.shape[1] - context:], torch.full((n, new), mask_id)], dim=1)
        if steps is not None:
            kw["steps"] = max(1, round(steps * new / block_chars))
        result = sampler(denoise, n, xt.shape[1], mask_id, generator, xt=xt, **kw)
        blocks.append((text.shape[1] - context, result))
        text = torch.cat([text, result.samples[:, context:]], dim=1)
        made, nfe = made + new, nfe + result.nfe
    return text, nfe, blocks


# ---------------------------------------------------------------- the AR twin, with a KV cache
@torch.no_grad()
def generate_ar(model, prefix, n_new, generator, bos_id, temperature=1.0, top_k=None, top_p=None,
                kv_cache=True, stop_id=None, device="cpu", dtype="float32"):
    """Append n_new tokens to prefix (n, P), one network call each. The twin reads a start token
    (bos_id, as in training: diffusion.ar_inputs) then the window of text; when start + window
    would pass block_size, the window restarts from the last block_size // 2 tokens. With
    kv_cache, keys and values of the window are kept and only the new token goes through the
    network; the contexts are the same as without it, so the samples are too.
    stop_id (names: PAD) ends a row; generation stops when every row has ended. dtype: 'bfloat16'
    runs the network under bf16 autocast, with a bf16 cache (the keys and values are bf16 there).
    Returns (ids (n, P + n_new), NFE)."""
    n, block_size = prefix.shape[0], model.config.block_size
    out, start, cached, cache, nfe = prefix.clone(), 0, 0, None, 0
    bos = torch.full((n, 1), bos_id, dtype=torch.long)
    with devices.autocast(device, dtype):
        for _ in range(n_new):
            if 1 + out.shape[1] - start > block_size:  # the start token and the window no longer fit
                start, cached = out.shape[1] - block_size // 2, 0  # slide; the cache is rebuilt
            window = torch.cat([bos, out[:, start:]], dim=1)  # (n, 1 + W)
            if kv_cache:
                if cache is None:
                    cache = model.new_kv_cache(n, device, devices.torch_dtype(dtype))
                logits = model(window[:, cached:].to(device), kv_cache=cache, start_pos=cached)[:, -1]
                cached = window.shape[1]
            else:
                logits = model(window.to(device))[:, -1]  # (n, n_out)
            nfe += 1
            out = torch.cat([out, draw(logits, generator, temperature, top_k, top_p)[:, None]], dim=1)
            if stop_id is not None and (out[:, prefix.shape[1]:] == stop_id).any(1).all():
                break
    if stop_id is not None:  # what follows a row's end is PAD, as in the training data
        ended = (out[:, prefix.shape[1]:] == stop_id).long().cumsum(1) > 0
        out[:, prefix.shape[1]:] = out[:, prefix.shape[1]:].masked_fill(ended, stop_id)
        out = torch.cat([out, torch.full((n, prefix.shape[1] + n_new - out.shape[1]), stop_id)], dim=1)
    return out, nfe


# ---------------------------------------------------------------- putting it together
class Denoiser:
    """A model as a sampler's denoiser: host tensors in (ids (n, L), and t or x0 where the process
    reads them), host float logits (n, L, V-1) out, run on `device` in the precision `dtype`
    (devices.precision). Block diffusion's sampler also asks it for a KV cache and its window."""

    def __init__(self, model, device, dtype="float32"):
        self.model, self.device, self.dtype, self.config = model, device, dtype, model.config

    @torch.no_grad()
    def __call__(self, x, *args, **kwargs):
        on_device = lambda v: v.to(self.device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        with devices.autocast(self.device, self.dtype):
            logits = self.model(on_device(x), *map(on_device, args), **{k: on_device(v) for k, v in kwargs.items()})
        return logits.float().cpu()

    def new_kv_cache(self, n):
        return self.model.new_kv_cache(n, self.device, devices.torch_dtype(self.dtype))


def make_denoiser(model, device, dtype="float32"):
    """The model as a sampler's denoiser (Denoiser): CPU ids (n, L) -> CPU float logits (n, L, V-1),
    run on `device` in the precision `dtype` (devices.precision)."""
    return Denoiser(model, device, dtype)


def checkpoint_precision(ckpt, device):
    """The precision a checkpoint was trained in, where `device` has it, else float32: scores and
    samples then match the training run's own (checkpoints older than this field: 'auto')."""
    try:
        return devices.precision(device, ckpt["config"].get("dtype", "auto"))
    except ValueError:  # trained in bf16 on a GPU that has it; this one does not
        return "float32"


def default_checkpoint(dataset, ar=False):
    """out/<dataset>/ckpt.pt (ckpt_ar.pt for the AR twin; in a folder with no ckpt.pt, its block-
    diffusion checkpoint ckpt_block<B>.pt) once you have trained one there; before that, the committed
    copy in weights/<dataset>/, so that sampling works straight after a clone."""
    def pick(folder):
        if ar or (folder / "ckpt.pt").is_file():
            return folder / ("ckpt_ar.pt" if ar else "ckpt.pt")
        blocks = sorted(folder.glob("ckpt_block*.pt"))
        return blocks[0] if blocks else folder / "ckpt.pt"
    trained, committed = pick(OUT_DIR / Path(dataset).stem), pick(WEIGHTS_DIR / Path(dataset).stem)
    return committed if committed.is_file() and not trained.is_file() else trained


def load_or_exit(path, device, causal, hint):
    """(model, checkpoint, device) from a checkpoint of the expected kind (AR twin if causal), or
    one sentence and exit 1; `hint` says what to do when the kind is wrong. The model is put on
    `device`; device None means the default for the checkpoint's dataset (devices.default_device)."""
    if device is not None and (problem := devices.device_problem(device)):
        sys.exit(f"error: {problem}")
    try:
        model, ckpt = load_checkpoint(path)
    except CheckpointError as err:
        sys.exit(f"error: {err}")
    if model.config.time_input:  # uniform or Gaussian noise: sampled by uniform.py / gaussian.py, not here
        noise = ckpt["config"].get("noise", "uniform or Gaussian")
        sys.exit(f"error: {path} holds a {noise}-noise model, which this script cannot sample or score (it "
                 f"handles masked diffusion and the AR twin); train.py --noise {noise} prints its samples, "
                 f"bench/names.py --noise all scores them, and lesson 4 animates them.")
    if model.config.causal != causal:
        sys.exit(f"error: {path} holds {'an AR' if model.config.causal else 'a diffusion'} model; {hint}.")
    device = device or devices.default_device(ckpt["config"].get("dataset", "names"))
    return model.to(device), ckpt, device


def parse_range(text):
    """'2-8' -> [2, ..., 8]; '5' -> [5]; '0-3' includes the empty gap."""
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 0 <= lo <= hi:
        raise ValueError
    return list(range(lo, hi + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="names", help="names, shakespeare, or the PATH trained on: "
                        "picks out/<its stem>/, as train.py does")
    parser.add_argument("--ckpt", help="checkpoint to sample from (default out/<dataset>/ckpt.pt; "
                        "ckpt_ar.pt with --ar)")
    parser.add_argument("--sampler", default=SAMPLER, choices=sorted(SAMPLERS), help="how masks turn into characters")
    parser.add_argument("--steps", type=cli.count(1, 100_000), help="sampler steps (per --block-chars characters for text, "
                        f"per block for block diffusion); default: one per position ({BLOCK_STEPS} for block diffusion's "
                        "ancestral sampler)")
    parser.add_argument("--tau", type=cli.probability, default=TAU, help="threshold sampler: confidence that unmasks a position")
    parser.add_argument("--temperature", type=cli.temperature, default=1.0, help="sampling temperature")
    parser.add_argument("--top-k", type=cli.count(0), default=0, help="draw only among the k likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=cli.probability, default=1.0, help="draw only from the smallest set holding this mass")
    parser.add_argument("--samples", type=cli.count(1, 100_000), help=f"names ({NAMES}) or texts (1) to generate")
    parser.add_argument("--chars", type=cli.count(1, 10_000_000), default=CHARS, help="text: characters to generate")
    parser.add_argument("--block-chars", type=cli.count(1), help="text: new characters per block after the first "
                        "(default half a window)")
    parser.add_argument("--prompt", default="", help="fixed start: a name's first letters, or text to continue")
    parser.add_argument("--infill", help="template to complete; --blank characters mark the positions to fill")
    parser.add_argument("--blank", help="the character that marks a blank in --infill (default: MASK's own symbol)")
    parser.add_argument("--infill-lengths", help="variable-length infill: try every gap length in A-B, keep the "
                        "best NELBO per character")
    parser.add_argument("--ar", action="store_true", help="sample from the autoregressive twin instead")
    parser.add_argument("--no-kv-cache", action="store_true", help="AR: recompute the whole window every token")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed for every random draw")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu for names, else the best found)")
    parser.add_argument("--quiet", action="store_true", help="print only the samples and the cost line")
    args = parser.parse_args(argv)
    if args.ar and args.infill:
        parser.error("the AR twin can only continue a prefix: use --prompt, or drop --ar to infill")
    if args.sampler == "threshold" and args.steps is not None:
        parser.error("the threshold sampler takes no --steps: it stops when no mask is left (set --tau)")
    if args.infill_lengths and not args.infill:
        parser.error("--infill-lengths needs a template with one gap: --infill 'ma_n'")
    try:
        lengths = parse_range(args.infill_lengths) if args.infill_lengths else None
    except ValueError:
        parser.error(f"--infill-lengths must look like 2-8 (lengths from 0 up), not {args.infill_lengths!r}")

    if args.device and (problem := devices.device_problem(args.device)):
        parser.error(problem)

    path = Path(args.ckpt) if args.ckpt else default_checkpoint(args.dataset, args.ar)
    model, ckpt, args.device = load_or_exit(path, args.device, args.ar,
                                            f"{'add' if not args.ar else 'drop'} --ar or pick the other checkpoint")
    try:
        run(args, model, ckpt, lengths)
    except ValueError as err:  # bad prompts, templates and step counts: one sentence each
        sys.exit(f"error: {err}")


def setting(args, model, ckpt):
    """What every path of run() needs, read from the flags and the checkpoint; ValueError for a prompt
    that does not fit."""
    itos, config = ckpt["itos"], ckpt["config"]
    is_names = config.get("kind") == "names"
    mask_id = config.get("mask_id", len(itos) - 1)
    block_size, stoi = model.config.block_size, {c: i for i, c in enumerate(itos)}
    prompt = encode_prompt(args.prompt, stoi, mask_id)
    limit = block_size - 1 if is_names else block_size  # a name keeps room for its end (PAD)
    if len(prompt) > limit:
        raise ValueError(f"the prompt has {len(prompt)} characters; the window holds {limit}.")
    dtype = checkpoint_precision(ckpt, args.device)
    return argparse.Namespace(
        itos=itos, stoi=stoi, is_names=is_names, mask_id=mask_id,
        pad_id=config.get("pad_id", 0) if is_names else None, bos_id=config.get("bos_id", mask_id),
        block_size=block_size, limit=limit, prompt=prompt, dtype=dtype, n=args.samples or (NAMES if is_names else 1),
        generator=torch.Generator().manual_seed(args.seed), schedule=config.get("schedule", "linear"),
        kw=dict(temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p),
        denoise=make_denoiser(model, args.device, dtype), samplers=samplers_for(model),
        estimate=estimate_for(model), block_len=model.config.block_len)


def block_steps(block_len, sampler):
    """A block-diffusion model's default steps per block: BLOCK_STEPS per position for the ancestral
    sampler (it calls the network only after a step unmasked something), one per position for the
    confidence sampler (it unmasks at least one per step)."""
    return block_len * (BLOCK_STEPS if sampler == "ancestral" else 1)


def pick_sampler(args, job, masked):
    """The sampler and its arguments. Steps default to one per masked position; for block diffusion
    to block_steps()."""
    if args.sampler == "threshold":
        return job.samplers["threshold"], dict(job.kw, tau=args.tau)
    steps = args.steps or (block_steps(job.block_len, args.sampler) if job.block_len else masked)
    return job.samplers[args.sampler], dict(job.kw, steps=steps, schedule=job.schedule)


def run(args, model, ckpt, lengths):
    """Sample as the flags say and print the samples and their cost; ValueError on bad input."""
    job = setting(args, model, ckpt)
    if not args.quiet:
        kind = "AR twin" if args.ar else f"block diffusion (blocks of {job.block_len})" if job.block_len else "diffusion model"
        print(f"{kind}: {model.num_params():,} parameters, block size {job.block_size}, trained {ckpt['step']} steps; "
              f"sampling on {args.device}")
        if ckpt.get("weights_only_copy"):
            print("(the committed weights; torch_version/train.py trains your own, which are used from then on)")
    start, scores = time.time(), None
    if args.ar:
        ids, nfe, n_new, result = run_ar(args, model, job)
    elif args.infill is not None and lengths:
        ids, nfe, n_new, result, scores = run_variable_infill(args, job, lengths)
    elif args.infill is not None:
        ids, nfe, n_new, result = run_infill(args, job)
    elif job.is_names:
        ids, nfe, n_new, result = run_names(args, job)
    else:
        ids, nfe, n_new, result = run_text(args, job)
    print_samples(args, job, ids, result, scores)
    seconds = time.time() - start
    print(f"{nfe} network evaluations, {n_new:,} characters in {seconds:.2f} s "
          f"({n_new / max(seconds, 1e-9):,.0f} characters/s)")


def run_ar(args, model, job):
    """The AR twin, one token per network call."""
    new = job.block_size - len(job.prompt) if job.is_names else args.chars
    ids, nfe = generate_ar(model, job.prompt.expand(job.n, -1), new, job.generator, job.bos_id, **job.kw,
                           kv_cache=not args.no_kv_cache, stop_id=job.pad_id, device=args.device, dtype=job.dtype)
    return ids, nfe, job.n * new, None


def template_of(args, job):
    """The --infill template as ids, its blanks MASK; ValueError when it cannot be one."""
    blank = args.blank or job.itos[job.mask_id]
    if len(blank) != 1:
        raise ValueError(f"--blank must be one character, not {blank!r}.")
    template = encode_prompt(args.infill, job.stoi, job.mask_id, blank)
    if not (template == job.mask_id).any():
        raise ValueError(f"the template {args.infill!r} has no blank ({blank!r}) to fill.")
    if len(template) > job.limit:
        raise ValueError(f"the template has {len(template)} characters; the window holds {job.limit}.")
    return template


def run_infill(args, job):
    """Fill the template's blanks (a block-diffusion model sees the blocks before a blank, not after)."""
    template = template_of(args, job)
    xt = torch.full((job.n, job.block_size if job.is_names else len(template)), job.pad_id if job.is_names else job.mask_id)
    xt[:, :len(template)] = template
    sampler, skw = pick_sampler(args, job, int((template == job.mask_id).sum()))
    result = sampler(job.denoise, job.n, xt.shape[1], job.mask_id, job.generator, xt=xt, **skw)
    return result.samples, result.nfe, int((xt == job.mask_id).sum()), result


def run_variable_infill(args, job, lengths):
    """Try every gap length, keep the best NELBO per character (fill_variable)."""
    template = template_of(args, job)
    if len(gaps(template, job.mask_id)) != 1:
        raise ValueError("--infill-lengths needs a template with exactly one run of blanks.")
    sampler, skw = pick_sampler(args, job, None)  # steps: --steps, or one per blank of each gap length (None)
    ids, scores, tried, nfe = fill_variable(job.denoise, template, lengths, job.n, job.block_size, job.mask_id,
                                            job.generator, sampler, job.pad_id, job.estimate, **skw)
    if not args.quiet:
        for g, (fills, per) in tried.items():
            print(f"gap of {g}: NELBO {per.mean():.3f} nats/char on average, e.g. "
                  + " ".join(show(f, job.itos, job.is_names) for f in fills[:6]))
    return ids, nfe, job.n * sum(lengths), None, scores


def run_names(args, job):
    """Names, maybe starting with a prompt."""
    xt = torch.full((job.n, job.block_size), job.mask_id)
    xt[:, :len(job.prompt)] = job.prompt
    sampler, skw = pick_sampler(args, job, job.block_size - len(job.prompt))
    result = sampler(job.denoise, job.n, job.block_size, job.mask_id, job.generator, xt=xt, **skw)
    return result.samples, result.nfe, job.n * (job.block_size - len(job.prompt)), result


def run_text(args, job):
    """Long text: window by window for the masked model, block by block for block diffusion."""
    block_chars = args.block_chars or job.block_size // 2
    if not 1 <= block_chars <= job.block_size:
        raise ValueError(f"--block-chars must be between 1 and the block size {job.block_size}, not {block_chars}.")
    sampler, skw = pick_sampler(args, job, block_chars)
    per = job.block_len or block_chars  # the positions a step count is for
    if args.sampler == "confidence" and skw["steps"] > per:
        raise ValueError(f"the confidence sampler unmasks at least one position per step, so --steps must be "
                         f"between 1 and the {per} characters of a block, not {skw['steps']}.")
    ids, nfe, _ = sample_text(job.denoise, sampler, job.n, args.chars, job.block_size, job.mask_id, job.generator,
                              prompt=job.prompt if len(job.prompt) else None, block_chars=block_chars, **skw)
    return ids, nfe, job.n * args.chars, None


def print_samples(args, job, ids, result, scores):
    """The samples (names on one line, texts one after another), and a name's trajectory."""
    texts = [show(row, job.itos, job.is_names) for row in ids]
    if scores is not None:  # each fill with its NELBO per character, the score that chose its gap length
        texts = [f"{text} ({score:.3f})" for text, score in zip(texts, scores.tolist())]
    if job.is_names:
        print("samples:", " ".join(texts))
        if any(text.split(" (")[0].endswith("*") for text in texts):
            print(f"(* invalid: the name ends ('{job.itos[0]}', PAD) before its last letter, or has no letter)")
    else:
        for i, text in enumerate(texts):
            print(f"---------------- sample {i + 1}\n{text}")
    if job.is_names and result is not None and not args.quiet:
        print(f"denoising trajectory of the first sample ('{job.itos[-1]}' is MASK, '{job.itos[0]}' is PAD):")
        for t, xt in zip(result.times, result.trajectory):
            print(f"t={t:.2f} {decode(xt[0], job.itos)}")


def show(ids, itos, is_names):
    """A sample as text; a name loses its trailing PADs only (SPEC 8: nothing else is hidden), and an
    invalid one (a PAD before a letter, or no letter at all) is marked with a '*'."""
    if not is_names:
        return decode(ids, itos)
    name = decode(ids, itos).rstrip(itos[0])
    return name if name and itos[0] not in name else name + "*"


if __name__ == "__main__":
    cli.run(main)
