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
# # Lesson 1: masked diffusion for names, in NumPy
#
# This lesson walks through `minimal/train_minimal.py`, the first tier of the series: a
# complete text-diffusion model in one NumPy file. By the end you will have trained it and
# sampled new names from it, and you will know why every line is there.
#
# The idea in one paragraph: take a name, hide some of its letters behind a `MASK` symbol
# (that is the "noise"), and train a network to guess the hidden letters back. To generate,
# start from a name that is *all* masks and let the network reveal a few letters at a time.
# The training loss is the negative ELBO, an upper bound on $-\log p(\text{name})$, so the
# model's score is a real likelihood figure that can be compared with other models.
#
# You need Python and a little NumPy. Run the cells from top to bottom (Shift+Enter). With
# the environment variable `LESSONS_FAST=1` the training cells run fewer steps (the tests use
# it); the outputs stored in this notebook come from the full run.

# %%
import inspect, math, os, re, sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "minimal" / "train_minimal.py").is_file()), None)
if ROOT is None:  # the notebook was opened away from the repository it belongs to
    raise FileNotFoundError(f"no minimal/train_minimal.py in {Path.cwd()} or above it: open this notebook from the "
                            f"lessons/ folder of a clone of the repository (or start Jupyter in the repository).")
sys.path.insert(0, str(ROOT))  # the repository root, so the tiers import as packages
from data.fetch import load_names, split_names
from minimal import train_minimal as tm

FAST = os.environ.get("LESSONS_FAST") == "1"  # fewer training steps; every cell still runs
plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 3)})
rng = np.random.default_rng(1337)  # one seeded generator: rerunning gives the same numbers
print("fast mode" if FAST else "full mode", "- the minimal tier lives in", ROOT / "minimal")

# %% [markdown]
# ## 1. Tokens, MASK and PAD
#
# The data is 32,033 US first names. Each character is a *token*, an integer id. Two extra
# symbols complete the vocabulary:
#
# - `PAD`, shown as `.`, fills every name up to a fixed length $L = 16$. The longest name has
#   15 letters, so every name ends with at least one `PAD`: that is how the model learns where
#   a name stops. `PAD` is id 0 and is predicted like any other token.
# - `MASK`, shown as `_`, is the noise. It has the *last* id. The network never predicts it:
#   its job is to say what hides behind a mask, and "another mask" is never the answer.

# %%
words = load_names()
train_words, held_words = split_names(words)  # every 10th name is held out, never trained on
stoi, itos = tm.build_vocab(words)
mask_id, V, L = stoi[tm.MASK], len(itos), tm.BLOCK_SIZE
print(f"{len(words):,} names ({len(train_words):,} train, {len(held_words):,} held out), e.g. {words[:5]}")
print(f"vocabulary of {V}: {''.join(itos)!r}  PAD = {stoi[tm.PAD]}, MASK = {mask_id}")
x0 = tm.encode(["emma", "isabella"], stoi)  # (2, L) integer array
print(x0)
print([tm.decode(row, itos) for row in x0])

# %% [markdown]
# ## 2. The forward process on a real name
#
# Noising has one knob, the time $t \in [0, 1]$. The *schedule* $\alpha(t)$ is the chance that
# a token is still clean at time $t$; the default is linear, $\alpha(t) = 1 - t$. At time $t$,
# every position is masked independently with probability $1 - \alpha(t)$. Here is "isabella"
# at several times, three independent draws each:

# %%
name = tm.encode(["isabella"], stoi)  # (1, L)
for t in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]:
    draws = [tm.corrupt(name, np.array([t]), mask_id, rng)[0][0] for _ in range(3)]
    print(f"t={t:.2f}  alpha={tm.alpha(t):.2f}   " + "   ".join(tm.decode(xt, itos) for xt in draws))

# %% [markdown]
# The masking rate really is $1 - \alpha(t)$: corrupt all training names at a grid of times
# and measure the share of masked positions. The second schedule, cosine,
# $\alpha(t) = \cos(\pi t / 2)$, masks slowly at first and fast at the end (lesson 2 compares
# them).

