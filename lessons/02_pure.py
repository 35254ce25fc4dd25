# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 2: a deeper denoiser, schedules and samplers, in NumPy
#
# This lesson walks through `pure/train_pure.py`. The diffusion loop is the one of lesson 1,
# line for line: the same tokens, forward process, loss, held-out estimator and ancestral
# sampler. What changes is the denoiser, which gains depth (a residual MLP with layer
# normalisation, every gradient still written by hand), and what we do with the trained model:
# we measure things.
#
# You will see, each with a measurement:
# 1. what skip connections and normalisation buy when a network gets deeper;
# 2. that the noise schedule (linear or cosine) leaves the bound unchanged but not its variance;
# 3. the tier's own plots of a full training run;
# 4. what the sampling temperature does, and how to score samples (valid, copied, new, lengths);
# 5. confidence-based (MaskGIT) sampling against ancestral sampling.
#
# As in lesson 1, `LESSONS_FAST=1` shortens every training run; the stored outputs are the full ones.

# %%
import inspect, os, sys, tempfile, time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pure" / "train_pure.py").is_file()), None)
if ROOT is None:  # the notebook was opened away from the repository it belongs to
    raise FileNotFoundError(f"no pure/train_pure.py in {Path.cwd()} or above it: open this notebook from the "
                            f"lessons/ folder of a clone of the repository (or start Jupyter in the repository).")
sys.path.insert(0, str(ROOT))  # the repository root, so the tiers import as packages
from data.fetch import load_names, split_names
from pure import train_pure as tp

FAST = os.environ.get("LESSONS_FAST") == "1"  # fewer training steps and samples; every cell still runs
plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 3)})
rng = np.random.default_rng(1337)
print("fast mode" if FAST else "full mode", "- the pure tier lives in", ROOT / "pure")

# %%
words = load_names()
train_words, held_words = split_names(words)
stoi, itos = tp.build_vocab(words)
mask_id, V, L = stoi[tp.MASK], len(itos), tp.BLOCK_SIZE
train_data, held_data = tp.encode(train_words, stoi), tp.encode(held_words, stoi)  # (N, L) each
held_chars = np.array([len(w) + 1 for w in held_words])  # characters per name, one end-of-name included
print(f"{len(train_words):,} training names, {len(held_words):,} held out; vocabulary {''.join(itos)!r}")

# %% [markdown]
# ## 1. The denoiser gets depth
#
# Lesson 1's MLP had one hidden layer. Stacking more layers naively makes training *harder*,
# not easier: the signal and its gradient have to pass through every layer, and they shrink or
# blow up on the way. The pure tier uses the two fixes that deep networks rely on:
#
# - a **residual stream** $h$ (of width `N_EMBD`). Each block *adds* its output to the stream,
#   $h \leftarrow h + W_2\,\mathrm{relu}(W_1\,\mathrm{LN}(h))$, so there is always a
#   straight path from input to output, and the gradient flows back along it unchanged;
# - **layer normalisation** $\mathrm{LN}$ at the input of each block (and before the output
#   head): every row is rescaled to mean 0 and variance 1, so each block sees inputs of the
#   same scale however large the stream has grown.
#
# Here is the forward pass; its backward pass in the tier mirrors it line by line.

# %%
print(inspect.getsource(tp.forward))

# %% [markdown]
# The backward pass of layer normalisation is the one new piece of calculus: the output
# depends on $x$ directly *and* through the row's mean and variance. As always, we do not trust
# it until it agrees with finite differences:

# %%
x, g, b = np.random.default_rng(0).standard_normal((3, 4, 8))
y, cache = tp.layer_norm(x, g[0], b[0])
dy = np.random.default_rng(1).standard_normal(y.shape)  # any upstream gradient: loss = sum(y * dy)
dx = tp.layer_norm_backward(dy, g[0], cache)[0]
numeric = np.zeros_like(x)
for idx in np.ndindex(x.shape):
    e = np.zeros_like(x); e[idx] = 1e-6
    numeric[idx] = ((tp.layer_norm(x + e, g[0], b[0])[0] - tp.layer_norm(x - e, g[0], b[0])[0]) * dy).sum() / 2e-6
