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
# # Lesson 5: from the twin to the denoiser. Block diffusion
#
# Lessons 3 and 4 put the masked denoiser beside its autoregressive (AR) twin and found one
# difference between them, the causal mask, and one gap: the denoiser's bound sits above the
# twin's loss (1.04x on names, 1.31x on the small Shakespeare preset), and its samples of long text
# read worse. Block diffusion (Arriola et al., *Block Diffusion: Interpolating Between
# Autoregressive and Diffusion Language Models*, ICLR 2025) is the knob between the two models.
# Cut the sequence into blocks of $b$ characters; write the blocks left to right, as the twin
# writes characters; write each block by masked diffusion, given the clean blocks before it.
# $b = 1$ is the AR twin's factorisation, $b = L$ is the masked model, and in between is a family
# of models whose bound moves from one to the other.
#
# You will see:
# 1. a name cut into blocks, and what the denoiser reads in training: the noisy sequence and the
#    clean one side by side;
# 2. the attention mask that makes one forward pass score every block, drawn for $b = 1$, $4$ and $16$;
# 3. the bound, derived block by block;
# 4. the checks on a toy whose exact denoiser we can write down: the bound is tight, $b = 1$ is an
#    exact AR likelihood, $b = L$ is the masked model's estimate, and a mask that leaks is caught;
# 5. sampling block by block with a KV cache;
# 6. the measurement: the bound against $b$ on names and on Shakespeare, beside the twin and the
#    masked model;
# 7. samples, and a paragraph of Shakespeare emerging from masks.
#
# The code is `torch_version/processes/block.py`, written so that `diff diffusion.py
# processes/block.py` shows exactly what block diffusion changes, and the mask in
# `torch_version/model.py`. `LESSONS_FAST=1` shortens every run; the stored outputs are the full ones.

# %%
import inspect, json, os, sys, tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "torch_version" / "processes" / "block.py").is_file()), None)
if ROOT is None:  # the notebook was opened away from the repository it belongs to
    raise FileNotFoundError(f"no torch_version/processes/block.py in {Path.cwd()} or above it: open this notebook from "
                            f"the lessons/ folder of a clone of the repository (or start Jupyter in the repository).")
sys.path.insert(0, str(ROOT))  # the repository root, so the tiers import as packages
from tests import toy
from torch_version import diffusion, model, sample, train
from torch_version.bench import block_sizes
from torch_version.engine import checkpoints, devices
from torch_version.processes import block

FAST = os.environ.get("LESSONS_FAST") == "1"  # smaller measurements; every cell still runs
plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 3)})
torch.manual_seed(1337)
generator = torch.Generator().manual_seed(1337)  # every random draw below comes from here (host-side)
DEVICE = devices.default_device("names")  # the one place this lesson picks a device
print("fast mode" if FAST else "full mode", f"- torch {torch.__version__}, device {DEVICE}, "
      f"{torch.get_num_threads()} CPU thread(s)")

# %% [markdown]
# ## 1. A name in blocks
#
# Names are 16 positions: the letters, then `PAD` (`.`). With $b = 4$ a name is four blocks. The
# AR twin predicts position $l$ from positions $< l$; the masked model predicts every masked
# position from everything unmasked; block diffusion predicts the masked positions of block $j$
# from the unmasked positions of block $j$ **and all of blocks $< j$, clean**. In training every
# block is noised at once, each with its own number of masks $k_j \in \{1..b\}$, and the
# denoiser reads two copies of the name: the noisy one, to be denoised, and the clean one, as the
# context of the blocks after it.

# %%
data = train.load_dataset("names")
itos, L, mask_id = data["itos"], data["block_size"], len(data["itos"]) - 1
x0 = data["train"][:3].cpu()  # three training names, (3, 16)
noisy = block.corrupt_batch(x0, mask_id, generator, block=4)
print("k masks in each block of 4:", noisy["k"].tolist())
for clean, xt in zip(x0, noisy["xt"]):
    cut = lambda ids: " | ".join(diffusion.decode(ids[j:j + 4], itos) for j in range(0, L, 4))  # noqa: E731
    print(f"noisy  {cut(xt)}      clean  {cut(clean)}")

