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
# # Lesson 4: beyond masking. Uniform noise and Gaussian noise, with their true bounds
#
# Lessons 1 to 3 destroyed text one way: replace characters by `MASK`. The first question people
# ask about text diffusion is "why masks? Images diffuse by adding Gaussian noise to pixels; why
# not do that to text?" This lesson answers it by measurement. It adds two other forward
# processes, each with its own negative ELBO, trains nothing new by hand but measures models that
# share lesson 3's backbone, data and budget, and puts every bound beside the AR twin's loss.
#
# - **Uniform noise** (`torch_version/processes/uniform.py`): a destroyed character becomes a *random
#   letter*, not a `MASK`. At the end every position is a uniformly random letter.
# - **Gaussian noise** (`torch_version/processes/gaussian.py`): each character becomes a vector, its
#   one-hot embedding, and Gaussian noise is mixed in, as for pixels. At the end there is only noise.
#
# You will see:
# 1. the three forward processes on one name, side by side, and how much of the name each leaves;
# 2. the uniform-noise bound, derived in a few lines and checked on a toy distribution whose exact
#    denoiser we can write down;
# 3. the Gaussian bound (prior, diffusion and reconstruction terms), checked the same way, and its
#    two samplers (DDPM and DDIM);
# 4. the three diffusion models and the AR twin on names: one backbone, one budget, their held-out
#    bounds with error bars and their samples;
# 5. each process animated;
# 6. the answer to "why masks?", from those numbers;
# 7. masks against the AR twin when data runs out: many epochs over the same names.
#
# The contract for both new processes is `docs/noise_processes.md`; `docs/algorithm.md` remains the
# contract for masked diffusion. `LESSONS_FAST=1` shortens every measurement; the stored outputs
# are the full ones.

# %%
import inspect, json, math, os, sys, tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "torch_version" / "processes" / "uniform.py").is_file()), None)
if ROOT is None:  # the notebook was opened away from the repository it belongs to
    raise FileNotFoundError(f"no torch_version/processes/uniform.py in {Path.cwd()} or above it: open this notebook from the "
                            f"lessons/ folder of a clone of the repository (or start Jupyter in the repository).")
sys.path.insert(0, str(ROOT))  # the repository root, so the tiers import as packages
from torch_version import diffusion, model, sample, train
from torch_version.bench import crossover as bench_crossover, names as bench_names
from torch_version.engine import checkpoints, devices
from torch_version.processes import gaussian, uniform
from torch_version.tools import visualize

FAST = os.environ.get("LESSONS_FAST") == "1"  # smaller measurements; every cell still runs
plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 3)})
torch.manual_seed(1337)
generator = torch.Generator().manual_seed(1337)  # every random draw below comes from here (host-side)
DEVICE = devices.default_device("names")  # the one place this lesson picks a device
print("fast mode" if FAST else "full mode", f"- torch {torch.__version__}, device {DEVICE}, "
      f"{torch.get_num_threads()} CPU thread(s)")

# %% [markdown]
# ## 1. Three ways to destroy a name
#
# All three processes run on the same clock: $t = 0$ is the clean name, $t = 1$ is pure noise,
# and each position is destroyed independently of the others. Masking and uniform noise use the
# same schedule, $\alpha(t) = 1 - t$: the chance that a position is still untouched. Gaussian
# noise has its own schedule: $z_t = \alpha_t\, e(x_0) + \sigma_t\, \epsilon$ with
# $\alpha_t^2 + \sigma_t^2 = 1$ and $\epsilon \sim N(0, I)$, where $e(v)$ is the one-hot vector of
# token $v$. Its log signal-to-noise ratio $\log(\alpha_t^2 / \sigma_t^2)$ falls in a straight
# line from $+10$ at $t = 0$ to $-10$ at $t = 1$. A Gaussian $z_t$ is a vector per position;
# below each is shown as its *nearest letter*, the largest coordinate.

# %%
data = train.load_dataset("names")  # the held-out split of lessons 1-3: every 10th name
itos, L = data["itos"], data["block_size"]
K = len(itos) - 1  # 27 real tokens (PAD and the letters); MASK, id 27, is used by masking only
mask_id, pad_id = K, 0
x0 = diffusion.encode(["isabella"], data["stoi"], L)  # (1, 16)
print(f"{'t':>5}  {'masked':<16}  {'uniform':<16}  Gaussian (nearest letter)")
for t in [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]:
    tt = torch.tensor([t], dtype=torch.float64)
    shared = torch.Generator().manual_seed(7)  # the same uniforms for masking and uniform noise: same positions hit
    masked, _ = diffusion.corrupt(x0, tt, mask_id, shared)
    noisy, _ = uniform.corrupt(x0, tt, K, torch.Generator().manual_seed(7))
    z = gaussian.corrupt(x0, tt, K, torch.Generator().manual_seed(7))  # (1, 16, 27)
    print(f"{t:5.1f}  {diffusion.decode(masked[0], itos):<16}  {diffusion.decode(noisy[0], itos):<16}  "
          f"{diffusion.decode(z[0].argmax(-1), itos)}")