print(f"LayerNorm backward vs finite differences: largest relative error {np.abs(dx - numeric).max() / np.abs(dx).max():.1e}")

# %% [markdown]
# ## 2. What skip connections and normalisation buy: a measurement
#
# To see what each fix is worth, we need the same network with each fix switched off. Below is
# the tier's `forward` and `backward` with two switches: `skip=False` replaces
# $h + \text{block}(h)$ by $\text{block}(h)$, and `norm=False` removes every LayerNorm. With
# both switches on, it must give exactly the tier's numbers; we check that first.

# %%
def forward_variant(params, xt, skip=True, norm=True):
    """tp.forward with switches. xt (B, L) -> logits (B, L, V-1), cache."""
    B, L = xt.shape
    V = params["W_in"].shape[0] // L
    X = np.zeros((B, L * V), params["W_in"].dtype)
    X[np.arange(B)[:, None], np.arange(L) * V + xt] = 1  # one-hot of every position
    h, blocks = X @ params["W_in"] + params["b_in"], []  # (B, C): the stream
    for i in range(sum(k.startswith("W1.") for k in params)):
        a, ln = tp.layer_norm(h, params[f"ln{i}.g"], params[f"ln{i}.b"]) if norm else (h, None)
        r = np.maximum(a @ params[f"W1.{i}"] + params[f"b1.{i}"], 0)  # (B, N_HIDDEN)
        h = (h if skip else 0) + r @ params[f"W2.{i}"] + params[f"b2.{i}"]  # skip=False: no identity path
        blocks.append((a, ln, r))
    a, ln = tp.layer_norm(h, params["lnf.g"], params["lnf.b"]) if norm else (h, None)
    return (a @ params["W_out"] + params["b_out"]).reshape(B, L, V - 1), (X, blocks, a, ln)


# %%
def backward_variant(params, dlogits, cache, skip=True, norm=True):
    """tp.backward with the same switches; LayerNorm parameters get no gradient when norm=False."""
    X, blocks, a, ln = cache
    grads, dZ = {}, dlogits.reshape(len(X), -1)
    grads["W_out"], grads["b_out"], da = a.T @ dZ, dZ.sum(0), dZ @ params["W_out"].T
    dh, grads["lnf.g"], grads["lnf.b"] = tp.layer_norm_backward(da, params["lnf.g"], ln) if norm else (da, 0, 0)
    for i in reversed(range(len(blocks))):
        a, ln, r = blocks[i]
        grads[f"W2.{i}"], grads[f"b2.{i}"] = r.T @ dh, dh.sum(0)
        dz = (dh @ params[f"W2.{i}"].T) * (r > 0)  # through W2, then ReLU
        grads[f"W1.{i}"], grads[f"b1.{i}"], da = a.T @ dz, dz.sum(0), dz @ params[f"W1.{i}"].T
        dh_block, grads[f"ln{i}.g"], grads[f"ln{i}.b"] = tp.layer_norm_backward(da, params[f"ln{i}.g"], ln) if norm else (da, 0, 0)
        dh = (dh if skip else 0) + dh_block  # the skip hands dh back unchanged
    grads["W_in"], grads["b_in"] = X.T @ dh, dh.sum(0)
    return {k: g for k, g in grads.items() if not np.isscalar(g)}  # drop the zeros of unused LayerNorms


# %% [markdown]
# `tp.init_params` builds the tier's size, read from its constants `N_EMBD`, `N_HIDDEN` and
# `N_LAYER`. For the experiments below we want other sizes, so this helper sets those
# constants for the duration of one call and puts them back.

