"""Masked diffusion for names in NumPy, with a denoiser and a training run good enough to study.

Changes from minimal (the diffusion loop of docs/algorithm.md is the same; what is new is
a deeper denoiser and the engineering a real run needs):
- denoiser: the one-hot x position input feeds a residual stream of width N_EMBD, then
  N_LAYER pre-norm blocks h + W2 relu(W1 LN(h)), a final LayerNorm and a linear head
  (minimal: one hidden layer). Backprop through LayerNorm is written out by hand too.
- training: Adam with linear warmup and cosine decay (minimal: linear decay), the gradient
  clipped to a global norm of GRAD_CLIP, the held-out NELBO measured every EVAL_EVERY
  steps, the best model saved with np.savez (--resume continues from it, exactly).
- sampling: sample_confidence (MaskGIT style) beside the ancestral sampler, and
  sample_metrics (valid / copied / new shares, distance of the length distributions).
- plots of every stage: NELBO curves, schedules, forward and reverse process, temperatures,
  lengths (pure/plots.py; matplotlib, only imported when plotting).
Everything else (tokens, forward process, loss, held-out estimator, ancestral sampler) is
copied from minimal on purpose and kept identical: tests/test_cross_tier.py checks that.

    python3 pure/train_pure.py                 # ~1.5 minutes on 2 CPU cores; plots in pure/out/
    python3 pure/train_pure.py --resume        # continue from pure/out/ckpt.npz
    python3 pure/train_pure.py --help
"""
import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `data` imports from any folder
from common import cli  # noqa: E402  (argument types shared by every script)
from common.files import atomic_write, output_problem  # noqa: E402
from common.metrics import name_of, sample_metrics  # noqa: E402,F401  (SPEC 5's sample metrics, shared)
from data.fetch import DatasetError, load_names, split_names  # noqa: E402

BLOCK_SIZE = 16        # L: the longest name (15) plus at least one PAD
# Small and long: the NELBO gradient is noisy (weights 1/t), so for the same CPU time many steps
# of a small denoiser beat fewer steps of a big one (width 256 or inner 512 scored worse here).
N_EMBD = 128           # width of the residual stream
N_HIDDEN = 128         # width inside each residual block
N_LAYER = 2            # residual blocks
BATCH_SIZE = 256       # names per training step
STEPS = 12000          # training steps
LEARNING_RATE = 2e-3   # Adam's peak step size
WARMUP = 100           # steps of linear warmup from 0 to LEARNING_RATE
MIN_LR = 1e-4          # the cosine decay ends here
GRAD_CLIP = 1.0        # the gradient is rescaled when its global norm exceeds this
EPS = 1e-3             # t is clipped to [EPS, 1] so the weight 1/t stays finite
SCHEDULE = "linear"    # alpha(t) = 1 - t; "cosine" is the other choice (SPEC 2)
SAMPLE_STEPS = 32      # steps of the samplers
EVAL_DRAWS = 4         # random mask sets per (name, k) in the final held-out NELBO
EVAL_EVERY = 500       # steps between held-out measurements (and checkpoints)
EVAL_NAMES = 3         # during training, every 3rd held-out name (1,068) with one draw
METRIC_SAMPLES = 1000  # names generated to measure the sample metrics

# ---------------------------------------------------------------- data and tokens
PAD, MASK = ".", "_"   # shown as themselves; PAD ends a name, MASK is the noise


def build_vocab(words):
    """PAD is id 0, the letters follow, MASK is the last id (the denoiser never outputs it)."""
    itos = [PAD] + sorted(set("".join(words))) + [MASK]
    return {c: i for i, c in enumerate(itos)}, itos


def encode(words, stoi):
    """List of names -> (N, BLOCK_SIZE) int array, each name padded with PAD."""
    return np.array([[stoi[c] for c in w.ljust(BLOCK_SIZE, PAD)] for w in words])