# %% [markdown]
# ## 2. One forward pass for every block: the attention mask
#
# The denoiser reads $[x_t, x_0]$, $2L$ positions, with the noisy copy first; both copies use
# positions $0..L-1$ (so block $j$ of the noisy copy and block $j$ of the clean copy sit at the
# same place). Attention is then cut by block:
# - a **noisy** block sees its own noisy block (both ways: that is masked diffusion within the
#   block) and the **clean** blocks before it, never its own clean copy, which would hand it the
#   answer;
# - a **clean** block sees the clean blocks up to its own, never any noise: the clean half is an AR
#   model over blocks, and its keys and values are what a sampler keeps in a KV cache.
#
# White is "may attend". The three pictures are the whole family: $b = 1$ (the AR twin: each
# noisy position, fully masked, sees only the clean positions before it), $b = 4$, and $b = 16$
# (one block: the noisy half never sees the clean half, the masked model).

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, b in zip(axes, [1, 4, 16]):
    ax.imshow(model.block_diffusion_mask(16, b).numpy(), cmap="gray", interpolation="nearest")
    ax.axhline(15.5, color="tab:red"), ax.axvline(15.5, color="tab:red")
    ax.set_title(f"b = {b}"), ax.set_xticks([7.5, 23.5], ["keys: noisy x_t", "keys: clean x_0"])
    ax.set_yticks([7.5, 23.5], ["queries: noisy", "queries: clean"])
plt.tight_layout(); plt.show()
print(inspect.getsource(model.block_diffusion_mask))

# %% [markdown]
# ## 3. The bound, block by block
#
# Write $x^j$ for block $j$ and $x^{<j}$ for the blocks before it. The chain rule over blocks is
# exact: $-\log p(x_0) = \sum_j -\log p(x^j \mid x^{<j})$. Each term is a masked-diffusion problem
# of $b$ positions with a clean context, so each is bounded by the masked NELBO of lesson 1 in its
# discrete form (`docs/algorithm.md`, section 4), with the context added:
#
# $$-\log p(x^j \mid x^{<j}) \le \mathrm{NELBO}_j = \sum_{k=1}^{b} \frac{1}{k}\,
#   \mathbb{E}_{S \subset \text{block } j,\ |S| = k} \Big[\sum_{l \in S} -\log p_\theta\big(x_{0,l} \mid x^{<j},\ x^j \text{ with } S \text{ masked}\big)\Big]$$
#
# and the sum over $j$ bounds $-\log p(x_0)$. With the exact denoiser each term is tight (lesson 1's
# argument, block by block), so the whole bound is. Two ends:
# - $b = 1$: the only $k$ is 1 and the only set is the one position, so $\mathrm{NELBO}_j =
#   -\log p(x_{0,j} \mid x_{0,<j})$: an AR likelihood, exact, with nothing drawn;
# - $b = L$: one block, no context: lesson 1's bound.
#
# Training draws one $k_j$ per block and weighs the $k_j$ masked positions' loss by $b / k_j$ (the
# same expectation, one forward pass); the held-out estimate runs every $k = 1..b$, every block
# at once, so a name costs $b$ passes, not $L$:

# %%
print(inspect.getsource(block.nelbo_loss_k))
print(inspect.getsource(block.estimate_nelbo))

# %% [markdown]
# ## 4. Checked on a toy with an exact denoiser
#
# Lesson 3's toy has strings of 3 characters; blocks of 2 need 4, so the tests have a second toy
# (`tests/toy.py`): five strings of four tokens over `a b c` with known probabilities. Its exact
# block denoiser is computable by enumeration: at a position of block $j$, the posterior under
# $q$ given the clean blocks before $j$ and the unmasked positions of block $j$.

# %%
TOY = ["".join("abc"[i] for i in s) for s in toy.STRINGS4]
target = -np.log(toy.Q4)


def block_oracle(b):
    return lambda xt, x0=None: torch.from_numpy(toy.block_oracle_log_probs(xt.numpy(), x0.numpy(), b))


m = 500 if FAST else 4000  # estimates per toy string
copies = torch.from_numpy(np.repeat(toy.STRINGS4, m, axis=0))
print(f"{'string':>8}{'-log q':>9}" + "".join(f"{f'b = {b}':>18}" for b in (1, 2, 4)))
estimates = {b: block.estimate_nelbo(copies, block_oracle(b), toy.MASK_ID, generator, block=b).view(5, m)
             for b in (1, 2, 4)}
for i, s in enumerate(TOY):
    cells = "".join(f"{estimates[b][i].mean():>10.4f} +- {estimates[b][i].std() / m ** 0.5:.4f}" for b in (1, 2, 4))
    print(f"{s:>8}{target[i]:>9.4f}{cells}")

# %% [markdown]
# Every column agrees with $-\log q$ within its standard error; at $b = 1$ the standard error is
# exactly 0. Two more checks, to the last digit: at $b = 1$ another seed draws the same numbers (the
# estimator has no randomness left), and at $b = L = 4$ block diffusion's estimator draws exactly
# the masks that `diffusion.estimate_nelbo` draws, and returns its numbers.