# %%
def init_sized(rng, n_embd, n_hidden, n_layer, dtype=np.float32):
    """tp.init_params for another size: the tier's own initialisation, other constants."""
    saved = tp.N_EMBD, tp.N_HIDDEN, tp.N_LAYER
    tp.N_EMBD, tp.N_HIDDEN, tp.N_LAYER = n_embd, n_hidden, n_layer
    try:
        return tp.init_params(V, rng, dtype=dtype)
    finally:
        tp.N_EMBD, tp.N_HIDDEN, tp.N_LAYER = saved


# %%
p64 = init_sized(np.random.default_rng(0), n_embd=32, n_hidden=64, n_layer=3, dtype=np.float64)
x0, t = train_data[:16], np.full(16, 0.5)
xt, mask = tp.corrupt(x0, t, mask_id, np.random.default_rng(1))
loss_of = lambda p, skip, norm: tp.nelbo_loss(forward_variant(p, xt, skip, norm)[0], x0, mask, t)[0]
logits, cache = forward_variant(p64, xt)
same = np.array_equal(logits, tp.forward(p64, xt)[0])
g_tier = tp.backward(p64, tp.nelbo_loss(logits, x0, mask, t)[1], cache)
g_ours = backward_variant(p64, tp.nelbo_loss(logits, x0, mask, t)[1], cache)
print(f"switches on: same logits as tp.forward: {same}; same gradients as tp.backward: "
      f"{all(np.array_equal(g_tier[k], g_ours[k]) for k in g_tier)}")

# %% [markdown]
# With a switch off there is no tier function to compare with, so each variant's gradient is
# checked against finite differences (a few of the largest entries of every parameter):

# %%
for skip, norm in [(True, False), (False, True), (False, False)]:
    logits, cache = forward_variant(p64, xt, skip, norm)
    grads, worst = backward_variant(p64, tp.nelbo_loss(logits, x0, mask, t)[1], cache, skip, norm), 0.0
    for k, g in grads.items():
        for i in np.argsort(-np.abs(g).ravel())[:3]:
            idx, old = np.unravel_index(i, g.shape), p64[k][np.unravel_index(i, g.shape)]
            p64[k][idx] = old + 1e-6; up = loss_of(p64, skip, norm)
            p64[k][idx] = old - 1e-6; down = loss_of(p64, skip, norm)
            p64[k][idx] = old
            worst = max(worst, abs((up - down) / 2e-6 - g[idx]) / abs(g[idx]))
    print(f"skip={skip!s:5} norm={norm!s:5}: largest relative error {worst:.1e}")

# %% [markdown]
# Now the experiment. Four copies of a deeper, narrower network (6 blocks of width 128) start
# from the same initial weights and see the same batches; only the switches differ. The
# training loop is `tp.train`'s, minus its bookkeeping.

# %%
def train_variant(skip, norm, steps, seed=0):
    """Returns the trained parameters and the per-step training NELBO (nats per character)."""
    rng = np.random.default_rng(seed)
    params, state, curve = init_sized(rng, n_embd=128, n_hidden=256, n_layer=6), {}, []
    for step in range(1, steps + 1):
        x0 = train_data[rng.integers(0, len(train_data), tp.BATCH_SIZE)]  # (B, L)
        t = tp.sample_times(tp.BATCH_SIZE, rng)
        xt, mask = tp.corrupt(x0, t, mask_id, rng)
        logits, cache = forward_variant(params, xt, skip, norm)
        loss, dlogits = tp.nelbo_loss(logits, x0, mask, t)
        grads = backward_variant(params, dlogits, cache, skip, norm)
        tp.clip_grads(grads)
        tp.adam(params, grads, state, tp.learning_rate(step, steps))
        curve.append(loss * x0.size / ((x0 != 0).sum() + len(x0)))  # per character, like tp.train
    return params, np.array(curve)