def decode(ids, itos):
    """Keeps PAD and MASK visible: stripping them would hide invalid samples (SPEC 8)."""
    return "".join(itos[i] for i in ids)


# ---------------------------------------------------------------- forward process
def alpha(t, schedule=SCHEDULE):
    """Chance that a token is still clean at time t: alpha(0) = 1, alpha(1) = 0."""
    return 1 - t if schedule == "linear" else np.cos(np.pi * t / 2)


def weight(t, schedule=SCHEDULE):
    """ELBO weight w(t) = -alpha'(t) / (1 - alpha(t))."""
    if schedule == "linear":
        return 1 / t
    return (np.pi / 2) * np.sin(np.pi * t / 2) / (1 - np.cos(np.pi * t / 2))


def sample_times(batch_size, rng):
    """Antithetic times: one uniform u per batch, spread evenly over (EPS, 1]."""
    u = rng.random()
    return EPS + (1 - EPS) * ((u + np.arange(batch_size) / batch_size) % 1)


def corrupt(x0, t, mask_id, rng, schedule=SCHEDULE):
    """Mask each position independently with probability 1 - alpha(t). (B, L) -> (B, L)."""
    mask = rng.random(x0.shape) < (1 - alpha(t, schedule))[:, None]
    return np.where(mask, mask_id, x0), mask


# ---------------------------------------------------------------- the denoiser: a residual MLP
def init_params(vocab_size, rng, dtype=np.float32):
    n_embd, n_hidden, n_layer = N_EMBD, N_HIDDEN, N_LAYER
    n_in, n_out = BLOCK_SIZE * vocab_size, BLOCK_SIZE * (vocab_size - 1)  # no MASK output
    normal = lambda std, *shape: (rng.standard_normal(shape) * std).astype(dtype)  # noqa: E731
    params = {  # W_in has one row per (position, token): a learned embedding for each position
        "W_in": normal(1 / np.sqrt(BLOCK_SIZE), n_in, n_embd),  # L rows summed: unit-scale stream
        "b_in": np.zeros(n_embd, dtype),
    }
    for i in range(n_layer):
        params[f"ln{i}.g"], params[f"ln{i}.b"] = np.ones(n_embd, dtype), np.zeros(n_embd, dtype)
        params[f"W1.{i}"] = normal(np.sqrt(2 / n_embd), n_embd, n_hidden)  # He init for ReLU
        params[f"b1.{i}"] = np.zeros(n_hidden, dtype)
        params[f"W2.{i}"] = normal(np.sqrt(1 / (n_hidden * n_layer)), n_hidden, n_embd)  # blocks add up
        params[f"b2.{i}"] = np.zeros(n_embd, dtype)
    params["lnf.g"], params["lnf.b"] = np.ones(n_embd, dtype), np.zeros(n_embd, dtype)
    params["W_out"] = normal(0.01, n_embd, n_out)  # start near uniform
    params["b_out"] = np.zeros(n_out, dtype)
    return params


def layer_norm(x, g, b, eps=1e-5):
    """Normalise each row to mean 0, variance 1, then scale and shift. (B, C) -> (B, C).
    Why LayerNorm: it keeps every block's input at unit scale however the stream grows,
    per example, so it behaves the same in training and at evaluation (BatchNorm would not)."""
    rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)  # (B, 1)
    xhat = (x - x.mean(-1, keepdims=True)) * rstd
    return xhat * g + b, (xhat, rstd)


def layer_norm_backward(dy, g, cache):
    xhat, rstd = cache
    dg = (dy * xhat).sum(0)
    db = dy.sum(0)
    dxhat = dy * g
    # xhat depends on x through the mean and the variance too: remove those two directions
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dg, db