# %%
def masked_oracle(xt):
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(toy.marginals_given(xt.numpy(), toy.STRINGS4, toy.Q4)))


a = block.estimate_nelbo(copies[::m], block_oracle(1), toy.MASK_ID, torch.Generator().manual_seed(1), block=1)
b_ = block.estimate_nelbo(copies[::m], block_oracle(1), toy.MASK_ID, torch.Generator().manual_seed(2), block=1)
print("b = 1, two seeds, identical:", torch.equal(a, b_), "; equal to -log q:", np.allclose(a.numpy(), target, atol=1e-12))
ours = block.estimate_nelbo(copies[::50], block_oracle(4), toy.MASK_ID, torch.Generator().manual_seed(3), draws=2, block=4)
theirs = diffusion.estimate_nelbo(copies[::50], masked_oracle, toy.MASK_ID, torch.Generator().manual_seed(3), draws=2)
print("b = L, the masked estimator's numbers, identical:", torch.equal(ours, theirs))

# %% [markdown]
# **A mask that leaks.** The mistake this design invites: let a noisy block see its own clean copy.
# The model then reads the answer, and its "bound" is no bound at all. The check the tests run
# (`tests/test_block.py`): change the clean copy at block $j$ and after it, keep the noisy copy, and
# see whether the noisy half's predictions for block $j$ move. With the right mask they cannot move,
# at all; with the leaking one they do. Trained, a leaking model would report a held-out figure far
# below what any model of names can reach.

# %%
def leak(net, b=4):
    """Largest change of the noisy half's logits at block j when the clean copy changes from block j on."""
    g = torch.Generator().manual_seed(8)
    x0 = torch.randint(mask_id, (6, L), generator=g)
    xt = x0.masked_fill(torch.rand(6, L, generator=g) < 0.5, mask_id)
    base, worst = net(xt, x0=x0), 0.0
    for j in range(0, L, b):
        other = x0.clone()
        other[:, j:] = torch.randint(mask_id, (6, L - j), generator=g)
        worst = max(worst, (net(xt, x0=other) - base)[:, j:j + b].abs().max().item())
    return worst


torch.manual_seed(0)
net = model.Transformer(model.ModelConfig(**block.model_args(mask_id, block=4), n_out=mask_id, block_size=L,
                                          n_layer=2, n_head=2, n_embd=16)).eval()
torch.nn.init.normal_(net.head.weight, std=0.5)  # random predictions, so that every change shows
good = model.block_diffusion_mask


def leaky(T, b, device=None):
    mask = good(T, b, device).clone()
    of_block = torch.arange(T) // b
    mask[:T, T:] |= of_block[:, None] == of_block[None, :]  # noisy block j may read clean block j
    return mask


print(f"right mask: largest change {leak(net):.2e}")
model.block_diffusion_mask = leaky
print(f"leaking mask: largest change {leak(net):.2e}")
model.block_diffusion_mask = good

# %% [markdown]
# ## 5. Sampling block by block, with a KV cache
#
# To write text, block diffusion runs its masked sampler on one block at a time: block 0 from all
# masks, then block 1 given block 0, and so on. The clean blocks already written are exactly the
# clean half of the training input, so their keys and values can be computed once and kept: a
# finished block enters the cache, clean, in the same network call as the next block's first step
# (block-causally, so it does not see the noisy block beside it), and each step of a block reads
# only its own $b$ positions plus the cache. The cell checks that the cached
# path computes what the training pass computes, block by block, and counts the network calls of
# writing 16 positions.

# %%
x0 = data["held"][:2].cpu()
xt = x0.masked_fill(torch.rand(x0.shape, generator=generator) < 0.6, mask_id)
cache, parts = net.new_kv_cache(2), []
for j in range(0, L, 4):
    parts.append(net(xt[:, j:j + 4], kv_cache=cache, start_pos=j))  # the noisy block reads the cache and itself
    net(x0[:, j:j + 4], kv_cache=cache, start_pos=j)  # then its clean copy enters the cache
print("cached path against the training pass: largest difference",
      f"{(torch.cat(parts, 1) - net(xt, x0=x0)).abs().max().item():.1e}")
out = block.sample_ancestral(sample.make_denoiser(net, "cpu"), 1, L, mask_id, generator, steps=4, block=4)
print(f"16 positions in blocks of 4, 4 steps per block: {out.nfe} network calls (at most 4 per block; a finished "
      f"block enters the cache with the next block's first call)")