# %%
variant_steps = 60 if FAST else 600
results = {}
for skip, norm in [(True, True), (True, False), (False, True), (False, False)]:
    start = time.time()
    params, curve = train_variant(skip, norm, variant_steps)
    nelbo = tp.estimate_nelbo(held_data[::3], lambda xt: forward_variant(params, xt, skip, norm)[0], mask_id,
                              np.random.default_rng(0), draws=1)  # same masks for every variant
    results[f"skip={skip}, norm={norm}"] = curve, tp.per_char(nelbo, held_chars[::3])
    print(f"skip={skip!s:5} norm={norm!s:5}: held-out NELBO {results[f'skip={skip}, norm={norm}'][1][0]:.3f} "
          f"+- {results[f'skip={skip}, norm={norm}'][1][1]:.3f} nats/char ({time.time() - start:.0f} s)")

# %%
for label, (curve, (nats, se)) in results.items():
    smooth = np.convolve(curve, np.ones(20) / 20, mode="valid")  # a 20-step running mean
    plt.plot(np.arange(len(smooth)) + 20, smooth, label=f"{label}: held out {nats:.3f}")
plt.ylim(None, 3.5); plt.xlabel("training step"); plt.ylabel("train NELBO (nats/char)")
plt.title("6 blocks, width 128: the same run with each fix switched off", fontsize=10); plt.legend(fontsize=8); plt.show()

# %% [markdown]
# Read the plot and the numbers together (the figures quoted here are those of the full run
# stored in this notebook). **The skip connections are what matter**: both networks without
# them stall near 2.6 nats/char after about 100 steps (held out: 2.57 and 2.60), while both
# residual ones keep improving to 2.34-2.42. Without the identity path, the input reaches the output only through six
# nonlinear blocks, and the gradient must travel back through all of them; with it, every block
# starts as a small correction to a straight path, and each one can be useful from the start.
#
# **Layer normalisation bought nothing measurable here**: the residual network without it is
# even a little ahead (2.344 against 2.417, a difference of about three standard errors). At
# this depth, width and learning rate the stream stays well scaled on its own. What
# normalisation offers is insurance: each block's input has the same scale whatever the depth,
# the width or the learning rate, so a configuration that works keeps working when one of them
# changes. Testing that claim is a good experiment to run yourself: raise the learning rate or
# the depth in `train_variant` and compare again.

# %% [markdown]
# ## 3. Training the pure tier
#
# Now the tier's own network, at its default size, and its own training function. `tp.train`
# adds the engineering a real run needs: a learning rate that warms up and then decays along a
# cosine, gradient clipping (a batch with a tiny $t$ has a weight $1/t$ up to 1000 and can give
# a gradient spike), and the held-out NELBO measured every `tp.EVAL_EVERY` steps on a third of
# the held-out names with fixed masks, so that two measurements differ only because the model
# did. (The tier's comments explain its size: the NELBO gradient is noisy, so for the same CPU
# time many steps of a small denoiser beat fewer steps of a big one.)

# %%
steps = 100 if FAST else tp.STEPS  # the tier's default number of steps
params, state = tp.init_params(V, np.random.default_rng(1337)), {}
print(f"{tp.N_LAYER} blocks, stream width {tp.N_EMBD}, inner width {tp.N_HIDDEN}: "
      f"{sum(p.size for p in params.values()):,} parameters; {steps:,} steps of {tp.BATCH_SIZE} names")
start = time.time()
tp.train(params, state, train_data, steps, np.random.default_rng(1337), mask_id, held=(held_data[::3], held_chars[::3]))
print(f"trained {steps} steps in {time.time() - start:.0f} s")
denoise = lambda xt: tp.forward(params, xt)[0]  # xt (B, L) -> logits (B, L, V-1)

# %%
draws = 1 if FAST else tp.EVAL_DRAWS  # the tier's final figure averages 4 mask draws per (name, k)
nats, se = tp.per_char(tp.estimate_nelbo(held_data, denoise, mask_id, rng, draws=draws), held_chars)
print(f"held-out NELBO after {steps} steps: {nats:.3f} +- {se:.3f} nats/char ({nats / np.log(2):.3f} bits/char)")