# %%
train_data = tm.encode(train_words, stoi)  # (N, L)
grid, ts = np.linspace(0, 1, 11), np.linspace(0, 1, 101)
for schedule, color in [("linear", "C0"), ("cosine", "C1")]:
    rate = [tm.corrupt(train_data, np.full(len(train_data), t), mask_id, rng, schedule)[1].mean() for t in grid]
    plt.plot(ts, 1 - tm.alpha(ts, schedule), color=color, label=f"1 - alpha(t), {schedule}")
    plt.plot(grid, rate, "o", color=color, label=f"measured share masked, {schedule}")
plt.xlabel("t"); plt.ylabel("share of positions masked"); plt.legend(fontsize=8); plt.show()

# %% [markdown]
# ## 3. Why masking is the text analogue of noise
#
# An image diffusion model adds Gaussian noise until nothing of the picture is left; then it
# learns to undo one small step at a time. Letters cannot take "a bit of Gaussian noise", but
# masking does the same three jobs:
#
# 1. **It destroys information gradually.** The more letters are masked, the more names are
#    consistent with what is left.
# 2. **It ends at a known, simple point.** At $t = 1$ every sequence is `________________`, just
#    as every image ends as pure noise; so generation has an obvious starting point.
# 3. **It is absorbing.** Once a letter is masked it stays masked as $t$ grows: one uniform
#    number per position, compared with $1 - \alpha(t)$, gives *nested* masks.
#
# The cell below follows one name through time with nested masks and counts how many training
# names agree with every visible letter:

# %%
x, distinct = tm.encode(["isabella"], stoi)[0], np.unique(train_data, axis=0)  # names.txt repeats some names
u = rng.random(L)  # one uniform per position: masked at time t when u < 1 - alpha(t)
for t in [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0]:
    xt = np.where(u < 1 - tm.alpha(t), mask_id, x)
    consistent = ((distinct == xt) | (xt == mask_id)).all(1).sum()
    print(f"t={t:.1f}  {tm.decode(xt, itos)}  fits {consistent:6,} of the {len(distinct):,} distinct training names")

# %% [markdown]
# ## 4. The ELBO, its $1/t$ weight, and why only masked positions count
#
# Run the noising *backwards*: start at $t = 1$ with every position masked and walk down to
# $t = 0$. On the way from $t$ to $t - dt$ a masked position is revealed with probability
#
# $$\frac{\alpha(t - dt) - \alpha(t)}{1 - \alpha(t)} \approx \frac{-\alpha'(t)}{1 - \alpha(t)}\,dt = w(t)\,dt, \qquad w(t) = \frac{1}{t} \text{ for the linear schedule.}$$
#
# When the model reveals position $\ell$ it pays $-\log p_\theta(x_0^\ell \mid x_t)$ nats for
# guessing it. Adding up the expected cost over the whole walk gives the negative ELBO:
#
# $$\text{NELBO}(x_0) = \mathbb{E}_{t \sim U(0,1)}\Big[\, w(t) \sum_{\ell \text{ masked in } x_t} -\log p_\theta(x_0^\ell \mid x_t) \Big] \;\ge\; -\log p_\theta(x_0).$$
#
# - **Only masked positions count**: a visible letter is copied through, it costs nothing.
# - **The weight $1/t$** is the rate at which a masked position is revealed: $w(t)\,dt$ is its
#   chance of being revealed in the next small step. At small $t$ few letters are still masked,
#   but each of them is about to be revealed, so each weighs a lot.
#
# **Drawing the times.** Training estimates the expectation over $t$ by giving each name of a
# batch its own $t$. `tm.sample_times` does not draw them independently: it draws *one*
# uniform $u$ for the whole batch and spreads the batch evenly over the interval,
# $t_i = \text{EPS} + (1 - \text{EPS})\,((u + i/B) \bmod 1)$ for $i = 0 \dots B-1$. Each $t_i$
# alone is still uniform ($u$ shifted by $i/B$ and wrapped around), so the expected loss is
# unchanged. Together, the times sit exactly $1/B$ apart, so every batch covers every noise level
# in its fair share. Independent times sometimes pile up at small $t$, where the weight $1/t$ is
# large, and sometimes miss it; that makes the batch average jump from step to step. Times drawn
# this way are called *antithetic* or *stratified*. The cell counts, over 1,000 batches of 256
# names, how many names get a $t$ below 0.1 (a weight above 10):