# %% [markdown]
# The three rows destroy the same information at different speeds and, more to the point, in
# different ways. A `MASK` says "this position is unknown", so the denoiser knows exactly which
# positions to guess and how noisy the input is. A random letter says nothing of the kind: `e`
# in a noisy name may be the truth or noise. A Gaussian vector is never exactly a letter; it
# drifts towards one as $t$ falls. How much of the name is still readable, averaged over many
# names and draws:

# %%
ts = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
names = data["held"][:512]  # (512, 16) held-out names, PADs included
shown = {"masked (and flagged as unknown)": [], "uniform noise": [], "Gaussian noise (nearest letter)": []}
for t in ts:
    tt = t.repeat(len(names))
    shown["masked (and flagged as unknown)"].append((diffusion.corrupt(names, tt, mask_id, generator)[0] == names).double().mean())
    shown["uniform noise"].append((uniform.corrupt(names, tt, K, generator)[0] == names).double().mean())
    shown["Gaussian noise (nearest letter)"].append((gaussian.corrupt(names, tt, K, generator).argmax(-1) == names).double().mean())
for label, share in shown.items():
    plt.plot(ts, share, label=label)
plt.axhline(1 / K, color="grey", lw=0.8, ls=":", label=f"chance, 1/{K}")
plt.xlabel("time t"); plt.ylabel("positions showing their character")
plt.legend(fontsize=8); plt.show()

# %% [markdown]
# Uniform noise keeps a little more than masking ($1/27$ of the resampled positions draw their own
# letter back), but the denoiser cannot tell those from the rest. Gaussian noise with this
# schedule leaves the name readable until about $t = 0.35$ and destroys it between 0.35 and
# 0.55: a log-SNR line spends much of its time where the answer is already obvious or already
# gone. None of this says which is *best*: that depends on what the denoiser can learn from
# each, and only a bound measures that.
#
# ## 2. Uniform noise and its bound
#
# **Forward.** Each position, independently, is *resampled* with probability $1 - \alpha(t)$ to a
# token drawn uniformly from the $K$ real ones (possibly its own). So
# $q_t(y \mid x_0) = \alpha\,[y = x_0] + c$ with $c = (1 - \alpha)/K$. At $t = 1$ every name is
# uniform noise: that is the prior, and it costs nothing in the bound.
#
# **The bound, in a few lines.** Look at one position as a Markov chain in continuous time. It
# jumps to a uniformly drawn token at rate $\beta(t) = -\alpha'(t)/\alpha(t)$ (`uniform.weight`).
# Run backwards in time, given the truth $x_0$, it jumps from its current token $x$ to each
# $y \ne x$ at rate $\frac{\beta}{K} r_y$ with $r_y = q_t(y \mid x_0) / q_t(x \mid x_0)$. The
# model does not know $x_0$; it has the denoiser's distribution $p$ over $x_0$ and uses the
# average ratio, $\hat r_y = \sum_v p_v\, q_t(y \mid v) / q_t(x \mid v)$. The KL divergence between
# two jump processes is an integral over time of their rates compared with
# $\phi(z) = z - 1 - \log z \ge 0$ (zero only where the rates agree), so
#
# $$\text{NELBO}(x_0) = \underbrace{0}_{\text{prior}} + \int_{\text{EPS}}^1 \mathbb{E}_{x_t} \sum_\ell \frac{\beta}{K} \sum_{y \ne x_\ell} r_y\, \phi\!\left(\frac{\hat r_y}{r_y}\right) dt + \underbrace{\mathbb{E}_{x_{\text{EPS}}}\Big[-\sum_\ell \log p(x_0^\ell \mid x_{\text{EPS}})\Big]}_{\text{reconstruction}}.$$
#
# Two differences from masking matter. Every position counts, since a clean-looking letter may be
# noise. And the integral stops at EPS: a model that leaves probability on a wrong letter where
# $x_t$ looks clean pays about $1/t$ for it, which diverges at $t = 0$; the reconstruction term
# pays for the last stretch instead. The code is the masked loop with those changes; `diff`
# `torch_version/diffusion.py` against `torch_version/processes/uniform.py` to see them one by one:

# %%
print(inspect.getsource(uniform.corrupt))
print(inspect.getsource(uniform.nelbo_loss))

# %% [markdown]
# **Checked on a toy.** Like lesson 3, we take a distribution small enough to enumerate (the
# tests' toy, `tests/toy.py`): four strings of three tokens over `a b c`, `aab abc cba bbb`, with
# probabilities 0.4, 0.3, 0.2, 0.1. With uniform noise the exact
# denoiser is Bayes' rule over the four strings: $q(x_0 \mid x_t) \propto q(x_0)\, \prod_\ell
# q_t(x_t^\ell \mid x_0^\ell)$, and its per-position marginals are what a perfect network would
# output. Plugged into `uniform.estimate_nelbo` it must give $-\log q(x_0)$, up to two things:
# Monte Carlo noise, and a gap of order EPS ($10^{-3}$), because the reconstruction term decodes
# the three positions independently (`docs/noise_processes.md` derives it). The stated
# tolerance: four standard errors plus 0.01 nats.

# %%
STRINGS = torch.tensor([[0, 0, 1], [0, 1, 2], [2, 1, 0], [1, 1, 1]])  # aab, abc, cba, bbb
Q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
ONE_HOT = torch.eye(3, dtype=torch.float64)[STRINGS]  # (4 strings, 3 positions, 3 tokens)
TOY = ["aab", "abc", "cba", "bbb"]


def marginals(log_posterior):
    """Per-position log p(x0_l = v) (B, 3, 3) from a log posterior over the four strings (B, 4)."""
    return torch.einsum("bs,slv->blv", log_posterior.softmax(1), ONE_HOT).log()


def uniform_oracle(xt, t):
    """The exact denoiser under uniform noise: Bayes' rule over the strings, then the marginals."""
    a = uniform.alpha(t.double().cpu())[:, None, None]  # (B, 1, 1)
    log_likelihood = (a * (xt.cpu()[:, None, :] == STRINGS[None]).double() + (1 - a) / 3).log().sum(-1)  # (B, 4)
    return marginals(Q.log() + log_likelihood)


def check_bound(estimate, m, tolerance=0.01):
    """estimate (4 m,): m NELBO estimates per toy string, in order. One line per string."""
    per_string = estimate.view(4, m)
    for name, values, q in zip(TOY, per_string, Q):
        mean, se = values.mean().item(), values.std().item() / math.sqrt(m)
        gap = mean + math.log(q)
        verdict = "within" if abs(gap) <= 4 * se + tolerance else "OUTSIDE"
        print(f"{name}: NELBO {mean:.4f} +- {se:.4f}, -log q {-math.log(q):.4f}, gap {gap:+.4f} ({verdict} tolerance)")


m = 500 if FAST else 4000  # estimates per toy string
toy_x0 = STRINGS.repeat_interleave(m, 0)  # (4 m, 3)
check_bound(uniform.estimate_nelbo(toy_x0, uniform_oracle, 3, generator, steps=64), m)  # 64 stratified times each

# %% [markdown]
# The sampler runs the reverse process from uniform noise: at each step it calls the denoiser once
# and redraws *every* position from the true posterior averaged over the denoiser's guess,
# $q(x_s = y \mid x_t) = \sum_v p_v\, q(x_t \mid y)\, q_s(y \mid v) / q_t(x_t \mid v)$. With the
# exact denoiser its samples follow $q$, up to an error of order 1/steps: positions are drawn
# independently within a step, as in lesson 3's parallel decoding, so with few steps some
# samples are none of the four strings:

# %%
def toy_frequencies(samples):
    """Share of each toy string among samples (n, 3), and the share that is none of them."""
    hits = (samples[:, None, :] == STRINGS[None]).all(-1).double()  # (n, 4)
    return hits.mean(0), 1 - hits.sum(1).mean().item()


n_toy = 1000 if FAST else 8000
for steps in [4, 64]:
    drawn = uniform.sample_ancestral(uniform_oracle, n_toy, 3, 3, generator, steps).samples
    share, off = toy_frequencies(drawn)
    print(f"uniform noise, {steps:2d} steps: " + ", ".join(f"{s} {f:.3f}" for s, f in zip(TOY, share))
          + f"; not a toy string {off:.3f}   (q: 0.4, 0.3, 0.2, 0.1)")