# %% [markdown]
# Put this beside lesson 1's MLP, 2.155 ± 0.008 nats/char on the same held-out names in its
# stored run: the residual network, with fewer parameters but more steps, lowers the bound by
# about 0.06 nats/char, far more than either standard error. Its held-out curve (below) is still
# falling slowly at the end of the run.
#
# `tp.make_plots` draws the tier's figures (the same ones `python3 pure/train_pure.py` saves in
# `pure/out/`). Here are two of them: the NELBO during training, and both samplers at work,
# one row per step (grey: still masked, orange: revealed at that step, blue: `PAD`).

# %%
backend = matplotlib.get_backend()  # make_plots switches matplotlib to its file backend ...
folder = tempfile.mkdtemp()
samples = [tp.decode(s, itos) for s in tp.sample_ancestral(denoise, 200, mask_id, rng)[0]]
paths = tp.make_plots(Path(folder), state["history"], denoise, stoi, itos, train_words, samples, rng)
matplotlib.use(backend)  # ... so switch back, to keep drawing figures in this notebook
print("the tier wrote:", ", ".join(Path(p).name for p in paths))
display(Image(filename=f"{folder}/nelbo.png", width=480), Image(filename=f"{folder}/reverse.png", width=640))

# %% [markdown]
# ## 4. Schedules: the same bound, a different variance
#
# Lesson 1 showed two schedules, linear $\alpha(t) = 1 - t$ and cosine
# $\alpha(t) = \cos(\pi t/2)$. Which one gives the better NELBO? For this denoiser, neither.
# The network is not told $t$; it only sees $x_t$, whose masks are drawn with rate
# $1 - \alpha(t)$. Substituting $\alpha$ for $t$ in the integral,
#
# $$\text{NELBO} = \int_0^1 \frac{-\alpha'(t)}{1 - \alpha(t)}\, f\big(\alpha(t)\big)\, dt = \int_0^1 \frac{f(\alpha)}{1 - \alpha}\, d\alpha,$$
#
# where $f(\alpha)$ is the expected masked loss at mask rate $1 - \alpha$. The schedule has
# disappeared. What it changes is *how the integral is sampled*: a one-$t$ Monte Carlo
# estimate puts its samples at different mask rates with different weights, so its variance
# changes (and so does the noise of training, which uses this kind of estimate).
#
# We check both claims on the trained model, with one random $t$ per name, repeated:

# %%
repeats = 2 if FAST else 16
x0 = np.tile(held_data, (repeats, 1))  # every held-out name `repeats` times
for schedule in ["linear", "cosine"]:
    t = tp.EPS + (1 - tp.EPS) * rng.random(len(x0))  # independent times: the plain Monte Carlo estimate
    xt, mask = tp.corrupt(x0, t, mask_id, rng, schedule)
    nll = -np.take_along_axis(tp.log_softmax(denoise(xt).astype(np.float64)), x0[..., None], -1)[..., 0]
    one_t = tp.weight(t, schedule) * (nll * mask).sum(1)  # (N,) one unbiased estimate of each name's NELBO
    nats, se = tp.per_char(one_t, np.tile(held_chars, repeats))
    print(f"{schedule:6}: NELBO {nats:.3f} +- {se:.3f} nats/char; std of a one-t estimate {one_t.std():5.2f} nats per name")

# %% [markdown]
# Where does the variance come from? For each $t$ on a grid, the cell below measures the mean
# and the standard deviation of the one-$t$ estimate $w(t) \sum_{\text{masked}} -\log p$ over
# held-out names. The areas under the two mean curves are the same number, the NELBO; the
# spreads are not.