# %%
demo = np.random.default_rng(0)  # its own generator, so the lesson's later numbers do not move
independent = demo.random((1000, 256))  # (batches, B): independent times
antithetic = np.stack([tm.sample_times(256, demo) for _ in range(1000)])  # (batches, B)
for name, ts in [("independent", independent), ("antithetic", antithetic)]:
    small = (ts < 0.1).sum(1)  # names per batch with t < 0.1
    print(f"{name:11}: {small.min()} to {small.max()} names of 256 have t < 0.1; "
          f"the batch's mean t varies with a std of {ts.mean(1).std():.4f}")

# %% [markdown]
# `EPS` $= 10^{-3}$ keeps $t$ away from 0, where the weight $1/t$ is infinite. Near $t = 0$ a
# name has a masked letter with chance about $L t$, and that letter's NLL is then multiplied by
# $1/t$. The mean of that term stays finite (about $L t \cdot \frac{1}{t} = L$ times the NLL),
# but its mean square, about $L t \cdot \frac{1}{t^2} = L / t$ times the squared NLL, integrates
# to infinity at $t = 0$: without a floor, rare names drawn at tiny $t$ would carry huge weights
# and the loss would have no finite variance. With $t \ge 10^{-3}$ no weight exceeds 1,000. The
# price is a very small bias: the times below `EPS`, a thousandth of the interval, are never
# drawn. The discrete form below, used for evaluation, has no $t$ and needs no floor.
#
# A quick check of that bookkeeping: a denoiser that knows nothing (all logits zero) pays
# $\log 27$ nats for every guess. Each of the $L$ positions is revealed exactly once, so its
# NELBO must be $L \log 27$ per name, or $\log 27$ per position. `tm.nelbo_loss` returns the
# per-position figure (sum over the batch divided by $B \cdot L$):

# %%
x0 = train_data[rng.integers(0, len(train_data), 8192)]  # (B, L)
t = tm.sample_times(len(x0), rng)  # antithetic: one uniform, spread evenly over (EPS, 1]
xt, mask = tm.corrupt(x0, t, mask_id, rng)
loss, dlogits = tm.nelbo_loss(np.zeros((len(x0), L, V - 1)), x0, mask, t)  # the know-nothing denoiser
print(f"NELBO of the uniform denoiser: {loss:.4f} nats per position (log 27 = {np.log(V - 1):.4f})")
print(f"masked share {mask.mean():.3f}; largest gradient on a visible position: {np.abs(dlogits[~mask]).max()}")

# %% [markdown]
# The estimate lands within a percent of $\log 27$ (it is random: one $t$ per name), and the
# gradient on every visible position is exactly zero: nothing is learnt from letters that were
# never hidden.
#
# **The discrete form, and where its $1/k$ comes from.** Averaging over $t$ by hand gives an
# equivalent form with less variance; it is the one used for evaluation (SPEC section 4). Write
# $f(S) = \sum_{\ell \in S} -\log p_\theta(x_0^\ell \mid x_0 \text{ with the set } S \text{ masked})$
# for the summed NLL when the positions in $S$ are masked. The denoiser is not told $t$, so $f$
# depends on which positions are masked, not on $t$. At time $t$ (linear schedule) each position
# is masked with chance $t$, so the number $k$ of masked positions is Binomial$(L, t)$, and given
# $k$ every set of $k$ positions is equally likely. Group the NELBO by $k$ ($k = 0$ costs nothing):
#
# $$\text{NELBO}(x_0) = \int_0^1 \frac{1}{t} \sum_{k=1}^{L} \binom{L}{k} t^k (1-t)^{L-k}\, \mathbb{E}_{|S|=k}\big[f(S)\big]\, dt = \sum_{k=1}^{L} c_k\, \mathbb{E}_{|S|=k}\big[f(S)\big], \qquad c_k = \binom{L}{k} \int_0^1 t^{k-1} (1-t)^{L-k}\, dt.$$
#
# The weight $1/t$ cancels one power of $t$, and what is left is a Beta integral,
# $\int_0^1 t^{k-1}(1-t)^{L-k} dt = \frac{(k-1)!\,(L-k)!}{L!}$, so
#
# $$c_k = \frac{L!}{k!\,(L-k)!} \cdot \frac{(k-1)!\,(L-k)!}{L!} = \frac{1}{k}, \qquad \text{NELBO}(x_0) = \sum_{k=1}^{L} \frac{1}{k}\, \mathbb{E}_{|S|=k}\big[f(S)\big].$$
#
# Read backwards, the walk reveals the $L$ positions one at a time; while $k$ are masked, the
# next one revealed is any of the $k$ with equal chance, so it costs $f(S)/k$ on average. (For
# another schedule, substitute the masking chance $a = 1 - \alpha(t)$: then $w(t)\,dt = da/a$
# and the same integral comes out.) `tm.estimate_nelbo` computes this sum: for each
# $k = 1 \dots L$ it masks one random set of $k$ positions per name, adds $\frac{1}{k}$ times
# their summed NLL, and averages `draws` such sums (4 by default). The coefficients $c_k$, by
# numerical integration of the weight $1/t$ times the chance of $k$ masks at time $t$:

# %%
t_mid = (np.arange(100_000) + 0.5) / 100_000  # midpoints of 100,000 equal steps on (0, 1)
c = np.array([np.mean(tm.weight(t_mid) * math.comb(L, k) * t_mid**k * (1 - t_mid) ** (L - k)) for k in range(1, L + 1)])
print("k * c_k for k = 1..16:", np.round(np.arange(1, L + 1) * c, 6))
print(f"largest difference between c_k and 1/k: {np.abs(c - 1 / np.arange(1, L + 1)).max():.1e}")

# %% [markdown]
# For the uniform denoiser $f(S) = k \log 27$ for every set of $k$ positions, so every term is
# exactly $\frac{1}{k} \cdot k \log 27$ and the estimate has no noise at all:

# %%
uniform = lambda xt: np.zeros(xt.shape + (V - 1,))  # xt (B, L) -> logits (B, L, V-1)
nelbo = tm.estimate_nelbo(x0[:100], uniform, mask_id, rng, draws=1)  # one value per name
print(f"discrete form: {nelbo[:3]} ... per name; L log 27 = {L * np.log(V - 1):.4f}")

# %% [markdown]
# ## 5. The denoiser: a function from $x_t$ to logits
#
# Any network that maps a noisy sequence to one distribution per position will do. The minimal
# tier uses the smallest reasonable one, a 2-layer MLP:
#
# - input: the one-hot code of every position, flattened, $L \cdot V = 16 \cdot 28 = 448$ numbers;
# - a hidden layer of 256 ReLU units;
# - output: $L \cdot (V - 1) = 432$ logits, reshaped to $(L, V-1)$: one score per real token
#   for every position. There is no `MASK` output, by construction.
#
# The network sees the whole noisy name at once, left and right of every mask. It is not told
# $t$: the number of masks in $x_t$ already says how noisy it is.

# %%
params = tm.init_params(V, rng)
print({k: v.shape for k, v in params.items()}, f"{sum(v.size for v in params.values()):,} parameters")
xt = tm.encode(["is_b_ll_"], stoi)  # a hand-made noisy name: "_" is MASK
logits, cache = tm.forward(params, xt)
print("xt", xt.shape, "-> logits", logits.shape)
p = np.exp(tm.log_softmax(logits[0, 1]))  # distribution over the real tokens at position 1
print(f"untrained guess for position 1: max probability {p.max():.3f}, uniform would be {1 / (V - 1):.3f}")

# %% [markdown]
# ## 6. Backprop by hand, checked numerically
#
# The tier writes the gradient of every parameter by hand, one line per step of the chain
# rule. Read it next to `forward`: each line undoes one line of the forward pass.

# %%
print(inspect.getsource(tm.backward))

# %% [markdown]
# Never trust a hand-written gradient until it agrees with a numerical one. The centered
# difference $\frac{f(\theta + h) - f(\theta - h)}{2h}$ has an error of order $h^2$; in float64
# with $h = 10^{-5}$ the two should agree to about six significant digits or better. We check the
# entries with the largest gradients in each parameter (most entries of `W1` have a zero
# gradient, because most one-hot inputs are zero).

