"""Every tier copies the diffusion loop of the minimal tier (STYLE principle 2). These tests
feed the same inputs to minimal and to each later tier and require the same outputs, so
the copies cannot drift apart.

To add a tier, add its file to TIERS. Each function is called with NumPy arrays and a
NumPy Generator; a tier whose functions take other types can wrap them in ADAPTERS.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIERS = {"pure": "pure/train_pure.py"}  # tier name -> file, each compared with minimal
ADAPTERS = {}  # tier name -> function(module) returning an object with NumPy-in, NumPy-out functions
V = 28  # vocabulary of names.txt: PAD, 26 letters, MASK


def load(name, relative_path):
    spec = importlib.util.spec_from_file_location(f"cross_tier_{name}", ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return ADAPTERS.get(name, lambda m: m)(module)


@pytest.fixture(scope="module")
def minimal():
    return load("minimal", "minimal/train_minimal.py")


@pytest.fixture(scope="module", params=sorted(TIERS))
def tier(request):
    return load(request.param, TIERS[request.param])


def fixed_denoiser(xt):
    """A deterministic stand-in for a trained network: logits depend on the position and on
    how many masks xt holds, so the samplers' cache and every branch are exercised."""
    B, L = xt.shape
    table = np.random.default_rng(7).standard_normal((L + 1, L, V - 1)) * 2  # (masks, L, V-1)
    return table[(xt == V - 1).sum(1)]  # (B, L, V-1)


def test_constants_agree(minimal, tier):
    assert (tier.PAD, tier.MASK, tier.BLOCK_SIZE, tier.EPS) == (minimal.PAD, minimal.MASK,
                                                                 minimal.BLOCK_SIZE, minimal.EPS)


def test_vocabulary_encode_and_decode_agree(minimal, tier):
    words = ["emma", "olivia", "zoe", "abcdefghijklmno", "xavier", "quinn", "yusuf"]
    assert tier.build_vocab(words) == minimal.build_vocab(words)
    stoi, itos = minimal.build_vocab(words)
    np.testing.assert_array_equal(tier.encode(words, stoi), minimal.encode(words, stoi))
    ids = np.array([0, 1, 2, len(itos) - 1, 3])
    assert tier.decode(ids, itos) == minimal.decode(ids, itos)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_and_weight_agree(minimal, tier, schedule):
    t = np.linspace(1e-3, 1, 101)
    np.testing.assert_array_equal(tier.alpha(t, schedule), minimal.alpha(t, schedule))
    np.testing.assert_array_equal(tier.weight(t, schedule), minimal.weight(t, schedule))


def test_antithetic_times_agree(minimal, tier):
    np.testing.assert_array_equal(tier.sample_times(64, np.random.default_rng(3)),
                                  minimal.sample_times(64, np.random.default_rng(3)))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_corruption_agrees_with_a_fixed_generator(minimal, tier, schedule):
    x0 = np.random.default_rng(0).integers(0, V - 1, (32, 16))
    t = np.random.default_rng(1).random(32)
    xt_a, mask_a = minimal.corrupt(x0, t, V - 1, np.random.default_rng(2), schedule)
    xt_b, mask_b = tier.corrupt(x0, t, V - 1, np.random.default_rng(2), schedule)
    np.testing.assert_array_equal(xt_b, xt_a)
    np.testing.assert_array_equal(mask_b, mask_a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nelbo_loss_and_its_gradient_agree_given_fixed_logits(minimal, tier, dtype):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((8, 16, V - 1)) * 3).astype(dtype)
    x0 = rng.integers(0, V - 1, (8, 16))
    mask, t = rng.random((8, 16)) < 0.5, rng.random(8) + 1e-3
    np.testing.assert_array_equal(tier.log_softmax(logits), minimal.log_softmax(logits))
    for schedule in ("linear", "cosine"):
        loss_a, dlogits_a = minimal.nelbo_loss(logits, x0, mask, t, schedule)
        loss_b, dlogits_b = tier.nelbo_loss(logits, x0, mask, t, schedule)
        assert loss_b == loss_a
        np.testing.assert_array_equal(dlogits_b, dlogits_a)


def test_held_out_estimator_agrees_given_a_fixed_denoiser(minimal, tier):
    x0 = np.random.default_rng(5).integers(0, V - 1, (20, 16))
    a = minimal.estimate_nelbo(x0, fixed_denoiser, V - 1, np.random.default_rng(6), draws=2)
    b = tier.estimate_nelbo(x0, fixed_denoiser, V - 1, np.random.default_rng(6), draws=2)
    np.testing.assert_array_equal(b, a)
    n_chars = np.random.default_rng(7).integers(2, 16, 20)
    assert tier.per_char(a, n_chars) == minimal.per_char(a, n_chars)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_draw_agrees(minimal, tier, temperature):
    logits = np.random.default_rng(8).standard_normal((50, 16, V - 1)).astype(np.float32)
    np.testing.assert_array_equal(tier.draw(logits, np.random.default_rng(9), temperature),
                                  minimal.draw(logits, np.random.default_rng(9), temperature))


@pytest.mark.parametrize("steps", [1, 5, 32])
def test_ancestral_sampler_agrees_given_a_fixed_denoiser(minimal, tier, steps):
    a, trajectory_a = minimal.sample_ancestral(fixed_denoiser, 40, V - 1, np.random.default_rng(10), steps)
    b, trajectory_b = tier.sample_ancestral(fixed_denoiser, 40, V - 1, np.random.default_rng(10), steps)
    np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(np.array(trajectory_b), np.array(trajectory_a))


def test_ancestral_sampler_agrees_from_a_prompt(minimal, tier):
    xt = np.full((10, 16), V - 1)
    xt[:, :2] = [5, 1]  # a fixed prefix stays fixed in both
    a, _ = minimal.sample_ancestral(fixed_denoiser, 10, V - 1, np.random.default_rng(11), 8, 0.8, xt)
    b, _ = tier.sample_ancestral(fixed_denoiser, 10, V - 1, np.random.default_rng(11), 8, 0.8, xt)
    np.testing.assert_array_equal(b, a)