def forward(params, xt):
    """xt (B, L) -> logits (B, L, V-1) over the real tokens, and what backward needs."""
    B, L = xt.shape
    V = params["W_in"].shape[0] // L
    n_layer = sum(k.startswith("W1.") for k in params)
    X = np.zeros((B, L * V), params["W_in"].dtype)
    X[np.arange(B)[:, None], np.arange(L) * V + xt] = 1  # one-hot of every position, flattened
    h = X @ params["W_in"] + params["b_in"]  # (B, N_EMBD): the residual stream
    blocks = []
    for i in range(n_layer):
        a, ln = layer_norm(h, params[f"ln{i}.g"], params[f"ln{i}.b"])
        r = np.maximum(a @ params[f"W1.{i}"] + params[f"b1.{i}"], 0)  # (B, N_HIDDEN), ReLU
        h = h + r @ params[f"W2.{i}"] + params[f"b2.{i}"]  # the block adds to the stream
        blocks.append((a, ln, r))
    a, ln = layer_norm(h, params["lnf.g"], params["lnf.b"])
    logits = a @ params["W_out"] + params["b_out"]  # (B, L * (V-1))
    return logits.reshape(B, L, V - 1), (X, blocks, a, ln)


def backward(params, dlogits, cache):
    """Chain rule through forward(), one gradient per line, last layer first."""
    X, blocks, a, ln = cache
    grads = {}
    dZ = dlogits.reshape(len(X), -1)  # (B, L * (V-1))
    grads["W_out"] = a.T @ dZ
    grads["b_out"] = dZ.sum(0)
    da = dZ @ params["W_out"].T
    dh, grads["lnf.g"], grads["lnf.b"] = layer_norm_backward(da, params["lnf.g"], ln)
    for i in reversed(range(len(blocks))):
        a, ln, r = blocks[i]
        # h_out = h_in + block(h_in): dh flows on unchanged through the skip, and through the block
        grads[f"W2.{i}"] = r.T @ dh
        grads[f"b2.{i}"] = dh.sum(0)
        dr = dh @ params[f"W2.{i}"].T
        dz = dr * (r > 0)  # ReLU passes gradient where it was active
        grads[f"W1.{i}"] = a.T @ dz
        grads[f"b1.{i}"] = dz.sum(0)
        da = dz @ params[f"W1.{i}"].T
        dh_block, grads[f"ln{i}.g"], grads[f"ln{i}.b"] = layer_norm_backward(da, params[f"ln{i}.g"], ln)
        dh = dh + dh_block
    grads["W_in"] = X.T @ dh
    grads["b_in"] = dh.sum(0)
    return grads


# ---------------------------------------------------------------- the loss: the NELBO
def log_softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def nelbo_loss(logits, x0, mask, t, schedule=SCHEDULE):
    """Per-token NELBO of a batch, sum of w(t) * NLL over masked positions / (B * L),
    and its gradient with respect to the logits."""
    logp = log_softmax(logits)  # (B, L, V-1)
    nll = -np.take_along_axis(logp, x0[..., None], -1)[..., 0]  # (B, L)
    w = weight(t, schedule)[:, None] * mask  # only masked positions count; clean ones give 0
    loss = (w * nll).sum() / x0.size
    dlogits = np.exp(logp)
    np.put_along_axis(dlogits, x0[..., None], np.take_along_axis(dlogits, x0[..., None], -1) - 1, -1)
    return loss, dlogits * (w / x0.size)[..., None].astype(logits.dtype)