# %%
p64 = tm.init_params(V, np.random.default_rng(0), dtype=np.float64)  # float64: finite differences need the digits
xb, tb = train_data[:8], np.full(8, 0.5)
xtb, maskb = tm.corrupt(xb, tb, mask_id, np.random.default_rng(1))
loss_of = lambda p: tm.nelbo_loss(tm.forward(p, xtb)[0], xb, maskb, tb)[0]
logits, cache = tm.forward(p64, xtb)
grads = tm.backward(p64, tm.nelbo_loss(logits, xb, maskb, tb)[1], cache)
print({k: f"{(g != 0).sum():,} of {g.size:,} nonzero" for k, g in grads.items()})


# %%
def centered_difference(k, idx, h=1e-5):
    old = p64[k][idx]
    p64[k][idx] = old + h; up = loss_of(p64)
    p64[k][idx] = old - h; down = loss_of(p64)
    p64[k][idx] = old
    return (up - down) / (2 * h)


for k, g in grads.items():
    largest = [np.unravel_index(i, g.shape) for i in np.argsort(-np.abs(g).ravel())[:5]]  # five largest gradients
    print(f"{k}: largest relative error {max(abs(centered_difference(k, i) - g[i]) / abs(g[i]) for i in largest):.1e}")

# %% [markdown]
# ## 7. Training and the held-out NELBO
#
# A training step is the whole story so far in six lines: draw a batch of names, draw a time
# per name, mask, run the denoiser, compute the NELBO and its gradient, backprop, update with
# Adam. The learning rate decays linearly to zero.
#
# **Adam** gives each weight its own step size. It keeps two running averages per weight: `m`,
# of the gradient (`beta1 = 0.9`, about the last 10 steps), which smooths out the noise of single
# batches; and `v`, of the squared gradient (`beta2 = 0.999`, about the last 1,000 steps), which
# measures the size of that weight's gradients. The step is `lr * m / sqrt(v)`: about `lr`,
# whatever the scale of the gradient, and smaller where the gradient keeps changing sign (then
# `m` is small next to `sqrt(v)`). Both averages start at zero, so in the first steps they are
# too small, `m` by the factor `1 - beta1**step` and `v` by `1 - beta2**step`. Dividing those
# factors out is the *bias correction*; `tm.adam` folds both into one learning rate, `lr_t`, so
# even the first step is about `lr` in size. Two weights with steady gradients a million times
# apart move by the same `lr` per step (up to the tiny `eps`):

# %%
print(inspect.getsource(tm.adam))
w, state = {"w": np.zeros(2)}, {}  # two weights, Adam's state empty
for step in range(1, 4):
    tm.adam(w, {"w": np.array([1000.0, 0.001])}, state, lr=0.01)
    print(f"after step {step}: w = {w['w'][0]:.5f}, {w['w'][1]:.5f}")

# %%
print(inspect.getsource(tm.train))

# %%
steps = 200 if FAST else tm.STEPS  # the tier's default is 3,000 steps
params = tm.init_params(V, np.random.default_rng(1337))
tm.train(params, train_data, steps, np.random.default_rng(1337), mask_id)
denoise = lambda xt: tm.forward(params, xt)[0]  # the trained denoiser, xt (B, L) -> logits (B, L, V-1)

# %% [markdown]
# The figure that matters is the NELBO on names the model never saw, in nats per character.
# "Per character" follows the evaluation protocol (SPEC section 5): the total NELBO of the
# held-out set divided by its number of characters, counting one end-of-name per name. That is
# exactly what an autoregressive model is scored on, so we can put a classic baseline beside
# it: a bigram model (the next letter given the previous one, counted on the training names).

# %%
held = held_words[:500] if FAST else held_words
held_data, n_chars = tm.encode(held, stoi), np.array([len(w) + 1 for w in held])
nats, se = tm.per_char(tm.estimate_nelbo(held_data, denoise, mask_id, rng), n_chars)
print(f"diffusion MLP, held-out NELBO: {nats:.3f} +- {se:.3f} nats/char ({nats / np.log(2):.3f} bits/char)")
counts = np.ones((V - 1, V - 1))  # add-one smoothed bigram counts; PAD (id 0) marks start and end
for w in train_words:
    ids = [0] + [stoi[c] for c in w] + [0]
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
logp = np.log(counts / counts.sum(1, keepdims=True))
bigram = -sum(logp[[0] + [stoi[c] for c in w], [stoi[c] for c in w] + [0]].sum() for w in held) / n_chars.sum()
print(f"bigram model, held-out NLL:    {bigram:.3f} nats/char (an exact likelihood, not a bound)")