# %%
ts, x0 = np.linspace(0.02, 1, 25), held_data[:800]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
for schedule in ["linear", "cosine"]:
    stats = []
    for t in ts:
        xt, mask = tp.corrupt(x0, np.full(len(x0), t), mask_id, rng, schedule)
        nll = -np.take_along_axis(tp.log_softmax(denoise(xt).astype(np.float64)), x0[..., None], -1)[..., 0]
        one_t = tp.weight(np.array(t), schedule) * (nll * mask).sum(1)  # (N,) estimates at this t
        stats.append((one_t.mean(), one_t.std()))
    ax1.plot(ts, [m for m, _ in stats], "o-", ms=3, label=schedule)
    ax2.plot(ts, [s for _, s in stats], "o-", ms=3, label=schedule)
ax1.set(xlabel="t", ylabel="nats per name", title="mean of w(t) x masked NLL (area: NELBO)")
ax2.set(xlabel="t", title="its standard deviation"); ax1.legend(); plt.tight_layout(); plt.show()

# %% [markdown]
# The two means agree within their error bars (2.110 and 2.111 nats/char in the stored run),
# as the algebra says they must; both are also within about two standard errors of the
# discrete-form figure of section 3 (2.090), which estimates the same NELBO with less noise. The spreads differ in shape. The linear schedule's estimate is
# wildest at small $t$: there a name usually has no mask at all (the estimate is 0), and now
# and then one mask weighted by $1/t$. The cosine schedule masks even less at small $t$ but
# gives those masks a smaller weight (its $w(t)$ is about $2/t$ while the chance of a mask grows
# like $t^2$), so its spread stays flat there; it moves area, and spread, to large $t$. Over
# all $t$ the cosine estimate is a little less noisy for this model (a standard deviation of
# 15.0 against 16.6 nats per name). Training uses the same estimate with antithetic times
# (lesson 1), which removes much of what is left; the torch tier (lesson 3) trains on the
# discrete form instead.

# %% [markdown]
# ## 5. Temperature
#
# The sampler draws each revealed letter from $\mathrm{softmax}(\text{logits} / T)$. $T = 1$ is
# the model itself. $T < 1$ sharpens every distribution towards its most likely letters: fewer
# mistakes, but more of the most common names (copies) and less variety. $T > 1$ flattens it:
# more variety, more nonsense. Each sample is scored with the tier's `sample_metrics`:
#
# - **valid**: letters followed only by `PAD` (no `PAD` inside a name);
# - **copied**: valid and identical to a training name; **new**: valid and not a training name;
# - **tv_length**: the total-variation distance between the length distribution of the valid
#   samples and that of the real names (0: identical, 1: disjoint).
#
# We also report the entropy of the letters in the samples beside that of real names: a model
# that collapses onto a few frequent letters scores low there.

# %%
def letter_entropy(names):
    """Entropy (nats) of the letter frequencies in a list of names: low means repetitive samples."""
    counts = np.unique(list("".join(names)), return_counts=True)[1]
    return -(counts / counts.sum() * np.log(counts / counts.sum())).sum()


n = 200 if FAST else 1000
print(f"real names: letter entropy {letter_entropy(train_words):.3f}")
for T in [0.5, 0.8, 1.0, 1.2, 1.5]:
    names = [tp.decode(s, itos) for s in tp.sample_ancestral(denoise, n, mask_id, rng, temperature=T)[0]]
    m = tp.sample_metrics(names, train_words, train_words)
    valid = [s.rstrip(".") for s in names if s.rstrip(".").isalpha()]
    print(f"T={T}: valid {m['valid']:5.1%}, copied {m['copied']:5.1%}, new {m['new']:5.1%}, "
          f"tv_length {m['tv_length']:.3f}, letter entropy {letter_entropy(valid):.3f}   e.g. {' '.join(valid[:5])}")

# %% [markdown]
# In the stored run, $T = 1$, the model itself, matches the real names best: the smallest length
# distance (0.041) and a letter entropy equal to the data's (2.809 against 2.812). Lower
# temperatures buy validity with copies (at $T = 0.5$ half the samples are training names);
# higher ones buy novelty with nonsense.

