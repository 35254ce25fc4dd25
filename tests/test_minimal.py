"""The minimal tier behaves as docs/algorithm.md says: gradients, forward process, ELBO, samplers, CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from minimal import train_minimal as tm
from tests import toy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "minimal" / "train_minimal.py"


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- gradients
@pytest.fixture
def small_problem(monkeypatch):
    """A float64 MLP small enough to check every parameter entry by finite differences."""
    monkeypatch.setattr(tm, "N_HIDDEN", 8)
    rng = np.random.default_rng(0)
    vocab_size, batch = 5, 6
    params = tm.init_params(vocab_size, rng, dtype=np.float64)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}  # nonzero biases too
    x0 = rng.integers(0, vocab_size - 1, (batch, tm.BLOCK_SIZE))
    t = tm.sample_times(batch, rng)
    xt, mask = tm.corrupt(x0, t, vocab_size - 1, rng)
    return params, x0, xt, mask, t


def loss_of(params, x0, xt, mask, t):
    return tm.nelbo_loss(tm.forward(params, xt)[0], x0, mask, t)[0]


def test_every_parameter_gradient_matches_centred_finite_differences(small_problem):
    params, x0, xt, mask, t = small_problem
    logits, cache = tm.forward(params, xt)
    grads = tm.backward(params, tm.nelbo_loss(logits, x0, mask, t)[1], cache)
    h = 1e-6  # float64: truncation error ~h^2, rounding ~1e-16/h, both far below the tolerance
    for name, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = loss_of(params, x0, xt, mask, t)
            p[i] = old - h
            down = loss_of(params, x0, xt, mask, t)
            p[i] = old
            numeric[i] = (up - down) / (2 * h)
        # A ReLU kink inside [-h, h] would break this; with continuous random pre-activations the
        # chance is ~1e-6 per unit, and the seed is fixed.
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-9, err_msg=name)


def test_loss_gradient_with_respect_to_logits_matches_finite_differences():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 4, 5))
    x0 = rng.integers(0, 5, (3, 4))
    mask = rng.random((3, 4)) < 0.5
    t = np.array([0.2, 0.5, 0.9])
    dlogits = tm.nelbo_loss(logits, x0, mask, t)[1]
    numeric = np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        e = np.zeros_like(logits)
        e[i] = 1e-6
        numeric[i] = (tm.nelbo_loss(logits + e, x0, mask, t)[0] - tm.nelbo_loss(logits - e, x0, mask, t)[0]) / 2e-6
    np.testing.assert_allclose(dlogits, numeric, rtol=1e-6, atol=1e-10)


# ---------------------------------------------------------------- forward process and loss
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_masks_at_the_rate_the_schedule_gives(schedule):
    rng = np.random.default_rng(2)
    n = 200_000  # positions per time
    t = np.array([0.05, 0.3, 0.5, 0.8, 0.99])
    x0 = np.zeros((len(t), n), dtype=int)
    xt, mask = tm.corrupt(x0, t, 9, rng, schedule)
    p = 1 - tm.alpha(t, schedule)
    # Each count is Binomial(n, p): five standard errors leave a false alarm chance of ~3e-6.
    assert np.all(np.abs(mask.mean(1) - p) < 5 * np.sqrt(p * (1 - p) / n))
    assert np.array_equal(xt == 9, mask) and np.all(xt[~mask] == 0)


def test_schedules_start_clean_end_masked_and_weight_is_minus_alpha_rate():
    for schedule in ("linear", "cosine"):
        assert tm.alpha(0.0, schedule) == pytest.approx(1) and tm.alpha(1.0, schedule) == pytest.approx(0)
        t, h = np.linspace(0.05, 0.95, 10), 1e-6
        slope = (tm.alpha(t + h, schedule) - tm.alpha(t - h, schedule)) / (2 * h)
        np.testing.assert_allclose(tm.weight(t, schedule), -slope / (1 - tm.alpha(t, schedule)), rtol=1e-6)


def test_antithetic_times_cover_the_interval_evenly():
    t = np.sort(tm.sample_times(64, np.random.default_rng(3)))
    assert t.min() >= tm.EPS and t.max() <= 1
    np.testing.assert_allclose(np.diff(t), (1 - tm.EPS) / 64, rtol=1e-9)  # one per stratum


def test_unmasked_positions_contribute_nothing_to_the_loss():
    rng = np.random.default_rng(4)
    logits, x0 = rng.standard_normal((4, 6, 5)), rng.integers(0, 5, (4, 6))
    mask, t = rng.random((4, 6)) < 0.5, np.full(4, 0.5)
    other = np.where(mask[..., None], logits, rng.standard_normal(logits.shape))  # change clean ones only
    assert tm.nelbo_loss(logits, x0, mask, t)[0] == tm.nelbo_loss(other, x0, mask, t)[0]
    assert np.all(tm.nelbo_loss(logits, x0, mask, t)[1][~mask] == 0)


# ---------------------------------------------------------------- the toy oracle (SPEC 7)
def test_nelbo_of_an_exact_denoiser_is_minus_log_q_by_enumeration():
    for x0, q in zip(toy.STRINGS, toy.Q):
        assert toy.exact_nelbo(x0) == pytest.approx(-np.log(q), abs=1e-12)


def test_nelbo_estimator_with_an_exact_denoiser_is_unbiased_for_minus_log_q():
    rng = np.random.default_rng(5)
    for x0, q in zip(toy.STRINGS, toy.Q):
        values = tm.estimate_nelbo(np.tile(x0, (4000, 1)), toy.oracle_log_probs, toy.MASK_ID, rng, draws=1)
        se = values.std(ddof=1) / np.sqrt(len(values))
        assert abs(values.mean() + np.log(q)) < 5 * se + 1e-12  # five standard errors


def sample_toy(steps, n, seed):
    xt = np.full((n, toy.LENGTH), toy.MASK_ID)
    return tm.sample_ancestral(toy.oracle_log_probs, n, toy.MASK_ID, np.random.default_rng(seed), steps=steps, xt=xt)[0]


def test_ancestral_sampler_with_many_steps_reproduces_q():
    n = 10_000
    samples = sample_toy(steps=1000, n=n, seed=6)
    counts = toy.counts_of(samples, toy.STRINGS)
    # 1000 steps leave ~0.3% of samples with two positions unmasked in one step (drawn
    # independently), a shift of at most ~2 in the statistic, far below the threshold.
    assert counts.sum() >= 0.99 * n
    stat = ((counts - counts.sum() * toy.Q) ** 2 / (counts.sum() * toy.Q)).sum()
    assert stat < chi2.ppf(0.999, df=len(toy.Q) - 1)


def test_ancestral_sampler_with_one_step_gives_the_product_of_marginals():
    n = 20_000
    samples = sample_toy(steps=1, n=n, seed=7)
    strings, p = toy.product_of_marginals()
    keep = p * n >= 5  # pool cells too rare for the chi-square approximation
    counts = np.append(toy.counts_of(samples, strings[keep]), 0)
    counts[-1] = n - counts[:-1].sum()
    expected = n * np.append(p[keep], p[~keep].sum())
    stat = ((counts - expected) ** 2 / np.maximum(expected, 1e-12)).sum()
    assert stat < chi2.ppf(0.999, df=len(counts) - 1)
    # and it is not q: the one-step sampler loses the joint structure
    assert toy.counts_of(samples, toy.STRINGS).sum() < 0.9 * n


# ---------------------------------------------------------------- samplers
def test_sampler_never_changes_unmasked_positions_and_ends_with_no_mask():
    rng = np.random.default_rng(8)
    params = tm.init_params(28, rng)
    denoise = lambda xt: tm.forward(params, xt)[0]  # noqa: E731
    xt = np.full((50, tm.BLOCK_SIZE), 27)
    xt[:, :3] = [5, 13, 13]  # a prompt: "emm"
    samples, trajectory = tm.sample_ancestral(denoise, 50, 27, rng, xt=xt)
    assert np.all(samples != 27)
    for before, after in zip(trajectory[:-1], trajectory[1:]):
        clean = before != 27
        assert np.array_equal(after[clean], before[clean])


class FixedUniform:
    """Stands in for a generator: every uniform it returns is the same chosen value."""
    def __init__(self, u):
        self.u = u

    def random(self, shape):
        return np.full(shape, self.u)


def test_draws_resolve_probabilities_far_below_float32_resolution():
    logits = np.log(np.array([[1 - 1e-9, 1e-9]]))  # token 1 has probability 1e-9
    # Inverse CDF: token 1 is drawn exactly when u > 1 - 1e-9. In float32, 1 - 5e-10 rounds
    # to 1.0 and the cumulative probability to 1.0 as well, so token 1 could never be drawn.
    assert tm.draw(logits, FixedUniform(1 - 5e-10))[0] == 1
    assert tm.draw(logits, FixedUniform(1 - 2e-9))[0] == 0


def test_temperature_sharpens_and_flattens_the_draw():
    logits = np.log(np.array([[0.6, 0.3, 0.1]])).repeat(20_000, 0)
    rng = np.random.default_rng(11)
    cold = np.bincount(tm.draw(logits, rng, temperature=0.5), minlength=3) / 20_000
    hot = np.bincount(tm.draw(logits, rng, temperature=2.0), minlength=3) / 20_000
    for got, T in ((cold, 0.5), (hot, 2.0)):
        want = np.array([0.6, 0.3, 0.1]) ** (1 / T)
        np.testing.assert_allclose(got, want / want.sum(), atol=0.015)  # ~4 standard errors of a share


def test_same_seed_same_samples():
    params = tm.init_params(28, np.random.default_rng(9))
    denoise = lambda xt: tm.forward(params, xt)[0]  # noqa: E731
    a = tm.sample_ancestral(denoise, 10, 27, np.random.default_rng(10))[0]
    b = tm.sample_ancestral(denoise, 10, 27, np.random.default_rng(10))[0]
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- the script
def test_smoke_run_prints_nelbo_samples_and_a_trajectory():
    out = run_script("--steps", "30", "--samples", "5", "--seed", "1")
    assert out.returncode == 0, out.stderr
    nelbo_line = next(line for line in out.stdout.splitlines() if line.startswith("held-out NELBO:"))
    assert 1.5 < float(nelbo_line.split()[2]) < 3.4  # 30 steps: between a good model and uniform (ln 27)
    samples = next(line for line in out.stdout.splitlines() if line.startswith("samples:")).split()[1:]
    assert len(samples) == 5
    assert "t=1.00 " + "_" * tm.BLOCK_SIZE in out.stdout and "t=0.00 " in out.stdout


def test_same_seed_same_run():
    def without_timing(text):
        return [line for line in text.splitlines() if not line.startswith("trained ")]
    a, b = run_script("--steps", "20", "--seed", "4"), run_script("--steps", "20", "--seed", "4")
    assert a.returncode == 0 and without_timing(a.stdout) == without_timing(b.stdout)


@pytest.mark.parametrize("args", [["--steps", "0"], ["--temperature", "0"], ["--samples", "-1"], ["--steps", "x"]])
def test_bad_flags_give_one_clear_sentence(args):
    out = run_script(*args)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "error:" in out.stderr


def test_importing_the_tier_does_not_train():
    out = subprocess.run([sys.executable, "-c", "import minimal.train_minimal"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == ""