# %% [markdown]
# The diffusion NELBO is an upper bound, yet it already beats the bigram's exact likelihood.
#
# Where do those nats come from? The discrete form sums, over $k = 1 \dots L$, the loss of
# guessing $k$ masked positions at once, weighted by $\frac{1}{k}$. Plotting the average loss
# per masked position against $k$ shows what the model finds easy. Masked `PAD`s are cheap (once a few `PAD`s are visible,
# the rest of the tail is obvious); masked letters are where the nats go, and they get harder
# as fewer of their neighbours are visible.

# %%
letter, pad = [], []
for k in range(1, L + 1):
    m = rng.random(held_data.shape).argsort(1).argsort(1) < k  # k random positions per name
    logp = tm.log_softmax(denoise(np.where(m, mask_id, held_data)).astype(np.float64))
    nll = -np.take_along_axis(logp, held_data[..., None], -1)[..., 0]  # (N, L)
    letter.append(nll[m & (held_data != 0)].mean()); pad.append(nll[m & (held_data == 0)].mean())
plt.plot(range(1, L + 1), letter, "o-", label="masked letters")
plt.plot(range(1, L + 1), pad, "s-", label="masked PADs")
plt.axhline(np.log(V - 1), color="gray", ls="--", label="uniform guess, log 27")
plt.xlabel("k, number of masked positions"); plt.ylabel("nats per masked position"); plt.legend(fontsize=8); plt.show()

# %% [markdown]
# A tempting shortcut is to report the plain average loss over masked positions (no $1/t$
# weight, divided by the number of masks). It looks much better, but it is not a bound on
# anything and cannot be compared with an autoregressive loss; it mostly rewards the many easy
# `PAD` positions. Both numbers from the same predictions (the second uses one random $t$ per
# name, so it is noisier than the discrete-form figure above and may land a little either side
# of it; the discrete form is the one to quote):

# %%
t = tm.sample_times(len(held_data), rng)
xt, mask = tm.corrupt(held_data, t, mask_id, rng)
nll = -np.take_along_axis(tm.log_softmax(denoise(xt).astype(np.float64)), held_data[..., None], -1)[..., 0]
print(f"masked cross-entropy (NOT a likelihood):      {(nll * mask).sum() / mask.sum():.3f} nats per masked position")
print(f"NELBO from the same draw (a bound, per char): {(tm.weight(t)[:, None] * nll * mask).sum() / n_chars.sum():.3f} nats/char")

# %% [markdown]
# ## 8. The ancestral sampler, step by step
#
# Generation runs the process backwards on a time grid $1 = t_T > \dots > t_0 = 0$. From $t$
# to the next time $s$, each still-masked position is revealed with probability
# $\frac{\alpha(s) - \alpha(t)}{1 - \alpha(t)}$ (for the linear schedule, $\frac{t - s}{t}$),
# and a revealed position takes a letter drawn from the denoiser's distribution. Visible
# letters are never changed. At $s = 0$ the probability is 1, so every remaining mask is
# filled. Four big steps by hand, for three names at once:

# %%
xt = np.full((3, L), mask_id)  # start: all MASK
times = [1.0, 0.75, 0.5, 0.25, 0.0]
for t, s in zip(times[:-1], times[1:]):
    p_unmask = (tm.alpha(s) - tm.alpha(t)) / (1 - tm.alpha(t))  # (t - s) / t for the linear schedule
    unmask = (xt == mask_id) & (rng.random(xt.shape) < p_unmask)  # a coin per masked position
    proposal = tm.draw(denoise(xt), rng)  # a letter for every position, drawn from p(. | xt)
    xt = np.where(unmask, proposal, xt)  # kept only where the coin said "reveal"
    print(f"t={t:.2f} -> s={s:.2f}  p_unmask={p_unmask:.2f}  " + "  ".join(tm.decode(r, itos) for r in xt))

