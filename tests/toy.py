"""A toy data distribution with an exact, Bayes-optimal denoiser (SPEC 7), shared by the tests.

Four strings of length 3 over the tokens a, b, c (ids 0, 1, 2; MASK is id 3). Given a partly
masked xt, the exact posterior over x0 is q restricted to the strings that agree with xt's clean
positions; its per-position marginals are what a perfect denoiser outputs.
"""
import itertools

import numpy as np

STRINGS = np.array([[0, 0, 1], [0, 1, 2], [2, 1, 0], [1, 1, 1]])  # aab, abc, cba, bbb
Q = np.array([0.4, 0.3, 0.2, 0.1])  # their probabilities
N_TOKENS, MASK_ID, LENGTH = 3, 3, 3


def oracle_log_probs(xt):
    """Exact log p(x0_l = v | xt) for xt of shape (B, 3): shape (B, 3, 3)."""
    xt = np.asarray(xt)
    agrees = ((xt[:, None, :] == MASK_ID) | (xt[:, None, :] == STRINGS[None])).all(-1)  # (B, S)
    # Off the support (reachable only when two positions unmask in the same step) fall back to q.
    posterior = np.where(agrees.any(1, keepdims=True), agrees * Q, Q)
    posterior /= posterior.sum(1, keepdims=True)
    one_hot = np.eye(N_TOKENS)[STRINGS].reshape(len(STRINGS), -1)  # (S, L * V)
    marginals = (posterior @ one_hot).reshape(len(xt), LENGTH, N_TOKENS)
    with np.errstate(divide="ignore"):
        return np.log(marginals)  # -inf for impossible tokens: softmax gives them probability 0


def exact_nelbo(x0):
    """The discrete NELBO of SPEC 4 with every k-subset enumerated: no Monte Carlo at all."""
    total = 0.0
    for k in range(1, LENGTH + 1):
        subsets = list(itertools.combinations(range(LENGTH), k))
        for subset in subsets:
            xt = np.array(x0)
            xt[list(subset)] = MASK_ID
            logp = oracle_log_probs(xt[None])[0]
            total += -sum(logp[l, x0[l]] for l in subset) / k / len(subsets)
    return total


def product_of_marginals():
    """Probability of every string in {a,b,c}^3 when each position is drawn from its marginal."""
    marginals = np.exp(oracle_log_probs(np.full((1, LENGTH), MASK_ID))[0])  # (L, V)
    strings = np.array(list(itertools.product(range(N_TOKENS), repeat=LENGTH)))
    return strings, np.prod(marginals[np.arange(LENGTH), strings], axis=1)


def counts_of(samples, strings):
    """How often each row of `strings` occurs among `samples` (both (N, L) int arrays)."""
    return np.array([(samples == s).all(1).sum() for s in strings])


# ---------------------------------------------------------------- block diffusion (processes/block.py)
# A second toy of length 4, so that blocks of 2 (neither AR nor masked) exist. Same tokens and MASK.
STRINGS4 = np.array([[0, 0, 1, 2], [0, 1, 2, 0], [2, 1, 0, 0], [1, 1, 1, 2], [0, 0, 2, 1]])
Q4 = np.array([0.3, 0.25, 0.2, 0.15, 0.1])


def marginals_given(visible, strings, q):
    """p(x0_l = v | the clean positions of `visible` (B, L), MASK elsewhere) under q on `strings`:
    (B, L, N_TOKENS). Off the support, q itself."""
    agrees = ((visible[:, None, :] == MASK_ID) | (visible[:, None, :] == strings[None])).all(-1)  # (B, S)
    posterior = np.where(agrees.any(1, keepdims=True), agrees * q, q)
    posterior = posterior / posterior.sum(1, keepdims=True)
    one_hot = np.eye(N_TOKENS)[strings].reshape(len(strings), -1)
    return (posterior @ one_hot).reshape(len(visible), strings.shape[1], N_TOKENS)


def block_oracle_log_probs(xt, x0, block, strings=STRINGS4, q=Q4):
    """What a perfect block-diffusion denoiser outputs for [xt, x0] (B, L) each: at a position of
    block j, log p(x0_l | the clean blocks before j, block j of xt). (B, L, N_TOKENS)."""
    xt, x0 = np.asarray(xt), np.asarray(x0)
    of_block = np.arange(xt.shape[1]) // block
    out = np.empty(xt.shape + (N_TOKENS,))
    for j in range(xt.shape[1] // block):
        visible = np.where(of_block < j, x0, np.where(of_block == j, xt, MASK_ID))
        out[:, of_block == j] = marginals_given(visible, strings, q)[:, of_block == j]
    with np.errstate(divide="ignore"):
        return np.log(out)