# %% [markdown]
# ## 3. Gaussian noise in embedding space, and its bound
#
# **Embeddings.** Token $v$ becomes $e(v)$, the $v$-th unit vector of $\mathbb{R}^K$. They are
# fixed, not learned, on purpose: a learned embedding lets the training loss cheat (shrink the
# embeddings, or pull them together, and denoising gets easy while the bound says nothing
# useful), which is why the published embedding-space models (Diffusion-LM, CDCD, Plaid) each
# need an extra normalisation or loss. Unit vectors cannot collapse and keep every pair of letters
# the same distance apart.
#
# **The bound** (the variational diffusion model's, in continuous time), per name, in nats:
#
# $$\text{NELBO}(x_0) = \underbrace{\mathrm{KL}\big(q(z_1 \mid x_0)\,\|\,N(0, I)\big)}_{\text{prior}} + \underbrace{\int_0^1 \tfrac{1}{2}\big(-\mathrm{SNR}'(t)\big)\, \mathbb{E}_\epsilon \big\| e(x_0) - \hat e(z_t, t) \big\|^2 dt}_{\text{diffusion}} + \underbrace{\mathbb{E}_{z_0}\big[-\log p(x_0 \mid z_0)\big]}_{\text{reconstruction}}.$$
#
# The denoiser outputs a distribution $p$ over the characters at every position, and
# $\hat e = \sum_v p_v\, e(v)$ is its mean embedding (for unit vectors, $p$ itself). The weight
# $-\mathrm{SNR}'(t)/2$ is `gaussian.weight`: large near $t = 0$, where a small error in
# $\hat e$ still costs a lot, tiny near $t = 1$. The prior term is a closed form (the end of the
# schedule is not exactly $N(0, I)$), and the reconstruction decodes each $z_0$ by its Gaussian
# likelihood. Both end terms are constants of training, so the loss is the diffusion term alone:

# %%
print(inspect.getsource(gaussian.nelbo_loss))
print(f"prior term per name of {L} positions: {gaussian.prior_kl(L, K):.2e} nats; "
      f"weight at t = 0, 0.5, 1: {', '.join(f'{w:.3g}' for w in gaussian.weight(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)))}")

# %% [markdown]
# **Checked on the toy.** The exact denoiser is again Bayes' rule, now with a Gaussian likelihood:
# $q(x_0 \mid z_t) \propto q(x_0)\, N(z_t;\ \alpha_t e(x_0),\ \sigma_t^2 I)$. Its bound exceeds
# $-\log q(x_0)$ by two end-point gaps (the reconstruction decodes positions independently, and
# the prior is not exactly $q(z_1)$), both below $10^{-4}$ per position at these end points; the
# tolerance is again four standard errors plus 0.01 nats.

# %%
def gaussian_oracle(zt, t):
    """The exact denoiser under Gaussian noise: Bayes' rule over the strings, then the marginals."""
    t = t.double().cpu()
    a, s = gaussian.alpha(t)[:, None, None, None], gaussian.sigma(t)[:, None]
    log_likelihood = -((zt.double().cpu()[:, None] - a * ONE_HOT[None]) ** 2).sum((-1, -2)) / (2 * s ** 2)  # (B, 4)
    return marginals(Q.log() + log_likelihood)


check_bound(gaussian.estimate_nelbo(toy_x0, gaussian_oracle, 3, generator, steps=64), m)

# %% [markdown]
# Two samplers start from $z_1 \sim N(0, I)$ and walk the time grid down to 0. **DDPM**
# (ancestral) draws $z_s$ from the true posterior $q(z_s \mid z_t, x_0)$ with the denoiser's
# $\hat e$ put in for $e(x_0)$, adding fresh noise at every step. **DDIM** takes the noise that
# $z_t$ implies, $\hat\epsilon = (z_t - \alpha_t \hat e)/\sigma_t$, and moves deterministically:
# $z_s = \alpha_s \hat e + \sigma_s \hat\epsilon$. Both decode $z_0$ to characters at the end.
# With the exact denoiser:

# %%
for label, sampler in [("DDPM", gaussian.sample_ancestral), ("DDIM", gaussian.sample_ddim)]:
    for steps in [4, 64]:
        drawn = sampler(gaussian_oracle, n_toy, 3, 3, generator, steps).samples
        share, off = toy_frequencies(drawn)
        print(f"{label}, {steps:2d} steps: " + ", ".join(f"{s} {f:.3f}" for s, f in zip(TOY, share))
              + f"; not a toy string {off:.3f}")