def adam(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam, in place: running means of each gradient (m) and of its square (v)."""
    state["step"] = step = state.get("step", 0) + 1
    lr_t = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)  # bias correction of m and v
    for k, g in grads.items():
        m = state.setdefault(f"m_{k}", np.zeros_like(g))
        v = state.setdefault(f"v_{k}", np.zeros_like(g))
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g * g - v)
        params[k] -= lr_t * m / (np.sqrt(v) + eps)


def learning_rate(step, steps):
    """Linear warmup to LEARNING_RATE, then cosine decay to MIN_LR at the last step."""
    if step <= WARMUP:
        return LEARNING_RATE * step / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + (LEARNING_RATE - MIN_LR) * 0.5 * (1 + np.cos(np.pi * progress))


def clip_grads(grads, max_norm=GRAD_CLIP):
    """Rescale all gradients together so their global norm is at most max_norm.
    Why: a batch with a few tiny t (weight 1/t up to 1000) can give a gradient spike."""
    norm = np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm


# ---------------------------------------------------------------- checkpoints
class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one sentence that says what to do."""


def save_checkpoint(path, params, state, rng, config):
    """Everything a run needs to continue exactly: parameters, Adam's moments, the step, the
    history, the random generator's state and the config. Written to a temporary file, then
    renamed, so a crash mid-write never leaves a broken checkpoint."""
    arrays = {f"param.{k}": v for k, v in params.items()}
    arrays.update({f"adam.{k}": v for k, v in state.items() if k[:2] in ("m_", "v_")})
    meta = {"config": config, "step": state["step"], "best": state["best"], "history": state["history"],
            "rng": rng.bit_generator.state}  # numbers and strings: stored as JSON, loaded without pickle
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))  # a file object: np.savez adds no suffix