# %% [markdown]
# ## 6. The measurement: the bound against the block size
#
# `python3 torch_version/bench/block_sizes.py` trains block diffusion at every $b$ beside the AR
# twin and the masked model, one backbone and one budget each: names at the default budget, and
# the small Shakespeare preset with every model given the AR twin's training wall time (a block
# model reads $2L$ positions per window, so it gets about half the twin's steps). It writes
# `docs/block_sizes.json`; this cell reads it and draws it.

# %%
results = json.loads((ROOT / "docs" / "block_sizes.json").read_text())
block_sizes.report(results)
plot_path = Path(tempfile.mkdtemp()) / "block_sizes.png"
block_sizes.plot(results, plot_path)
plt.figure(figsize=(11, 4)); plt.imshow(plt.imread(plot_path)); plt.axis("off"); plt.show()

# %% [markdown]
# What the curve says (the stored run; `docs/block_diffusion.md` has every figure with its command):
#
# - On both datasets the bound falls steadily from the masked model's to the twin's as $b$ shrinks.
#   On names one block of 16 is the masked model (2.0796 against 2.0799), $b = 4$ is 1.018x the
#   twin's loss and $b = 1$ is level with the twin: an AR factorisation, learned through the
#   $[x_t, x_0]$ input.
# - On Shakespeare every model had the twin's wall time. A block model reads $2L$ positions, so its
#   step costs 1.9x and it trains half the steps, yet $b = 2$ ends at 1.08x the twin's loss, against
#   the masked model's 1.31x. Large blocks pay that price for nothing: at $b = 16$ and $64$ the model
#   is the masked one with half the steps, and it ends worse than the masked model.
# - The samples follow the bound and magnify it: the twin's perplexity on 2,000 characters from each
#   model is 1.3x its own samples' at $b = 1$, 2.0x at $b = 2$, 3.7x at $b = 4$, and from $b = 8$ on
#   the text is as poor as the masked model's. Small blocks are where text reads.
#
# ## 7. Samples
#
# Names from the committed block model ($b = 4$, trained by the benchmark's run), written block
# by block; the trajectory of the first shows each block emerging from masks after the one before it.

# %%
names_model, ckpt = checkpoints.load_checkpoint(ROOT / "weights" / "names" / "ckpt_block4.pt", DEVICE)
out = sample.blockwise(sample.sample_ancestral, 4)(sample.make_denoiser(names_model, DEVICE), 12, L, mask_id,
                                                    generator, steps=4)  # one step per position: a short trajectory
print("samples:", " ".join(diffusion.decode(s, itos).rstrip(".") for s in out.samples))
for t, frame in zip(out.times[::2], out.trajectory[::2]):
    print(diffusion.decode(frame[0], itos))

# %% [markdown]
# **Shakespeare that reads.** The laptop preset (`train.py --dataset shakespeare --size laptop`):
# lesson 3's small backbone on windows of 256 characters, trained by block diffusion (blocks of 2) in about
# 25 minutes on this 2-core CPU (`docs/block_diffusion.md`). A paragraph, written block by block, printed
# at four moments of its writing, then the AR twin's paragraph (the same backbone, the same windows
# and steps) for comparison:

# %%
path = sample.default_checkpoint("shakespeare_laptop")  # the committed weights, until you train your own
laptop, ckpt = checkpoints.load_checkpoint(path, "cpu")
twin, _ = checkpoints.load_checkpoint(path.with_name("ckpt_ar.pt"), "cpu")
s_itos, b = ckpt["itos"], laptop.config.block_len
writer = sample.blockwise(sample.sample_ancestral, b)
g = torch.Generator().manual_seed(1337)
out = writer(sample.make_denoiser(laptop, "cpu"), 1, 256, len(s_itos) - 1, g, steps=sample.BLOCK_STEPS * b)
for frame in [out.trajectory[len(out.trajectory) * q // 4] for q in (1, 2, 3)] + [out.samples]:
    print(diffusion.decode(frame[0], s_itos).replace(s_itos[-1], "_"), "\n" + "-" * 64)
print(f"{out.nfe} network calls for 256 characters (blocks of {b}, {sample.BLOCK_STEPS * b} steps each, a call only "
      f"after a step that unmasked something)\n")
ids, nfe = sample.generate_ar(twin, torch.empty((1, 0), dtype=torch.long), 256, torch.Generator().manual_seed(1337),
                              len(s_itos) - 1)
print("the AR twin:\n" + diffusion.decode(ids[0], s_itos))

# %% [markdown]
# ## Summary
#
# - Block diffusion writes blocks left to right and each block by masked diffusion: $b = 1$ is the
#   AR twin's factorisation, $b = L$ the masked model, one model family in between.
# - One forward pass trains every block: the denoiser reads $[x_t, x_0]$ at shared positions, and a
#   block-causal mask lets a noisy block see itself and the clean blocks before it, nothing else.
# - The bound is a sum of masked bounds, one per block given its clean context; it is tight for the
#   exact denoiser at every $b$, an exact AR likelihood at $b = 1$, and lesson 1's at $b = L$.
# - Sampling keeps the clean blocks in a KV cache: a block costs its own steps (it enters the cache
#   with the next block's first step), and text of any length comes out.
#
# ## Exercises
#
# Fill in a stub, run its check: `PASS`, `FAIL` (and why) or `not yet`. The reference solutions
# are in `lessons/solutions.py` (its fifth section is this lesson's); try first.

# %%
import importlib.util

spec = importlib.util.spec_from_file_location("checks", ROOT / "lessons" / "checks.py")  # by path: any working folder
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)
check = checks.check

# %% [markdown]
# **Exercise 1: the training mask.** Return the $(2T, 2T)$ boolean mask for blocks of `b`: rows
# and columns $0..T-1$ the noisy copy, $T..2T-1$ the clean one; `True` where the query may attend.
# The check compares with `model.block_diffusion_mask`.

# %%
def training_mask(T, b):
    return None  # your code here


check("exercise 1, the training mask", training_mask(12, 3), model.block_diffusion_mask(12, 3))

# %% [markdown]
# **Exercise 2: the per-block weights.** Given $k$ of shape $(B, L/b)$ (the masks drawn in each
# block) and the mask $(B, L)$ of masked positions, return the $(B, L)$ weights of the training
# loss: $b / k_j$ at the masked positions of block $j$, 0 elsewhere. The check compares the loss
# your weights give with `block.nelbo_loss_k`.

# %%
def block_weights(k, mask, b):
    return None  # your code here


ex_x0 = torch.randint(mask_id, (8, 16), generator=torch.Generator().manual_seed(1))
ex = block.corrupt_batch(ex_x0, mask_id, torch.Generator().manual_seed(2), block=4)
ex_logits = torch.randn(8, 16, mask_id, generator=torch.Generator().manual_seed(3))
ex_nll = diffusion.token_nll(ex_logits, ex_x0)
ex_w = block_weights(ex["k"], ex["mask"], 4)
check("exercise 2, per-block weights", None if ex_w is None else (ex_w * ex_nll).sum() / ex_x0.numel(),
      block.nelbo_loss_k(ex_logits, ex_x0, ex["mask"], ex["k"]), atol=1e-6)

# %% [markdown]
# **Exercise 3: the bound by enumeration.** For one toy string and blocks of 2, compute the bound
# of section 3 exactly, enumerating every $k$ and every set $S$ of each block (use
# `toy.block_oracle_log_probs(xt, x0, b)`, which takes arrays of shape (1, 4)). The check compares
# with $-\log q$: the bound is tight for the exact denoiser.

# %%
def exact_block_nelbo(x0, b):
    return None  # your code here


answers = [exact_block_nelbo(s, 2) for s in toy.STRINGS4]
check("exercise 3, exact bound", None if None in answers else answers, target, atol=1e-9)

# %% [markdown]
# **Exercise 4: what a cached block sees.** When $T$ positions from `start` on are read with a KV
# cache holding positions $0..\mathrm{start}-1$, return the $(T, \mathrm{start} + T)$ mask: a query
# sees every key of its own block and of the blocks before it. The check compares with
# `model.block_cache_mask`.

# %%
def cache_mask(start, T, b):
    return None  # your code here


check("exercise 4, the cached mask", cache_mask(8, 8, 4), model.block_cache_mask(8, 8, 4))

# %% [markdown]
# ## Solutions
#
# The cell below loads `lessons/solutions.py` and runs each solution through the same check with
# `strict=True`, which stops with an error if a check fails: proof that every check above can pass.

# %%
spec = importlib.util.spec_from_file_location("solutions", ROOT / "lessons" / "solutions.py")  # by path: any working folder
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)
check("solution 1", solutions.training_mask_solution(12, 3), model.block_diffusion_mask(12, 3), strict=True)
check("solution 2", (solutions.block_weights_solution(ex["k"], ex["mask"], 4) * ex_nll).sum() / ex_x0.numel(),
      block.nelbo_loss_k(ex_logits, ex_x0, ex["mask"], ex["k"]), strict=True, atol=1e-6)
check("solution 3", [solutions.exact_block_nelbo_solution(s, 2, toy) for s in toy.STRINGS4], target, strict=True, atol=1e-9)
check("solution 4", solutions.cache_mask_solution(8, 8, 4), model.block_cache_mask(8, 8, 4), strict=True)