# %% [markdown]
# With 64 steps both follow $q$ closely, and even with 4 steps neither makes strings that are
# not in the data, unlike the uniform sampler above (and lesson 3's masked one). A Gaussian step
# does not decide a position: it moves every vector a little towards the denoiser's guess, and
# the next step's guess already sees where the other positions are heading. What few steps cost
# here is the balance between the strings, a few hundredths off $q$.
#
# ## 4. One backbone, one budget, on names
#
# The models measured here are lesson 3's transformer: 4 layers, width 32, 3,500 steps of 512
# names, Muon, the same seed, the same split. Two changes let it read the other kinds of noise.
# It is told $t$, because neither a random letter nor a noisy vector shows how noisy the input
# is (a `MASK` count does), and a Gaussian input is a vector per position, read by a linear map
# instead of an embedding table (for a one-hot vector that is the same thing). The training
# loop does not change at all: every process file has `diffusion.py`'s functions, and
# `train.py` calls those of the file that `--noise` names (`train.PROCESSES`): `corrupt_batch`
# draws the noise, `batch_loss` scores the denoiser on it.

# %%
print(inspect.getsource(model.time_features))
print(inspect.getsource(train.batch_loss))
print(inspect.getsource(uniform.batch_loss))

# %% [markdown]
# `python3 torch_version/bench/names.py --noise all` trains the four models (masked, uniform and
# Gaussian diffusion, and the AR twin) and measures them; `weights/names/` holds the four trained
# models that it wrote. This cell measures each one's bound on the 3,204 held-out names: the
# masked model by the discrete form (every number of masks of every name), the other two by their
# estimators on 16 stratified times per name; each with 16 draws (fast mode: 300 names, 2 draws).
# Two standard errors each: over the names (another sample of names would move the figure by
# about this), and over the draws (other masks or noise would move it by about this).

# %%
held = data if not FAST else dict(data, held=data["held"][:300], n_chars=data["n_chars"][:300])
draws = 2 if FAST else 16
autocast = devices.autocast(DEVICE, "float32")
models, bounds = {}, {}
for noise, file in [("AR twin", "ckpt_ar.pt"), ("masked", "ckpt.pt"), ("uniform", "ckpt_uniform.pt"), ("gaussian", "ckpt_gaussian.pt")]:
    net, ckpt = checkpoints.load_checkpoint(ROOT / "weights" / "names" / file, DEVICE)
    ar = noise == "AR twin"
    models[noise] = net
    process = train.PROCESSES["masked" if ar else noise]
    bounds[noise] = train.evaluate(net, held, ar, draws, False, autocast, mask_id, pad_id, process)
    nats, se, draw_se = bounds[noise]
    print(f"{noise:>8}: {'exact NLL' if ar else 'NELBO    '} {train.figure_text(nats, se, draw_se)} nats/char"
          + ("" if ar else f", {nats / bounds['AR twin'][0]:.3f}x the AR twin's"))

# %%
labels = list(bounds)
plt.bar(labels, [bounds[k][0] for k in labels], yerr=[math.hypot(bounds[k][1], bounds[k][2]) for k in labels],
        color=["tab:grey", "tab:blue", "tab:orange", "tab:green"], capsize=4)
plt.ylim(1.8, max(b[0] for b in bounds.values()) + 0.15)
plt.ylabel("held-out nats per character"); plt.title("bound (diffusion) and exact NLL (AR twin), same budget")
plt.show()

# %% [markdown]
# The bars' error bars combine both standard errors; all four models are scored on the same
# names, so the spread over names is largely shared, and the gaps between bars are better known
# than the bars themselves. Samples tell the rest. 1,000 names per model (fast mode: 100), each
# diffusion sampler with 64 steps, scored as in lesson 3 and `evaluate.py`: the share that are
# valid names (letters, then only `PAD`), copied from the training set or new, the distance
# between their length distribution and the data's, the AR twin's perplexity as a judge, and the
# unigram entropy of their letters (low entropy beside a good judge score is collapse):

# %%
run = lambda net, noise: dict(model=net, noise=noise, args=train.parse_args(["--device", DEVICE]))  # noqa: E731
rows = bench_names.sample_table([run(models[k], k) for k in ["masked", "uniform", "gaussian"]],
                                run(models["AR twin"], "masked"), data, n=100 if FAST else 1000)

# %% [markdown]
# ## 5. Watching each process run backwards
#
# The same eight names' worth of noise, run backwards by each trained model. Masking fills
# positions in, once each, and a filled position never changes. Under uniform noise every letter
# may change at every step (the yellow cells); the name flickers into shape. Under Gaussian noise
# each cell shows its vector's nearest letter: noise at first, then the vectors snap onto letters
# between $t \approx 0.55$ and $0.35$, the stretch of the schedule where the name was destroyed.