# %% [markdown]
# `tm.sample_ancestral` is the same loop on a grid of 32 steps, plus one trick: the denoiser
# is not told $t$, so when a step reveals nothing, $x_t$ and therefore the logits are
# unchanged and it reuses them instead of calling the network again. It returns the samples
# and the whole trajectory. Here is one name being denoised (only the steps that changed
# something are printed):

# %%
samples, trajectory = tm.sample_ancestral(denoise, 200, mask_id, rng)  # (200, L) and 33 arrays
times = np.linspace(1, 0, tm.SAMPLE_STEPS + 1)
print(f"t={times[0]:.2f} {tm.decode(trajectory[0][0], itos)}")
for i in range(1, len(trajectory)):
    if (trajectory[i][0] != trajectory[i - 1][0]).any():
        print(f"t={times[i]:.2f} {tm.decode(trajectory[i][0], itos)}")

# %% [markdown]
# Averaged over the 200 samples, the number of masks left falls along the schedule: $L \cdot
# (1 - \alpha(t)) = L\,t$, the mirror image of the forward process.

# %%
left = [(x == mask_id).sum(1).mean() for x in trajectory]
plt.plot(times, left, "o", ms=3, label="samples: mean masks left")
plt.plot(times, L * (1 - tm.alpha(times)), label="L (1 - alpha(t))")
plt.gca().invert_xaxis(); plt.xlabel("t (sampling runs from 1 to 0)"); plt.ylabel("masks left"); plt.legend(); plt.show()

# %% [markdown]
# Finally, the names. A sample is *valid* when it is letters followed only by `PAD`s; a `PAD`
# in the middle (like `ann.a`) is a mistake the model can make, so we keep `PAD` visible
# instead of stripping it. We also count how many samples are copies of a training name.

# %%
texts = [tm.decode(s, itos) for s in samples]
valid = [s for s in texts if re.fullmatch(r"[a-z]+\.*", s)]
train_set = set(train_words)
print(" ".join(s.rstrip(".") for s in texts[:20]))
print(f"{len(valid)}/{len(texts)} valid, {sum(s.rstrip('.') in train_set for s in valid)} of them copy a training name")

# %% [markdown]
# ## Summary
#
# - Tokens: letters, plus `PAD` (`.`, id 0) to end a name and `MASK` (`_`, the last id) as noise.
#   The denoiser outputs $V - 1$ classes: never `MASK`.
# - Forward process: mask each position independently with probability $1 - \alpha(t)$. It
#   destroys information gradually, ends at all-`MASK`, and is absorbing.
# - Loss: the NELBO, $\mathbb{E}_t[w(t) \sum_{\text{masked}} -\log p]$, with $w(t) = 1/t$ for the
#   linear schedule: the chance that a masked position is revealed in the next instant. Visible
#   positions cost nothing. Antithetic times and the floor `EPS` keep the training estimate's
#   variance low and finite. Evaluate it with the discrete form, $\sum_k \frac{1}{k}$ times the
#   NLL of $k$ masked positions (the $1/k$ is the $1/t$ integrated out), in nats per character.
# - Denoiser: any function $x_t \mapsto$ logits of shape $(L, V-1)$; here a 2-layer MLP whose
#   gradients are written by hand and checked against finite differences.
# - Sampler: from all-`MASK`, reveal each masked position with probability
#   $\frac{\alpha(s) - \alpha(t)}{1 - \alpha(t)}$, drawing its letter from the denoiser.
#
# Lesson 2 keeps this loop and makes the denoiser deeper (skip connections, normalisation),
# compares schedules and samplers, and measures the samples.
#
# ## Exercises
#
# Each exercise has a stub to fill in and a check cell that prints `PASS`, `FAIL` with what
# differs, or `not yet` while the stub is untouched. The reference solutions are in a separate
# file, `lessons/solutions.py`, so that you meet them only on purpose; try first.

# %%
import functools
import importlib.util

spec = importlib.util.spec_from_file_location("checks", ROOT / "lessons" / "checks.py")  # by path: any working folder
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)
check = functools.partial(checks.check, atol=1e-12)  # float64 throughout: a tighter floor


# %% [markdown]
# **Exercise 1: the cosine weight.** For $\alpha(t) = \cos(\pi t / 2)$, derive
# $w(t) = -\alpha'(t) / (1 - \alpha(t))$ by hand and implement it. The check compares it with
# `tm.weight(t, "cosine")` on a grid of times.

