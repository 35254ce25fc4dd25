"""Masked diffusion for names in one NumPy file: the complete algorithm.

What it teaches: text diffusion with an absorbing MASK state (docs/algorithm.md).
Noise a name by masking characters at random, train a denoiser to guess the masked
characters back, and score the model with the negative ELBO, an upper bound on
-log p(name) that is comparable to an autoregressive model's loss. Sampling starts
from all masks and unmasks a few characters per step.

The denoiser is a 2-layer MLP over the one-hot noisy name. Backprop and Adam are
written by hand, one gradient per line, so nothing is hidden in a library.

    python3 minimal/train_minimal.py              # ~25 s on 2 CPU cores
    python3 minimal/train_minimal.py --help

Changes from nothing: this is the first tier. pure/ and torch_version/ keep this
loop (same names, same order) and swap the denoiser.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `data` imports from any folder
from common import cli  # noqa: E402  (argument types shared by every script)
from data.fetch import DatasetError, load_names, split_names  # noqa: E402

BLOCK_SIZE = 16        # L: the longest name (15) plus at least one PAD
N_HIDDEN = 256         # width of the MLP's hidden layer
BATCH_SIZE = 256       # names per training step
STEPS = 3000           # training steps (about 20 s on 2 CPU cores)
LEARNING_RATE = 3e-3   # Adam's step size at the start; decays linearly to zero
EPS = 1e-3             # t is clipped to [EPS, 1] so the weight 1/t stays finite
SCHEDULE = "linear"    # alpha(t) = 1 - t; "cosine" is the other choice (SPEC 2)
SAMPLE_STEPS = 32      # steps of the ancestral sampler
EVAL_DRAWS = 4         # random mask sets per (name, k) in the held-out NELBO

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


# ---------------------------------------------------------------- the denoiser: a 2-layer MLP
def init_params(vocab_size, rng, dtype=np.float32):
    n_in, n_out = BLOCK_SIZE * vocab_size, BLOCK_SIZE * (vocab_size - 1)  # no MASK output
    return {
        "W1": (rng.standard_normal((n_in, N_HIDDEN)) / np.sqrt(BLOCK_SIZE)).astype(dtype),  # L ones per input
        "b1": np.zeros(N_HIDDEN, dtype),
        "W2": (rng.standard_normal((N_HIDDEN, n_out)) * 0.01).astype(dtype),  # start near uniform
        "b2": np.zeros(n_out, dtype),
    }


def forward(params, xt):
    """xt (B, L) -> logits (B, L, V-1) over the real tokens, and what backward needs."""
    B, L = xt.shape
    V = params["W1"].shape[0] // L
    X = np.zeros((B, L * V), params["W1"].dtype)
    X[np.arange(B)[:, None], np.arange(L) * V + xt] = 1  # one-hot of every position, flattened
    H = np.maximum(X @ params["W1"] + params["b1"], 0)  # (B, N_HIDDEN), ReLU
    logits = H @ params["W2"] + params["b2"]  # (B, L * (V-1))
    return logits.reshape(B, L, V - 1), (X, H)


def backward(params, dlogits, cache):
    """Chain rule through forward(), one gradient per line."""
    X, H = cache
    dZ2 = dlogits.reshape(len(X), -1)  # (B, L * (V-1))
    dW2 = H.T @ dZ2
    db2 = dZ2.sum(0)
    dH = dZ2 @ params["W2"].T
    dZ1 = dH * (H > 0)  # ReLU passes gradient where it was active
    dW1 = X.T @ dZ1
    db1 = dZ1.sum(0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


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


# ---------------------------------------------------------------- training
def train(params, data, steps, rng, mask_id, quiet=False):
    state, losses = {}, []
    for step in range(1, steps + 1):
        x0 = data[rng.integers(0, len(data), BATCH_SIZE)]  # (B, L)
        t = sample_times(BATCH_SIZE, rng)
        xt, mask = corrupt(x0, t, mask_id, rng)
        logits, cache = forward(params, xt)
        loss, dlogits = nelbo_loss(logits, x0, mask, t)
        adam(params, backward(params, dlogits, cache), state, LEARNING_RATE * (1 - (step - 1) / steps))
        losses.append(loss * x0.size / ((x0 != 0).sum() + BATCH_SIZE))  # per character, as evaluated
        if not quiet and (step % 500 == 0 or step == steps):
            print(f"step {step:5d}/{steps}: train NELBO {np.mean(losses[-500:]):.3f} nats/char")
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


# ---------------------------------------------------------------- putting it together
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=cli.count(1), default=STEPS, help="training steps")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed for every random draw")
    parser.add_argument("--samples", type=cli.count(1, 100_000), default=20, help="names to generate")
    parser.add_argument("--temperature", type=cli.temperature, default=1.0, help="sampling temperature")
    parser.add_argument("--quiet", action="store_true", help="print only the NELBO and the samples")
    parser.add_argument("--data-dir", help="folder holding names.txt (else DIFFUSION_DATA_DIR, else the shipped copy)")
    args = parser.parse_args(argv)
    try:
        words = load_names(args.data_dir)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    if max(map(len, words)) >= BLOCK_SIZE:
        sys.exit(f"error: names must be shorter than BLOCK_SIZE = {BLOCK_SIZE} characters.")
    rng = np.random.default_rng(args.seed)
    stoi, itos = build_vocab(words)
    mask_id = stoi[MASK]
    train_words, held_words = split_names(words)
    train_data, held_data = encode(train_words, stoi), encode(held_words, stoi)
    params = init_params(len(itos), rng)
    say = (lambda *a: None) if args.quiet else print
    say(f"{len(words):,} names: {len(train_words):,} train, {len(held_words):,} held out; "
        f"vocabulary {len(itos)} ({''.join(itos)}), block size {BLOCK_SIZE}")
    say(f"denoiser: 2-layer MLP, {sum(p.size for p in params.values()):,} parameters")

    start = time.time()
    train(params, train_data, args.steps, rng, mask_id, args.quiet)
    say(f"trained {args.steps} steps in {time.time() - start:.1f} s")

    denoise = lambda xt: forward(params, xt)[0]  # noqa: E731
    nelbo = estimate_nelbo(held_data, denoise, mask_id, rng)
    nats, se = per_char(nelbo, np.array([len(w) + 1 for w in held_words]))
    print(f"held-out NELBO: {nats:.4f} nats/char ({nats / np.log(2):.4f} bits/char) "
          f"+- {se:.4f} (standard error over {len(held_words):,} names; discrete form, {EVAL_DRAWS} mask draws)")

    samples, trajectory = sample_ancestral(denoise, args.samples, mask_id, rng, temperature=args.temperature)
    print("samples:", " ".join(decode(s, itos).rstrip(PAD) for s in samples))
    times = np.linspace(1, 0, SAMPLE_STEPS + 1)
    say("denoising trajectory of the first sample ('_' is MASK, '.' is PAD):")
    for t, xt in zip(times, trajectory):
        say(f"t={t:.2f} {decode(xt[0], itos)}")


if __name__ == "__main__":
    cli.run(main)