# %%
gif_dir = Path(tempfile.mkdtemp()) if FAST else ROOT / "docs"  # full mode: the GIFs the docs show
films = {}
result = visualize.diffusion_film(sample.make_denoiser(models["masked"], DEVICE), "ancestral", 8, L, mask_id,
                                  generator, 24, None, 1.0, "linear")[0]
films["masked"] = (result, "grey _: masked    yellow: unmasked in this step    .: PAD (end of name)")
for noise, title in [("uniform", "uniform noise: random letters"), ("gaussian", "Gaussian noise: each cell its nearest letter")]:
    _, trajectory = train.sample_noise(models[noise], noise, 8, L, generator, DEVICE, "float32", steps=24)
    times = np.linspace(1, 0, len(trajectory))
    labels = [f"step {j}/{len(trajectory) - 1}, t={t:.2f}" for j, t in enumerate(times)]
    films[noise] = (visualize.Film(title, trajectory, labels),
                    "yellow: changed in this step    .: PAD (end of name)")
for noise, (film, legend) in films.items():
    fig, anim = visualize.animate([film], itos, mask_id, pad_id, True, legend=legend)
    path = gif_dir / f"noise_{noise}.gif"
    visualize.save_gif(anim, path)
    plt.close(fig)
    print(f"{path.relative_to(gif_dir.parent) if not FAST else path.name}: {path.stat().st_size / 1e3:.0f} kB")

# %% [markdown]
# The three animations, as that cell writes them to `docs/` (shown here by reference, so the
# notebook does not carry them: masked, uniform, Gaussian):
#
# ![Masked noise](../docs/noise_masked.gif) ![Uniform noise](../docs/noise_uniform.gif) ![Gaussian noise](../docs/noise_gaussian.gif)
#
# ## 6. Why masks?
#
# The numbers above, from the stored run (the committed models, 16 draws, all 3,204 held-out
# names), in one line each:
#
# - **The bounds order the processes, by far more than their error bars.** The AR twin's exact
#   NLL is 1.999 nats/char; masked diffusion's bound 2.080 (1.04x), uniform noise's 2.218
#   (1.11x), Gaussian noise's 2.431 (1.22x). The gaps, 0.14 and 0.35 nats/char above masking,
#   are about 17 and 43 times the standard error over the names (about 0.008, and largely shared,
#   since every model is scored on the same names), and about 26 and 83 times the noise of the
#   two models' draws taken together.
# - **The samples agree.** Nearly all samples of every model are valid names with the data's
#   letter entropy, so none of them collapsed; the AR judge finds the masked model's samples the
#   likeliest of the three (perplexity 10.9), then uniform noise's (12.5), then Gaussian noise's
#   (15.8), against 6.8 for the twin's own and 7.5 for real names.
# - **Masks are also cheaper to sample.** A revealed position never changes, so the masked
#   sampler calls the network only when something changed: 14 calls per name for 64 steps,
#   against 64 for the other two, whose every step may change every position.
#
# Why masking wins, in the terms of the bounds. A `MASK` is information: the denoiser knows
# which positions are unknown and how many, and it pays only for those. Under uniform noise it
# must also find the wrong letters among letters that look right, and the bound charges every
# position for it. Under Gaussian noise nothing is ever exactly known until the very end: the
# bound integrates the denoiser's error over a continuum of noise levels, and the weight of the
# low-noise end is huge ($2.2 \times 10^5$ at $t = 0$), so small doubts about nearly clean names
# cost as much as guessing the hard letters. The answer to "why masks?" is then not "because
# the papers use them": on the same data, backbone and budget, masking gives the tightest bound
# of the three, the likeliest samples and the cheapest sampler.
#
# What this does not show. One small model (52k parameters), one budget (3,500 steps of 512
# names) and settings chosen for masked diffusion (the learning rate, Muon, the linear schedule)
# were used for all three; the Gaussian schedule's end points were fixed, not learned as the
# variational diffusion model learns them. At scale the published ordering is the same (text8,
# bits per character: AR 1.23, masked 1.37-1.45, uniform 1.47-1.61, Gaussian in embedding space
# 1.48), with uniform and Gaussian noise close together; here Gaussian noise is clearly last.
# Exercise for the curious: `python3 torch_version/train.py --noise gaussian --lr 3e-3` and other
# settings, scored by the same bound.
#
# ## 7. When data runs out: masks against the AR twin, epoch by epoch
#
# Every model above saw the 28,829 training names about 62 times (3,500 steps of 512). That is
# the data-constrained regime in miniature: little data, seen again and again. Two 2025 papers
# measured it at scale. Prabhudesai et al. ("Diffusion beats autoregressive in data-constrained
# settings") found repeated data worth nearly as much as fresh data for about 4 epochs for an AR
# model but about 100 for masked diffusion (the "half-life" of repeated data: about 15 epochs
# against about 500), and AR models overfitting while diffusion kept improving. Ni et al.
# ("Diffusion language models are super data learners") saw a crossover: with limited unique
# data, a diffusion model trained for more epochs overtakes a matched AR model, earlier for
# larger models (their largest: 1.7B parameters, 10B unique tokens, about 150 epochs).
#
# Why should repetition hurt the AR twin more? Each epoch it sees each name exactly as before:
# the same characters in the same order, the same L predictions. The denoiser sees each name
# under a new mask set each time: k drawn from 1..L, then k of the L positions. This cell counts
# how many *different* corrupted inputs a name gives in n epochs (k uniform, then a uniform set
# of that size, as `diffusion.sample_k` and `corrupt_k` draw them):