# %%
def cosine_weight(t):
    """w(t) for the cosine schedule; t is an array of times in (0, 1]."""
    return None  # your code here


check("exercise 1, cosine weight", cosine_weight(np.linspace(0.01, 1, 50)), tm.weight(np.linspace(0.01, 1, 50), "cosine"))


# %% [markdown]
# **Exercise 2: the gradient of the loss.** For one position, the loss is
# $w \cdot (-\log \operatorname{softmax}(z)_y)$ if it is masked and 0 otherwise; the batch loss
# divides the sum by $B \cdot L$. Write its gradient with respect to the logits $z$ (hint:
# the gradient of $-\log \operatorname{softmax}(z)_y$ is $\operatorname{softmax}(z) - \text{onehot}(y)$).
# The check compares with the gradient `tm.nelbo_loss` returns.

# %%
def nelbo_grad(logits, x0, mask, t):
    """dloss/dlogits, shape (B, L, V-1), for the linear schedule."""
    return None  # your code here


ex_logits = np.random.default_rng(2).standard_normal((4, L, V - 1))
ex_x0, ex_t = train_data[:4], np.array([0.1, 0.4, 0.7, 1.0])
ex_mask = tm.corrupt(ex_x0, ex_t, mask_id, np.random.default_rng(3))[1]
check("exercise 2, loss gradient", nelbo_grad(ex_logits, ex_x0, ex_mask, ex_t), tm.nelbo_loss(ex_logits, ex_x0, ex_mask, ex_t)[1])


# %% [markdown]
# **Exercise 3: a baseline in nats per character.** Without running any network, compute the
# held-out NELBO per character of the know-nothing denoiser (all logits zero) on `held_words`,
# following the protocol: total NELBO over total characters, one end-of-name per name. The
# check runs `tm.estimate_nelbo` with that denoiser.

# %%
def uniform_nats_per_char(names):
    """NELBO per character of the uniform denoiser on a list of names (a single float)."""
    return None  # your code here


nelbo_uniform = tm.estimate_nelbo(tm.encode(held_words, stoi), uniform, mask_id, rng, draws=1)
check("exercise 3, uniform baseline", uniform_nats_per_char(held_words), tm.per_char(nelbo_uniform, np.array([len(w) + 1 for w in held_words]))[0])


# %% [markdown]
# **Exercise 4: valid samples.** Write `is_valid(s)` for a decoded sample (a string of length
# $L$ using `.` for `PAD` and `_` for `MASK`): true when it is one or more letters followed only
# by `PAD`s. The check runs it on a handful of tricky strings.

# %%
def is_valid(s):
    """True for 'emma............', False for 'em.ma...........', '................' or 'emma___.........'."""
    return None  # your code here


tricky = ["emma............", "em.ma...........", "................", "emma___.........", "abcdefghijklmno.", "e..............."]
answers = [is_valid(s) for s in tricky]
check("exercise 4, valid samples", None if None in answers else answers, [True, False, False, False, True, True])

# %% [markdown]
# ## Solutions
#
# The reference solutions are not in this notebook but in `lessons/solutions.py` (its first
# section is this lesson's). The cell below loads that file and runs each solution through the
# same check with `strict=True`, which stops with an error if a check fails: proof that every
# check above can pass, and that it checks the right thing.

# %%
spec = importlib.util.spec_from_file_location("solutions", ROOT / "lessons" / "solutions.py")  # by path: any working folder
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)
check("solution 1", solutions.cosine_weight_solution(np.linspace(0.01, 1, 50)), tm.weight(np.linspace(0.01, 1, 50), "cosine"), strict=True)
check("solution 2", solutions.nelbo_grad_solution(ex_logits, ex_x0, ex_mask, ex_t), tm.nelbo_loss(ex_logits, ex_x0, ex_mask, ex_t)[1], strict=True)
check("solution 3", solutions.uniform_nats_per_char_solution(held_words, V), tm.per_char(nelbo_uniform, np.array([len(w) + 1 for w in held_words]))[0], strict=True)
check("solution 4", [solutions.is_valid_solution(s) for s in tricky], [True, False, False, False, True, True], strict=True)