# %% [markdown]
# ## 6. Confidence sampling against ancestral sampling
#
# The ancestral sampler reveals positions at random times, exactly as the ELBO describes. The
# *confidence* sampler (as in MaskGIT) uses the schedule only to decide *how many* positions
# to reveal at each step, and reveals the ones the model is most sure of: the positions whose
# drawn letter has the highest probability. Easy letters go first, and hard decisions are
# postponed until more of the name is known.
#
# The price of a sampler is the number of network calls (NFE, function evaluations). We count
# them with a wrapper and compare both samplers over a range of step budgets:

# %%
def counted(denoise):
    """The same denoiser, counting its calls in .calls."""
    def wrapped(xt):
        wrapped.calls += 1
        return denoise(xt)
    wrapped.calls = 0
    return wrapped


n, table = (100 if FAST else 1000), {}
for sampler in [tp.sample_ancestral, tp.sample_confidence]:
    for budget in [2, 4, 8, 16, 32]:
        net = counted(denoise)
        names = [tp.decode(s, itos) for s in sampler(net, n, mask_id, rng, steps=budget)[0]]
        m, distinct = tp.sample_metrics(names, train_words, train_words), len(set(names)) / n
        table[sampler.__name__, budget] = m["valid"], m["new"], distinct
        print(f"{sampler.__name__:17} steps={budget:2}: NFE {net.calls:2}, valid {m['valid']:5.1%}, new {m['new']:5.1%}, distinct {distinct:5.1%}")

# %%
budgets = [2, 4, 8, 16, 32]
fig, axes = plt.subplots(1, 3, figsize=(9, 2.8))
for ax, i, what in zip(axes, range(3), ["valid", "new", "distinct"]):
    for name in ["sample_ancestral", "sample_confidence"]:
        ax.plot(budgets, [table[name, b][i] for b in budgets], "o-", label=name[7:])
    ax.set(xscale="log", xlabel="steps", title=f"share {what}")
    ax.set_xticks(budgets, [str(b) for b in budgets], minor=False); ax.minorticks_off()
axes[0].legend(); plt.tight_layout(); plt.show()

# %% [markdown]
# With few steps, the ancestral sampler reveals many positions in one call, and those are
# drawn *independently* given the same $x_t$: two neighbouring letters that only make sense
# together are often not drawn together, so validity drops (81% valid with 2 calls, 98% with
# 32, in the stored run). With 2 calls neither sampler works well. From 4 calls on, the
# confidence sampler makes the easy, safe decisions first and gives more valid names for the
# same number of calls (99% with 8). Its price is diversity: always taking the most probable
# letters pushes it towards common names, so at 16 steps fewer than half of its samples are
# new (48%) and 13% are duplicates, against 83% new and almost no duplicates for the ancestral
# sampler. (With 32 steps it still makes 16 calls: it reveals at least one position per step,
# so it is done after 16.) Lesson 3 comes back to what parallel decoding loses, with an exact
# toy example.

# %% [markdown]
# ## Summary
#
# - The loop is lesson 1's; only the denoiser and the engineering around it changed.
# - Residual connections give signal and gradient a straight path through a deep network;
#   layer normalisation keeps each block's input at one scale. Switched off one at a time, the
#   skip connections were the one this 6-block network could not do without; layer
#   normalisation made no measurable difference in this short run.
# - The schedule does not change the NELBO of a time-agnostic denoiser (it cancels out of the
#   integral); it changes the variance of the one-$t$ estimate, and so the noise of training.
# - Temperature trades validity and typicality against variety; measure samples by validity,
#   copies, new names, the length distribution and the letter entropy, never by one number.
# - The confidence sampler needs fewer network calls for valid names but gives less varied,
#   more often copied ones.
#
# ## Exercises
#
# As in lesson 1: fill in a stub, run its check cell; `PASS`, `FAIL` (and why) or `not yet`.
# Reference solutions are in a separate file, `lessons/solutions.py`, so that you meet them only
# on purpose.

# %%
import importlib.util