# %%
def distinct_inputs(n, L):
    """Expected number of different mask sets among n draws: a set of size k has probability 1 / (L C(L, k))."""
    return sum(math.comb(L, k) * (1 - (1 - 1 / (L * math.comb(L, k))) ** n) for k in range(1, L + 1))


for n in [1, 10, 100, 400]:
    print(f"{n:>3} epochs: the AR twin has seen each name 1 way, the denoiser {distinct_inputs(n, L):.0f} ways "
          f"(of {2 ** L - 1:,} mask sets of {L} positions)")

# %% [markdown]
# So the denoiser's training set grows with the epochs, a kind of data augmentation that the
# objective does by itself. Whether that makes it *better* than the AR twin is a measurement:
# `python3 torch_version/bench/crossover.py` trains both for 100 epochs at widths 16 and 32,
# each with a small regularisation sweep (dropout for both, and weight decay for the AR twin,
# which overfits), scores them on a log grid of epochs (the denoiser by the full discrete form
# of its bound, the AR twin by its exact NLL), then trains each model's best setting at width 32
# for 400 epochs. Its curve file, `docs/crossover.json`, is that run; this cell prints its table
# (each run's best checkpoint, measured there with 16 draws; `*` marks each model's best) and
# draws its curves:

# %%
crossover = json.loads((ROOT / "docs" / "crossover.json").read_text())
runs = list(crossover["runs"].values())
bench_crossover.report(runs)
plot_path = Path(tempfile.mkdtemp()) / "crossover.png"
bench_crossover.plot(runs, plot_path)
plt.figure(figsize=(11, 4)); plt.imshow(plt.imread(plot_path)); plt.axis("off"); plt.show()  # a PNG output, as every figure here

# %% [markdown]
# What the run says, plainly: **within this budget the denoiser never goes below the AR twin.**
# Each at its own best setting and checkpoint, the denoiser's bound is 1.06x the twin's loss at
# both widths and both budgets (width 32, 400 epochs: 2.052 against 1.935 nats/char). Along a
# run the gap narrows, from 1.125x after one epoch to 1.06x at the end of the schedule, but four
# times the epochs moved the end point only from 1.060x to 1.057x, and the narrower model ends
# at the same 1.06x.
#
# The two models do respond to repetition as the papers say, just not by enough to cross:
#
# - the denoiser needs no regularisation (dropout 0.1 cost it 0.04-0.06 nats/char) and is still
#   improving at the end of every run, 400 epochs included: no sign of overfitting;
# - the AR twin without regularisation overfits at width 32 (best at epoch 64, 1.993, then 2.049
#   at epoch 100: the faint curve); with dropout 0.1 it keeps improving to 400 epochs, and that
#   is what keeps it ahead. Weight decay did little.
#
# Why no crossover here, when the papers find one? Their models run to billions of parameters;
# these have 13k and 52k, for 200K characters. Ni et al. find the crossover earlier for larger
# models, and both papers find it only once compute is well past the point where the AR model
# stops gaining. Here the twin only begins to overfit (it takes 64 epochs), and a little
# dropout stops it; in their regime, input or parameter noise helps the AR model but does not
# close the gap (Ni et al.). The experiment to run next is wider models for longer: the same
# command with `--widths 64,128`.
#
# ## Exercises
#
# Fill in a stub, run its check: `PASS`, `FAIL` (and why) or `not yet`. The reference solutions
# are in `lessons/solutions.py` (its fourth section is this lesson's); try first.

# %%
import importlib.util

spec = importlib.util.spec_from_file_location("checks", ROOT / "lessons" / "checks.py")  # by path: any working folder
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)
check = checks.check


