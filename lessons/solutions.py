"""Reference solutions to the lessons' exercises. Reading this file spoils them: try first.

One section per lesson, one function per exercise, named after the exercise's stub with
`_solution` added. Each lesson's last cell loads this file by its path and runs every solution
through the same check as the exercise, strictly, so the tests prove that every check can pass.
A solution takes the stub's arguments, plus what the stub reads from the lesson's own variables
(lesson 1's vocabulary size `V`). Lesson 3's solutions import torch when they run, so lessons 1
and 2 need only NumPy.

This file is not a lesson: lessons/build.py takes only files named NN_name.py.
"""
import itertools
import math
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, as in the lessons
from minimal import train_minimal as tm  # noqa: E402
from pure import train_pure as tp  # noqa: E402


# ---------------------------------------------------------------- lesson 1: minimal
def cosine_weight_solution(t):
    # alpha = cos(pi t / 2), so -alpha' = (pi / 2) sin(pi t / 2)
    return (np.pi / 2) * np.sin(np.pi * t / 2) / (1 - np.cos(np.pi * t / 2))


def nelbo_grad_solution(logits, x0, mask, t):
    g = np.exp(tm.log_softmax(logits))  # softmax, (B, L, V-1)
    np.put_along_axis(g, x0[..., None], np.take_along_axis(g, x0[..., None], -1) - 1, -1)  # minus one-hot
    return g * (tm.weight(t)[:, None] * mask / x0.size)[..., None]


def uniform_nats_per_char_solution(names, V):
    # every one of the L positions is revealed once and costs log(V-1); PADs count as cost, not as characters
    return len(names) * tm.BLOCK_SIZE * np.log(V - 1) / sum(len(w) + 1 for w in names)


def is_valid_solution(s):
    return re.fullmatch(r"[a-z]+\.*", s) is not None


# ---------------------------------------------------------------- lesson 2: pure
def my_layer_norm_solution(x, g, b, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b


def my_learning_rate_solution(step, steps):
    if step <= tp.WARMUP:
        return tp.LEARNING_RATE * step / tp.WARMUP
    progress = (step - tp.WARMUP) / (steps - tp.WARMUP)  # 0 after the warm-up, 1 at the last step
    return tp.MIN_LR + (tp.LEARNING_RATE - tp.MIN_LR) * (1 + np.cos(np.pi * progress)) / 2


def my_tv_length_solution(samples, real_words):
    valid = [s.rstrip(".") for s in samples if s.rstrip(".").isalpha()]
    bins = max(map(len, list(real_words) + valid)) + 1
    hist = lambda names: np.bincount([len(w) for w in names], minlength=bins) / len(names)  # noqa: E731
    return 0.5 * np.abs(hist(valid) - hist(real_words)).sum()


def masks_left_solution(M, steps):
    left = []
    for s in np.linspace(1, 0, steps + 1)[1:]:
        before = left[-1] if left else M
        left.append(min(before - 1, round(M * (1 - tp.alpha(s)))) if before else 0)
    return left


# ---------------------------------------------------------------- lesson 3: torch
def causal_weights_solution(scores):
    import torch
    T = scores.shape[-1]
    return scores.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf")).softmax(-1)


def one_step_distribution_solution(strings, q):
    import torch
    L = strings.shape[1]
    onehot = torch.nn.functional.one_hot(strings, 2).double()  # (S, L, 2)
    marginals = torch.einsum("s,slv->lv", q.double(), onehot)  # (L, 2): P(position l = v)
    all_strings = torch.cartesian_prod(*[torch.arange(2)] * L)  # (2**L, L), the lesson's order: aaa, aab, ...
    return marginals[torch.arange(L), all_strings].prod(1)  # independent positions


def gumbel_ceiling_solution(bits):
    return -math.log(-math.log(1 - 2.0**-bits))  # the largest uniform below 1 is 1 - 2**-bits


def my_ar_inputs_solution(x0, bos_id):
    import torch
    return torch.cat([torch.full_like(x0[:, :1], bos_id), x0[:, :-1]], dim=1)


# ---------------------------------------------------------------- lesson 4: beyond masking
def uniform_marginal_solution(v, t, K):
    alpha = 1 - t  # the linear schedule: the chance that the position was never resampled
    q = np.full(K, (1 - alpha) / K)  # resampled to any of the K real tokens, its own included
    q[v] += alpha
    return q


def gaussian_weight_solution(t, gamma_min=-10.0, gamma_max=10.0):
    gamma = gamma_min + (gamma_max - gamma_min) * np.asarray(t)  # -log SNR, a straight line
    return 0.5 * (gamma_max - gamma_min) * np.exp(-gamma)  # SNR = exp(-gamma), so -SNR' = gamma' exp(-gamma)


def prior_kl_one_position_solution(alpha1, sigma1, K):
    # the mean alpha1 e(x0) has squared length alpha1^2; each of the K dimensions has variance sigma1^2
    return 0.5 * (alpha1 ** 2 + K * (sigma1 ** 2 - 1 - math.log(sigma1 ** 2)))


def ddim_step_solution(zt, e_hat, alpha_t, sigma_t, alpha_s, sigma_s):
    eps_hat = (zt - alpha_t * e_hat) / sigma_t  # the noise z_t implies, given the denoiser's guess
    return alpha_s * e_hat + sigma_s * eps_hat


# ---------------------------------------------------------------- lesson 5: block diffusion
def training_mask_solution(T, b):
    block = np.arange(T) // b
    same, before = block[:, None] == block[None, :], block[:, None] > block[None, :]
    top = np.concatenate([same, before], axis=1)  # noisy queries: their own noisy block, earlier clean blocks
    bottom = np.concatenate([np.zeros_like(same), same | before], axis=1)  # clean queries: clean blocks up to theirs
    return np.concatenate([top, bottom], axis=0)


def block_weights_solution(k, mask, b):
    return (b / k.double()).repeat_interleave(b, dim=1) * mask


def exact_block_nelbo_solution(x0, b, toy):
    total, L = 0.0, len(x0)
    for start in range(0, L, b):
        for k in range(1, b + 1):
            subsets = list(itertools.combinations(range(start, start + b), k))
            for subset in subsets:
                xt = np.array(x0)
                xt[list(subset)] = toy.MASK_ID
                logp = toy.block_oracle_log_probs(xt[None], np.array(x0)[None], b)[0]
                total += -sum(logp[l, x0[l]] for l in subset) / k / len(subsets)
    return total


def cache_mask_solution(start, T, b):
    keys, queries = np.arange(start + T), np.arange(start, start + T)
    return keys[None, :] // b <= queries[:, None] // b