def load_checkpoint(path, config):
    """-> params, Adam state (with step, best, history), RNG state. Refuses another config."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError):  # truncated, empty, not
        #   a zip of arrays, pickled objects, or no meta
        raise CheckpointError(f"{path} is not a readable checkpoint of this tier; "
                              f"run without --resume to start afresh.") from None
    if not isinstance(meta, dict) or not {"config", "step", "best", "history", "rng"} <= set(meta):
        raise CheckpointError(f"{path} is not a checkpoint of this tier (its record of the run is incomplete); "
                              f"run without --resume to start afresh.")
    if meta["config"] != config:
        saved = meta["config"]
        diff = ", ".join(f"{k} {saved.get(k)} vs {config.get(k)}" for k in sorted(set(saved) | set(config))
                         if saved.get(k) != config.get(k))
        raise CheckpointError(f"{path} was trained with another config ({diff}, checkpoint vs now); "
                              f"run without --resume, or point --out at a matching run.")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param.")}
    state = {k[5:]: v for k, v in arrays.items() if k.startswith("adam.")}
    state.update(step=meta["step"], best=meta["best"], history=meta["history"])
    return params, state, meta["rng"]


# ---------------------------------------------------------------- training
def train(params, state, data, steps, rng, mask_id, held=None, ckpt=None, stop=None, quiet=False):
    """Train from state["step"] up to `steps` (or stop early at `stop`, as if interrupted).
    held = (held_data, held_chars) to measure every EVAL_EVERY steps; ckpt = (path, config):
    the model is saved each time the held-out NELBO improves."""
    state.setdefault("step", 0), state.setdefault("best", float("inf")), state.setdefault("history", [])
    running, n_running, start = 0.0, 0, time.time()
    for step in range(state["step"] + 1, min(steps, stop or steps) + 1):
        x0 = data[rng.integers(0, len(data), BATCH_SIZE)]  # (B, L)
        t = sample_times(BATCH_SIZE, rng)
        xt, mask = corrupt(x0, t, mask_id, rng)
        logits, cache = forward(params, xt)
        loss, dlogits = nelbo_loss(logits, x0, mask, t)
        grads = backward(params, dlogits, cache)
        clip_grads(grads)
        adam(params, grads, state, learning_rate(step, steps))
        running += loss * x0.size / ((x0 != 0).sum() + BATCH_SIZE)  # per character, as evaluated
        n_running += 1
        if step % EVAL_EVERY == 0 or step == steps:
            ms, held_nelbo = 1000 * (time.time() - start) / n_running, np.nan  # time of the training steps
            if held is not None:  # the same names and masks every time: differences are the model's
                denoise = lambda xt: forward(params, xt)[0]  # noqa: E731
                nelbo = estimate_nelbo(held[0], denoise, mask_id, np.random.default_rng(0), draws=1)
                held_nelbo = per_char(nelbo, held[1])[0]
            state["history"].append([step, float(running / n_running), float(held_nelbo)])
            saved = ckpt is not None and held_nelbo < state["best"]
            if saved:
                state["best"] = held_nelbo
                save_checkpoint(ckpt[0], params, state, rng, ckpt[1])
            if not quiet:
                print(f"step {step:5d}/{steps}: train NELBO {running / n_running:.3f}, held-out NELBO "
                      f"{held_nelbo:.3f} nats/char (1 mask draw), {ms:.0f} ms/step{', saved' if saved else ''}")
            running, n_running, start = 0.0, 0, time.time()
    return params


# ---------------------------------------------------------------- evaluation: the held-out NELBO
def estimate_nelbo(x0, denoise, mask_id, rng, draws=EVAL_DRAWS):
    """Discrete form of the NELBO (SPEC 4), one value per sequence:
    sum over k = 1..L of (1/k) * NLL of a random set of k masked positions."""
    B, L = x0.shape
    total = np.zeros(B)
    for _ in range(draws):
        for k in range(1, L + 1):
            mask = rng.random((B, L)).argsort(1).argsort(1) < k  # k random positions per row
            logp = log_softmax(denoise(np.where(mask, mask_id, x0)).astype(np.float64))
            nll = -np.take_along_axis(logp, x0[..., None], -1)[..., 0]
            total += (nll * mask).sum(1) / k
    return total / draws


def per_char(nelbo, n_chars):
    """Total NELBO / total characters (SPEC 5), and its standard error (ratio estimator)."""
    r = nelbo.sum() / n_chars.sum()
    se = np.std(nelbo - r * n_chars, ddof=1) / np.sqrt(len(nelbo)) / n_chars.mean()
    return r, se


# ---------------------------------------------------------------- sampling
def draw(logits, rng, temperature=1.0):
    """One token per position from softmax(logits / T), by inverse CDF on float64 uniforms:
    float32 draws would silently truncate rare tokens (SPEC 6)."""
    p = np.exp(log_softmax(logits.astype(np.float64) / temperature))
    cdf = p.cumsum(-1)
    return np.minimum((rng.random(cdf.shape[:-1] + (1,)) > cdf).sum(-1), p.shape[-1] - 1)


def sample_ancestral(denoise, n, mask_id, rng, steps=SAMPLE_STEPS, temperature=1.0, xt=None):
    """Reverse process from all MASK (or a given xt) on a uniform time grid 1 -> 0.
    Returns the samples (n, L) and the list of xt after every step."""
    xt = np.full((n, BLOCK_SIZE), mask_id) if xt is None else xt.copy()
    trajectory, logits = [xt.copy()], None
    times = np.linspace(1, 0, steps + 1)
    for t, s in zip(times[:-1], times[1:]):
        if logits is None:  # cache: the denoiser sees no time, so an unchanged xt gives the same logits
            logits = denoise(xt)
        p_unmask = (alpha(s) - alpha(t)) / (1 - alpha(t))  # 1 at s = 0: every mask is filled
        unmask = (xt == mask_id) & (rng.random(xt.shape) < p_unmask)
        if unmask.any():
            xt = np.where(unmask, draw(logits, rng, temperature), xt)  # clean positions never change
            logits = None
        trajectory.append(xt.copy())
    return xt, trajectory


def sample_confidence(denoise, n, mask_id, rng, steps=SAMPLE_STEPS, temperature=1.0, xt=None):
    """MaskGIT-style reverse process: each step draws a token for every masked position and
    keeps the most confident ones (highest probability of the drawn token), so that
    round(M * (1 - alpha(s))) masks remain (M: masks at the start), at least one fewer per step.
    Returns the samples (n, L) and the list of xt after every step."""
    xt = np.full((n, BLOCK_SIZE), mask_id) if xt is None else xt.copy()
    n_start = (xt == mask_id).sum(1)  # (n,) M, which is L unless a prompt is given
    trajectory = [xt.copy()]
    for s in np.linspace(1, 0, steps + 1)[1:]:
        masked = xt == mask_id  # (n, L)
        if masked.any():
            logits = denoise(xt)
            x = draw(logits, rng, temperature)  # (n, L) a proposal for every position
            logp = log_softmax(logits.astype(np.float64) / temperature)
            confidence = np.where(masked, np.take_along_axis(logp, x[..., None], -1)[..., 0], -np.inf)
            n_left = np.round(n_start * (1 - alpha(s))).astype(int)  # masks to keep after this step
            n_unmask = np.minimum(masked.sum(1), np.maximum(masked.sum(1) - n_left, 1))
            rank = (-confidence).argsort(1, kind="stable").argsort(1)  # 0 = most confident
            xt = np.where(rank < n_unmask[:, None], x, xt)  # unmasked positions rank last: never chosen
        trajectory.append(xt.copy())
    return xt, trajectory


# name_of and sample_metrics (valid, copied, new, length distance): common/metrics.py, imported above,
# the one definition every tier and tool scores its samples with.


# ---------------------------------------------------------------- plots
def make_plots(out, history, denoise, stoi, itos, train_words, samples, rng):
    """Six PNGs in `out` (pure/plots.py draws them; matplotlib is imported there, only when
    plotting, so the rest of the tier runs with NumPy alone). Returns their paths."""
    from types import SimpleNamespace
    from pure import plots
    tier = SimpleNamespace(**globals())  # this file's loop and constants, however it was imported
    return plots.make_plots(tier, out, history, denoise, stoi, itos, train_words, samples, rng)


# ---------------------------------------------------------------- putting it together
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=cli.count(1), default=STEPS, help="training steps")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed for every random draw")
    parser.add_argument("--samples", type=cli.count(1, 100_000), default=20, help="names to print")
    parser.add_argument("--temperature", type=cli.temperature, default=1.0, help="sampling temperature")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"),
                        help="folder for the checkpoint ckpt.npz and the plots (default pure/out/)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--no-plots", action="store_true", help="skip the plots (no matplotlib needed)")
    parser.add_argument("--quiet", action="store_true", help="print only the NELBO and the samples")
    parser.add_argument("--data-dir", help="folder holding names.txt (else DIFFUSION_DATA_DIR, else the shipped copy)")
    args = parser.parse_args(argv)
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401  (checked now, used at the end)
        except ImportError:
            parser.error("matplotlib is not installed: install it, or pass --no-plots")
    return args


def names_and_folder(args):
    """The names and the output folder, made; or one sentence and exit 1."""
    try:
        words = load_names(args.data_dir)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    if max(map(len, words)) >= BLOCK_SIZE:
        sys.exit(f"error: names must be shorter than BLOCK_SIZE = {BLOCK_SIZE} characters.")
    out = Path(args.out)
    if problem := output_problem(out):
        sys.exit(f"error: {problem}")
    out.mkdir(parents=True, exist_ok=True)
    return words, out


def main(argv=None):
    args = parse_args(argv)
    words, out = names_and_folder(args)
    ckpt = out / "ckpt.npz"
    rng = np.random.default_rng(args.seed)
    stoi, itos = build_vocab(words)
    mask_id = stoi[MASK]
    train_words, held_words = split_names(words)
    train_data, held_data = encode(train_words, stoi), encode(held_words, stoi)
    held_chars = np.array([len(w) + 1 for w in held_words])
    config = {"vocab": "".join(itos), "block_size": BLOCK_SIZE, "n_embd": N_EMBD, "n_hidden": N_HIDDEN,
              "n_layer": N_LAYER, "batch_size": BATCH_SIZE, "steps": args.steps, "lr": LEARNING_RATE,
              "warmup": WARMUP, "min_lr": MIN_LR, "grad_clip": GRAD_CLIP, "schedule": SCHEDULE,
              "eval_every": EVAL_EVERY}  # a checkpoint continues only a run with all of these the same
    params, state = init_params(len(itos), rng), {}
    if args.resume:
        if not ckpt.is_file():
            sys.exit(f"error: --resume needs a checkpoint at {ckpt} and there is none; "
                     f"run without --resume first.")
        try:
            params, state, rng.bit_generator.state = load_checkpoint(ckpt, config)
        except CheckpointError as err:
            sys.exit(f"error: {err}")
    say = (lambda *a: None) if args.quiet else print
    say(f"{len(words):,} names: {len(train_words):,} train, {len(held_words):,} held out; "
        f"vocabulary {len(itos)} ({''.join(itos)}), block size {BLOCK_SIZE}")
    say(f"denoiser: residual MLP, {N_LAYER} blocks of width {N_EMBD} (inner {N_HIDDEN}), "
        f"{sum(p.size for p in params.values()):,} parameters")
    if args.resume:
        say(f"resumed from {ckpt} at step {state['step']} (best held-out NELBO {state['best']:.3f})")

    start = time.time()
    held = (held_data[::EVAL_NAMES], held_chars[::EVAL_NAMES])
    try:
        train(params, state, train_data, args.steps, rng, mask_id, held, (ckpt, config), quiet=args.quiet)
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted at step {state['step']}" + (f"; --resume continues from the best "
                 f"checkpoint in {ckpt}" if ckpt.is_file() else ", before the first checkpoint"))
    params, best, _ = load_checkpoint(ckpt, config)  # evaluate and sample the best model, as saved
    say(f"trained to step {args.steps} in {time.time() - start:.1f} s; the best model (step {best['step']}, "
        f"held-out NELBO {best['best']:.3f} by the training-time estimate, 1 mask draw) is in {ckpt}")
    report(args, params, state, rng, stoi, itos, train_words, held_data, held_chars, out, say)


def report(args, params, state, rng, stoi, itos, train_words, held_data, held_chars, out, say):
    """The best model's held-out NELBO, samples of both samplers with their metrics, a trajectory, the plots."""
    mask_id = stoi[MASK]
    denoise = lambda xt: forward(params, xt)[0]  # noqa: E731
    nelbo = estimate_nelbo(held_data, denoise, mask_id, rng)
    nats, se = per_char(nelbo, held_chars)
    print(f"held-out NELBO: {nats:.4f} nats/char ({nats / np.log(2):.4f} bits/char) "
          f"+- {se:.4f} (standard error over {len(held_data):,} names; discrete form, {EVAL_DRAWS} mask draws)")

    n, samples = max(args.samples, METRIC_SAMPLES), {}
    for sampler in (sample_confidence, sample_ancestral):  # ancestral last: its samples are printed
        x, trajectory = sampler(denoise, n, mask_id, rng, temperature=args.temperature)
        samples[sampler.__name__] = [decode(s, itos) for s in x]
        m = sample_metrics(samples[sampler.__name__], train_words, train_words)
        say(f"{sampler.__name__} ({n:,} names, T={args.temperature}): valid {m['valid']:.1%}, "
            f"copied {m['copied']:.1%}, new {m['new']:.1%}, length TV distance {m['tv_length']:.3f}")
    print("samples:", " ".join(s.rstrip(PAD) for s in samples["sample_ancestral"][:args.samples]))
    say("denoising trajectory of the first sample ('_' is MASK, '.' is PAD):")
    for t, xt in zip(np.linspace(1, 0, SAMPLE_STEPS + 1), trajectory):
        say(f"t={t:.2f} {decode(xt[0], itos)}")
    if not args.no_plots:
        paths = make_plots(out, state["history"], denoise, stoi, itos, train_words, samples, rng)
        say(f"plots: {', '.join(paths)}")


if __name__ == "__main__":
    cli.run(main)