spec = importlib.util.spec_from_file_location("checks", ROOT / "lessons" / "checks.py")  # by path: any working folder
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)
check = checks.check


# %% [markdown]
# **Exercise 1: layer normalisation.** Implement the forward pass: normalise each row of `x`
# to mean 0 and variance 1 (add `eps` to the variance before the square root), then scale by
# `g` and shift by `b`. The check compares with `tp.layer_norm`.

# %%
def my_layer_norm(x, g, b, eps=1e-5):
    """(B, C) -> (B, C)."""
    return None  # your code here


ex_x = np.random.default_rng(5).standard_normal((6, 10)) * 3 + 1
ex_g, ex_b = np.linspace(0.5, 2, 10), np.linspace(-1, 1, 10)
check("exercise 1, layer norm", my_layer_norm(ex_x, ex_g, ex_b), tp.layer_norm(ex_x, ex_g, ex_b)[0])


# %% [markdown]
# **Exercise 2: the learning-rate schedule.** Linear warm-up from 0 to `tp.LEARNING_RATE` over
# the first `tp.WARMUP` steps, then a cosine decay from `tp.LEARNING_RATE` down to
# `tp.MIN_LR` at the last step. Steps count from 1. The check compares with
# `tp.learning_rate` at every step of a 2,000-step run.

# %%
def my_learning_rate(step, steps):
    return None  # your code here


answers = [my_learning_rate(s, 2000) for s in range(1, 2001)]
check("exercise 2, learning rate", None if None in answers else answers, [tp.learning_rate(s, 2000) for s in range(1, 2001)])


# %% [markdown]
# **Exercise 3: the length distance.** Given the decoded samples, keep the valid ones, and
# compute the total-variation distance between their length distribution and that of
# `train_words`: half the sum of the absolute differences of the two histograms, each
# normalised to sum to 1. The check compares with `tp.sample_metrics(...)["tv_length"]`.

# %%
def my_tv_length(samples, real_words):
    return None  # your code here


check("exercise 3, length distance", my_tv_length(samples, train_words), tp.sample_metrics(samples, train_words, train_words)["tv_length"])


# %% [markdown]
# **Exercise 4: the confidence sampler's budget.** Starting from $M$ masks, after the step
# that ends at time $s$ the confidence sampler keeps $\mathrm{round}(M(1 - \alpha(s)))$ masks,
# but always reveals at least one per step while any is left. Write the list of masks left
# after each step, for `steps` steps on the uniform grid from 1 to 0 (linear schedule). The
# check counts the masks in a real trajectory of `tp.sample_confidence`.

# %%
def masks_left(M, steps):
    """[masks left after step 1, ..., after step `steps`]"""
    return None  # your code here


trajectory = tp.sample_confidence(denoise, 1, mask_id, np.random.default_rng(0), steps=10)[1]
check("exercise 4, masks left", masks_left(L, 10), [(x == mask_id).sum() for x in trajectory[1:]])

# %% [markdown]
# ## Solutions
#
# The reference solutions are in `lessons/solutions.py` (its second section is this lesson's).
# The cell below loads that file and runs each solution through the same check with
# `strict=True`, which stops with an error if a check fails: proof that every check above can
# pass.

# %%
spec = importlib.util.spec_from_file_location("solutions", ROOT / "lessons" / "solutions.py")  # by path: any working folder
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)
check("solution 1", solutions.my_layer_norm_solution(ex_x, ex_g, ex_b), tp.layer_norm(ex_x, ex_g, ex_b)[0], strict=True)
check("solution 2", [solutions.my_learning_rate_solution(s, 2000) for s in range(1, 2001)], [tp.learning_rate(s, 2000) for s in range(1, 2001)], strict=True)
check("solution 3", solutions.my_tv_length_solution(samples, train_words), tp.sample_metrics(samples, train_words, train_words)["tv_length"], strict=True)
check("solution 4", solutions.masks_left_solution(L, 10), [(x == mask_id).sum() for x in trajectory[1:]], strict=True)