# %% [markdown]
# **Exercise 1: the uniform-noise marginal.** Return $q_t(\cdot \mid x_0)$, the distribution of
# one position at time $t$ given its clean token `v`, as a vector of `K` probabilities, for the
# linear schedule. The check compares with the frequencies of 200,000 draws of `uniform.corrupt`
# (so it allows 0.005 of sampling noise).

# %%
def uniform_marginal(v, t, K):
    return None  # your code here


ex_draws = uniform.corrupt(torch.full((200_000, 1), 3), torch.full((200_000,), 0.7, dtype=torch.float64), K,
                           torch.Generator().manual_seed(0))[0][:, 0]
ex_frequencies = torch.bincount(ex_draws, minlength=K).double() / len(ex_draws)
check("exercise 1, uniform marginal", uniform_marginal(3, 0.7, K), ex_frequencies, atol=0.005)

# %% [markdown]
# **Exercise 2: the ELBO weight of Gaussian noise.** With $\gamma(t) = -\log \mathrm{SNR}(t)$
# running linearly from $\gamma_{\min} = -10$ to $\gamma_{\max} = 10$, return the weight
# $-\mathrm{SNR}'(t)/2$ for an array of times. The check compares with `gaussian.weight`.

# %%
def gaussian_weight(t, gamma_min=-10.0, gamma_max=10.0):
    return None  # your code here


ex_t = np.linspace(0, 1, 11)
check("exercise 2, Gaussian weight", gaussian_weight(ex_t), gaussian.weight(torch.tensor(ex_t)).numpy())

# %% [markdown]
# **Exercise 3: the prior term.** $q(z_1 \mid x_0) = N(\alpha_1 e(x_0), \sigma_1^2 I)$ in $K$
# dimensions, with $|e(x_0)| = 1$. Return its KL divergence from $N(0, I)$ for one position, given
# $\alpha_1$ and $\sigma_1$ (per dimension, $\mathrm{KL}(N(m, s^2) \| N(0, 1)) =
# (m^2 + s^2 - 1 - \log s^2)/2$). The check compares with `gaussian.prior_kl` for one position.

# %%
def prior_kl_one_position(alpha1, sigma1, K):
    return None  # your code here


a1, s1 = (float(f(torch.tensor(1.0, dtype=torch.float64))) for f in (gaussian.alpha, gaussian.sigma))
check("exercise 3, prior KL", prior_kl_one_position(a1, s1, K), gaussian.prior_kl(1, K), atol=1e-12)

# %% [markdown]
# **Exercise 4: one DDIM step.** Given $z_t$, the denoiser's mean embedding $\hat e$, and the
# signal and noise scales at $t$ and $s$, return $z_s$. The check runs `gaussian.sample_ddim` for a
# single step (from $t = 1$ to $s = 0$) with a denoiser that always says the same thing, and
# compares its last $z$ with your step.

# %%
def ddim_step(zt, e_hat, alpha_t, sigma_t, alpha_s, sigma_s):
    return None  # your code here


fixed = torch.randn(1, 3, K, generator=torch.Generator().manual_seed(1))  # the constant denoiser's logits
ex_trajectory = gaussian.sample_ddim(lambda z, t: fixed, 1, 3, K, torch.Generator().manual_seed(2), steps=1).trajectory
scales1, scales0 = gaussian.scales(1.0), gaussian.scales(0.0)
ex_answer = ddim_step(ex_trajectory[0], fixed.softmax(-1), scales1[0], scales1[1], scales0[0], scales0[1])
check("exercise 4, DDIM step", ex_answer, ex_trajectory[-1], atol=1e-5)

# %% [markdown]
# ## Solutions
#
# The cell below loads `lessons/solutions.py` and runs each solution through the same check with
# `strict=True`, which stops with an error if a check fails: proof that every check above can pass.

# %%
spec = importlib.util.spec_from_file_location("solutions", ROOT / "lessons" / "solutions.py")  # by path: any working folder
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)
check("solution 1", solutions.uniform_marginal_solution(3, 0.7, K), ex_frequencies, strict=True, atol=0.005)
check("solution 2", solutions.gaussian_weight_solution(ex_t), gaussian.weight(torch.tensor(ex_t)).numpy(), strict=True)
check("solution 3", solutions.prior_kl_one_position_solution(a1, s1, K), gaussian.prior_kl(1, K), strict=True, atol=1e-12)
check("solution 4", solutions.ddim_step_solution(ex_trajectory[0], fixed.softmax(-1), scales1[0], scales1[1], scales0[0],
                                                 scales0[1]), ex_trajectory[-1], strict=True, atol=1e-5)
