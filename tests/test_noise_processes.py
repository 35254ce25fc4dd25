"""Uniform-noise (torch_version/processes/uniform.py) and Gaussian-embedding (torch_version/processes/gaussian.py)
diffusion keep the promises of docs/noise_processes.md, checked on tests/toy.py's distribution.

Each process has an exact, Bayes-optimal denoiser on the toy: the posterior over its four strings
given xt (or z_t) and t, by enumeration. With it each bound is -log q(x0) plus end-point gaps that
the theory gives in closed form or by enumeration; the tests compute those gaps independently of
the code under test and compare within four standard errors of the Monte Carlo estimates (a false
alarm about once in 16,000 comparisons, and every seed is fixed)."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2

from tests import toy
from torch_version.processes import gaussian as G
from torch_version.processes import uniform as U

STRINGS = torch.from_numpy(toy.STRINGS)         # (S, L) = (4, 3): aab, abc, cba, bbb
Q = torch.from_numpy(toy.Q)                     # their probabilities, float64
K, L = toy.N_TOKENS, toy.LENGTH                 # 3 real tokens; the toy's MASK id (3) never appears
ONE_HOT = torch.eye(K, dtype=torch.float64)[STRINGS]  # (S, L, K): e(x0) of each string, too
NAMES_K = 27                                    # PAD and 26 letters: build_vocab's real tokens for names
COARSE = (-1.0, 2.0)                            # a Gaussian schedule whose end-point terms are large


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster than handing them around. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def marginals(log_posterior):
    """Per-position log p(x0_l = v | ...) (B, L, K) from a log posterior over the strings (B, S)."""
    return torch.einsum("bs,slv->blv", log_posterior.softmax(1), ONE_HOT).log()


def uniform_log_likelihood(xt, t):
    """log q_t(xt | x0 = string s) for every string (B, S): positions are independent."""
    a = U.alpha(t.double().cpu())[:, None, None]
    return (a * (xt.cpu()[:, None, :] == STRINGS[None]).double() + (1 - a) / K).log().sum(-1)


def uniform_oracle(xt, t):
    """The exact denoiser of uniform noise: log marginals of p(x0 | xt, t), (B, L, K) float64."""
    return marginals(Q.log() + uniform_log_likelihood(xt, t))


def gaussian_log_likelihood(zt, t, schedule):
    """log N(z_t; alpha_t e(s), sigma_t^2 I) for every string s, up to a constant shared by all s. (B, S)."""
    t = t.double().cpu()
    a, s = G.alpha(t, schedule)[:, None, None, None], G.sigma(t, schedule)[:, None]
    return -((zt.double().cpu()[:, None] - a * ONE_HOT[None]) ** 2).sum((-1, -2)) / (2 * s ** 2)


def gaussian_oracle(schedule=G.SCHEDULE):
    """The exact denoiser of Gaussian noise at this schedule: log marginals of p(x0 | z_t, t)."""
    return lambda zt, t: marginals(Q.log() + gaussian_log_likelihood(zt, t, schedule))


def mean_and_se(values, groups):
    """values (groups * m,), grouped in consecutive runs: the mean of each group and its standard error."""
    v = values.double().view(groups, -1)
    return v.mean(1), v.std(1) / v.shape[1] ** 0.5


def copies(m):
    """Every toy string m times, in order: (4 m, L)."""
    return STRINGS.repeat_interleave(m, 0)


# ---------------------------------------------------------------- end-point terms, from the theory
def uniform_clip_terms(x0, eps):
    """Exact, by enumerating all K^L = 27 values of x_eps: the reconstruction term
    E[-sum_l log q(x0_l | x_eps)] and the gap E[log q(x0 | x_eps) - sum_l log q(x0_l | x_eps)]
    by which the clipped bound of the exact denoiser exceeds -log q(x0) (uniform.py's docstring)."""
    x_eps = torch.tensor(list(itertools.product(range(K), repeat=L)))  # (27, L)
    t = torch.full((len(x_eps),), eps, dtype=torch.float64)
    a = U.alpha(t)[:, None]
    chance = (a * (x_eps == x0).double() + (1 - a) / K).prod(1)  # q(x_eps | x0)
    log_posterior = (Q.log() + uniform_log_likelihood(x_eps, t)).log_softmax(1)  # (27, S), the joint
    joint = log_posterior[:, (STRINGS == x0).all(1)][:, 0]
    reconstruction = -uniform_oracle(x_eps, t).gather(-1, x0.expand(len(x_eps), L)[..., None]).sum((1, 2))
    return float((chance * reconstruction).sum()), float((chance * (joint + reconstruction)).sum())


def gaussian_end_terms(x0, schedule, n, generator):
    """Monte Carlo with n draws each, written from the formulas, not from gaussian.py:
    - gap = E_{z_0}[log q(x0 | z_0) - log p(x0 | z_0)] + E_{z_1}[log q(z_1) - log N(z_1; 0, I)],
      by which the bound of the exact denoiser exceeds -log q(x0) (gaussian.py's docstring);
    - reconstruction = E_{z_0}[-log p(x0 | z_0)], p the per-position Gaussian-likelihood decoder.
    Returns per-draw values (n,) of both; their means are the terms."""
    (a0, s0), (a1, s1) = [(float(G.alpha(torch.tensor(t), schedule)), float(G.sigma(torch.tensor(t), schedule)))
                          for t in (0.0, 1.0)]
    e = F.one_hot(x0, K).double()  # (L, K)
    z0 = a0 * e + s0 * torch.randn((n, L, K), generator=generator, dtype=torch.float64)
    distance = ((z0[:, :, None, :] - a0 * torch.eye(K, dtype=torch.float64)) ** 2).sum(-1)  # (n, L, K): to alpha_0 e(v)
    reconstruction = -(-distance / (2 * s0 ** 2)).log_softmax(-1).gather(-1, x0.expand(n, L)[..., None]).sum((1, 2))
    log_joint = (Q.log() - ((z0[:, None] - a0 * ONE_HOT) ** 2).sum((-1, -2)) / (2 * s0 ** 2)).log_softmax(1)
    decoder_gap = log_joint[:, (STRINGS == x0).all(1)][:, 0] + reconstruction
    z1 = a1 * e + s1 * torch.randn((n, L, K), generator=generator, dtype=torch.float64)
    log_q_z1 = torch.logsumexp(Q.log() - ((z1[:, None] - a1 * ONE_HOT) ** 2).sum((-1, -2)) / (2 * s1 ** 2), 1)
    prior_gap = log_q_z1 - L * K * torch.log(torch.tensor(s1)) + (z1 ** 2).sum((-1, -2)) / 2
    return decoder_gap + prior_gap, reconstruction


# ---------------------------------------------------------------- the forward processes
def test_uniform_noise_resamples_at_the_schedules_rate_to_uniform_real_tokens():
    x0 = torch.zeros((4000, 16), dtype=torch.long)  # all PAD
    t = torch.full((4000,), 0.3, dtype=torch.float64)
    xt, resampled = U.corrupt(x0, t, NAMES_K, torch.Generator().manual_seed(0))
    a = float(U.alpha(t[0]))
    # Resampled with chance 1 - alpha, to one of the K real tokens (perhaps its own): so PAD stays
    # with chance alpha + (1 - alpha) / K, every other token appears with (1 - alpha) / K, MASK never.
    expected = torch.full((NAMES_K,), (1 - a) / NAMES_K, dtype=torch.float64)
    expected[0] += a
    counts = torch.bincount(xt.reshape(-1), minlength=NAMES_K + 1).double()
    assert counts[NAMES_K] == 0  # MASK (id K) is never drawn
    stat = ((counts[:NAMES_K] - x0.numel() * expected) ** 2 / (x0.numel() * expected)).sum()
    assert stat < chi2.ppf(0.999, df=NAMES_K - 1)
    share, n = resampled.double().mean(), x0.numel()  # and the resampled set is 1 - alpha of the positions
    assert abs(share - (1 - a)) < 4 * ((a * (1 - a)) / n) ** 0.5


def test_gaussian_noise_has_the_schedules_mean_and_variance():
    x0 = torch.randint(NAMES_K, (2000, 16), generator=torch.Generator().manual_seed(1))
    t = torch.full((2000,), 0.45, dtype=torch.float64)
    zt = G.corrupt(x0, t, NAMES_K, torch.Generator().manual_seed(2)).double()
    a, s = float(G.alpha(t[0])), float(G.sigma(t[0]))
    noise = (zt - a * F.one_hot(x0, NAMES_K)).reshape(-1)  # should be sigma * N(0, 1), 864,000 of them
    n = noise.numel()
    assert abs(noise.mean()) < 4 * s / n ** 0.5
    assert abs(noise.var() / s ** 2 - 1) < 4 * (2 / n) ** 0.5  # the sample variance's relative SE is sqrt(2 / n)


def test_gaussian_schedule_is_variance_preserving_and_its_weight_is_minus_half_the_snr_slope():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a, s = G.alpha(t), G.sigma(t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(t))
    assert torch.allclose((a ** 2 / s ** 2).log(), -G.gamma(t))
    assert G.gamma(t[:1]).item() == G.SCHEDULE[0] and G.gamma(t[-1:]).item() == G.SCHEDULE[1]
    h = 1e-6  # centred difference: relative error ~ (h * gamma')^2 / 6, below 1e-8 here
    snr_slope = (torch.exp(-G.gamma(t + h)) - torch.exp(-G.gamma(t - h))) / (2 * h)
    assert torch.allclose(G.weight(t), -snr_slope / 2, rtol=1e-6)


def test_gaussian_prior_term_is_the_kl_to_a_standard_normal():
    for schedule in (G.SCHEDULE, COARSE):
        a1, s1 = (float(f(torch.ones((), dtype=torch.float64), schedule)) for f in (G.alpha, G.sigma))
        mean = a1 * F.one_hot(torch.tensor([0, 1, 2]), K).double()  # any x0: all embeddings have norm 1
        Normal = torch.distributions.Normal
        kl = torch.distributions.kl_divergence(Normal(mean, s1), Normal(0.0, 1.0))
        assert abs(G.prior_kl(L, K, schedule) - kl.sum().item()) < 1e-12


def uniform_integrand_float64(logits, x0, xt, t):
    """uniform.py's integrand written plainly, in float64: (beta / K) sum_{y != x} r_y phi(r_hat_y / r_y),
    r_hat_y = sum_v p_v q_t(y | v) / q_t(x | v), r_y the same with p = one-hot(x0), phi(z) = z - 1 - log z."""
    n_tokens = logits.shape[-1]
    a = U.alpha(t)[:, None, None]
    q_t = a * torch.eye(n_tokens, dtype=torch.float64) + (1 - a) / n_tokens  # (B, y, v): q_t(y | v)
    q_x = q_t[torch.arange(len(t))[:, None], xt]  # (B, L, v): q_t(x | v) at the current token x
    ratio = q_t[:, None] / q_x[:, :, None, :]  # (B, L, y, v): q_t(y | v) / q_t(x | v)
    r_hat = (ratio * logits.double().softmax(-1)[:, :, None, :]).sum(-1)
    r = ratio.gather(-1, x0[..., None, None].expand(-1, -1, n_tokens, 1))[..., 0]
    phi = r_hat / r - 1 - torch.log(r_hat / r)
    beta = U.weight(t)[:, None, None]
    return (beta / n_tokens * torch.where(F.one_hot(xt, n_tokens) == 0, r * phi, 0)).sum(-1)


def test_uniform_integrand_is_the_rate_divergence_in_float32_and_zero_for_the_true_x0():
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(NAMES_K, (64, 16), generator=g)
    t = torch.cat([torch.full((16,), U.EPS, dtype=torch.float64), torch.linspace(0.1, 0.9, 32, dtype=torch.float64),
                   torch.full((16,), 1 - 1e-7, dtype=torch.float64)])  # both ends are the hard cases
    xt, _ = U.corrupt(x0, t, NAMES_K, g)
    wild = 30 * torch.randn((64, 16, NAMES_K), generator=g)  # confident, often wrong: r_hat / r down to ~1e-9
    values, want = U.nelbo_integrand(wild, x0, xt, t), uniform_integrand_float64(wild, x0, xt, t)
    assert torch.isfinite(values).all() and (values >= 0).all()
    # float32 softmax gives p to ~6e-8 absolute, so where the model is nearly right (1 - p_x0 ~ 3e-4)
    # the divergence, which grows with p - one-hot(x0), is good to ~2e-4 relative; 1e-3 covers it.
    # Near t = 1 the integrand is ~1e-6 and 1e-7 absolute is below a 1e-7 share of any NELBO.
    assert ((values.double() - want).abs() <= 1e-3 * want + 1e-7).all()
    perfect = torch.where(F.one_hot(x0, NAMES_K).bool(), 0.0, float("-inf"))  # p = one-hot(x0): the true rates
    assert torch.equal(U.nelbo_integrand(perfect, x0, xt, t), torch.zeros(64, 16))


# ---------------------------------------------------------------- the bounds, with the exact denoiser
def test_uniform_nelbo_with_the_exact_denoiser_is_minus_log_q():
    m = 3000
    estimate = U.estimate_nelbo(copies(m), uniform_oracle, K, torch.Generator().manual_seed(4), steps=64)
    assert estimate.dtype == torch.float64 and estimate.shape == (4 * m,)
    mean, se = mean_and_se(estimate, 4)
    for i, x0 in enumerate(STRINGS):
        # No time-grid error: stratified times are unbiased. What is left: the clip's gap, exact
        # by enumeration (0.0005 to 0.002 nats here: O(EPS)), and four standard errors (~0.03).
        _, gap = uniform_clip_terms(x0, U.EPS)
        assert abs(mean[i] + Q[i].log()) < abs(gap) + 4 * se[i], (i, mean[i].item(), -Q[i].log().item())


def test_uniform_reconstruction_term_closes_the_bound_at_a_coarse_clip():
    eps, m = 0.3, 3000  # so coarse that the end-point term is large: the gap is 0.34 to 0.75 nats
    estimate = U.estimate_nelbo(copies(m), uniform_oracle, K, torch.Generator().manual_seed(5), steps=64, eps=eps)
    mean, se = mean_and_se(estimate, 4)
    for i, x0 in enumerate(STRINGS):
        _, gap = uniform_clip_terms(x0, eps)
        assert gap > 8 * se[i]  # the check below can tell a missing term from noise
        assert abs(mean[i] - (-Q[i].log() + gap)) < 4 * se[i], (i, mean[i].item(), gap)


@pytest.mark.parametrize("schedule", [G.SCHEDULE, COARSE], ids=["default", "coarse"])
def test_gaussian_nelbo_with_the_exact_denoiser_is_minus_log_q_plus_its_end_point_gaps(schedule):
    m = 3000
    estimate = G.estimate_nelbo(copies(m), gaussian_oracle(schedule), K, torch.Generator().manual_seed(6),
                                steps=64, schedule=schedule)
    assert estimate.dtype == torch.float64 and estimate.shape == (4 * m,)
    mean, se = mean_and_se(estimate, 4)
    g = torch.Generator().manual_seed(7)
    for i, x0 in enumerate(STRINGS):
        gap, reconstruction = gaussian_end_terms(x0, schedule, 20_000, g)
        gap_mean, gap_se = gap.mean(), gap.std() / len(gap) ** 0.5
        # No time-grid error (stratified times). The prior and reconstruction terms are in the
        # estimate, their gaps to -log q in `gap`: under 1e-3 nats at the default end points; on the
        # coarse schedule the terms are 0.21 (prior) and ~1.5 (reconstruction), so dropping either shows.
        tolerance = 4 * (se[i] ** 2 + gap_se ** 2) ** 0.5
        if schedule == G.SCHEDULE:
            assert abs(gap_mean) < 1e-3
        else:
            assert min(G.prior_kl(L, K, schedule), reconstruction.mean()) > 2 * tolerance
        assert abs(mean[i] - (-Q[i].log() + gap_mean)) < tolerance, (i, mean[i].item(), gap_mean.item())


def test_training_losses_average_to_the_diffusion_term_of_the_nelbo():
    """nelbo_loss * L, averaged over batches of sample_times, is the NELBO less its end-point terms."""
    g, batches = torch.Generator().manual_seed(8), 400
    x0 = copies(16)  # (64, L): each string equally often
    uniform_losses, gaussian_losses = [], []
    for _ in range(batches):
        t = U.sample_times(len(x0), g)
        xt, _ = U.corrupt(x0, t, K, g)
        uniform_losses.append(L * U.nelbo_loss(uniform_oracle(xt, t), x0, xt, t))
        t = G.sample_times(len(x0), g)
        zt = G.corrupt(x0, t, K, g)
        gaussian_losses.append(L * G.nelbo_loss(gaussian_oracle()(zt, t), x0, t))
    want_uniform = want_gaussian = 0.0
    for x0_ in STRINGS:  # the NELBO (-log q + gap) less the end-point terms, averaged over the strings
        reconstruction, gap = uniform_clip_terms(x0_, U.EPS)
        want_uniform += (-Q[(STRINGS == x0_).all(1)].log().item() + gap - reconstruction) / 4
        gap, reconstruction = gaussian_end_terms(x0_, G.SCHEDULE, 20_000, g)
        want_gaussian += (-Q[(STRINGS == x0_).all(1)].log().item() + (gap - reconstruction).mean().item()
                          - G.prior_kl(L, K)) / 4
    for losses, want in ((uniform_losses, want_uniform), (gaussian_losses, want_gaussian)):
        mean, se = mean_and_se(torch.stack(losses), 1)
        assert abs(mean.item() - want) < 4 * se.item(), (mean.item(), want)


# ---------------------------------------------------------------- the samplers reproduce q
def chi_square_against_q(samples):
    """(share of samples that are toy strings, chi-square statistic of their counts against q)."""
    counts = torch.from_numpy(toy.counts_of(samples.numpy(), toy.STRINGS)).double()
    n = counts.sum()
    return (n / len(samples)).item(), ((counts - n * Q) ** 2 / (n * Q)).sum().item()


def test_uniform_ancestral_sampler_with_many_steps_reproduces_q():
    out = U.sample_ancestral(uniform_oracle, 5000, L, K, torch.Generator().manual_seed(9), steps=400)
    samples, trajectory = out.samples, out.trajectory
    assert out.nfe == 400 and samples.shape == (5000, L) and len(trajectory) == 401 and torch.equal(trajectory[-1], samples)
    on_support, stat = chi_square_against_q(samples)
    # Positions are redrawn independently given xt: the joint error of one step is second order in
    # the step, so O(1 / steps) in all (measured: about 1 / steps off the support, 100 to 2,000 steps).
    assert on_support >= 0.99
    assert stat < chi2.ppf(0.999, df=len(Q) - 1)  # a false alarm once in 1,000 seeds


@pytest.mark.parametrize("deterministic", [False, True], ids=["ddpm", "ddim"])
def test_gaussian_samplers_with_many_steps_reproduce_q(deterministic):
    out = G.sample_ancestral(gaussian_oracle(), 4000, L, K, torch.Generator().manual_seed(10),
                             steps=300, deterministic=deterministic)
    samples, trajectory = out.samples, out.trajectory
    assert out.nfe == 300 and samples.shape == (4000, L) and len(trajectory) == 301 and trajectory[-1].shape == (4000, L, K)
    on_support, stat = chi_square_against_q(samples)
    # The exact posterior mean makes e_hat a toy string's embedding long before t = 0, and the
    # decoder's boundary between two letters lies ~100 sigma_0 from z_0: every sample is a toy string.
    assert on_support == 1.0
    assert stat < chi2.ppf(0.999, df=len(Q) - 1)


def test_one_reverse_step_is_a_distribution_and_the_last_one_draws_from_the_denoiser():
    g = torch.Generator().manual_seed(11)
    p = torch.softmax(torch.randn((8, 16, NAMES_K), generator=g, dtype=torch.float64), -1)
    xt = torch.randint(NAMES_K, (8, 16), generator=g)
    step = U.reverse_step(p, xt, 0.6, 0.5)
    assert (step >= 0).all() and torch.allclose(step.sum(-1), torch.ones(8, 16, dtype=torch.float64))
    assert torch.allclose(U.reverse_step(p, xt, 0.1, 0.0), p)  # at s = 0 x0 is drawn from p itself


# ---------------------------------------------------------------- gradients, shapes, seeds
def test_losses_give_finite_gradients_of_the_logits_shape():
    g = torch.Generator().manual_seed(12)
    x0 = torch.randint(NAMES_K, (8, 16), generator=g)
    t = U.sample_times(8, g)
    for loss_of in (lambda logits: U.nelbo_loss(logits, x0, U.corrupt(x0, t, NAMES_K, g)[0], t),
                    lambda logits: G.nelbo_loss(logits, x0, t)):
        logits = torch.randn((8, 16, NAMES_K), generator=g, requires_grad=True)
        loss = loss_of(logits)
        loss.backward()
        assert loss.shape == () and torch.isfinite(loss) and loss > 0
        assert logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_same_seed_same_numbers():
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return (U.estimate_nelbo(copies(4), uniform_oracle, K, g, steps=8),
                U.sample_ancestral(uniform_oracle, 50, L, K, g, steps=10).samples,
                G.estimate_nelbo(copies(4), gaussian_oracle(), K, g, steps=8),
                G.sample_ancestral(gaussian_oracle(), 50, L, K, g, steps=10).samples,
                G.sample_ddim(gaussian_oracle(), 50, L, K, g, steps=10).samples)
    first, again, other = run(13), run(13), run(14)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


# ---------------------------------------------------------------- trained with the torch tier's backbone
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8", "--eval-draws", "1",
        "--final-draws", "2", "--samples", "2", "--quiet", "--no-compile", "--device", "cpu"]


@pytest.fixture(scope="module")
def names_file(tmp_path_factory):
    from tests.conftest import write_names_like
    return write_names_like(tmp_path_factory.mktemp("data") / "items.txt")


def test_a_time_input_model_must_be_told_t_and_a_masked_one_must_not():
    from torch_version.model import ModelConfig, Transformer
    timed = Transformer(ModelConfig(vocab_size=27, n_out=27, block_size=8, n_layer=1, n_head=2, n_embd=16,
                                    time_input=True, vector_input=27))
    assert timed(torch.randn(2, 8, 27), t=torch.rand(2)).shape == (2, 8, 27)
    with pytest.raises(ValueError, match="needs t"):
        timed(torch.randn(2, 8, 27))
    plain = Transformer(ModelConfig(vocab_size=28, n_out=27, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="no time input"):
        plain(torch.zeros(2, 8, dtype=torch.long), t=torch.rand(2))


def test_the_time_input_changes_the_output():
    """A denoiser of uniform noise that ignored t could not tell a clean name from a noisy one."""
    from torch_version.model import ModelConfig, Transformer
    torch.manual_seed(0)
    net = Transformer(ModelConfig(vocab_size=27, n_out=27, block_size=8, n_layer=1, n_head=2, n_embd=16,
                                  time_input=True))
    torch.nn.init.normal_(net.head.weight, std=0.02)  # the head starts at zero: give it something to show
    x = torch.randint(27, (1, 8))
    assert not torch.allclose(net(x, t=torch.tensor([0.1])), net(x, t=torch.tensor([0.9])))


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_train_py_trains_each_noise_into_its_own_checkpoint_and_repeats_with_the_same_seed(names_file, noise, tmp_path):
    from torch_version import train as T
    flags = ["--dataset", str(names_file), "--noise", noise, "--max-iters", "3", "--eval-interval", "3"] + TINY
    (first,) = T.main(flags + ["--out", str(tmp_path / "a")])
    (again,) = T.main(flags + ["--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / f"ckpt_{noise}.pt").is_file() and not (tmp_path / "a" / "ckpt.pt").exists()
    assert first["config"].time_input and first["noise"] == noise
    assert math.isfinite(first["nats"]) and math.isfinite(first["draw_se"]) and first["nats"] > 0
    assert (first["nats"], first["se"], first["draw_se"]) == (again["nats"], again["se"], again["draw_se"])


def test_a_run_of_one_noise_is_not_resumed_as_another(names_file, tmp_path, capsys):
    from torch_version import train as T
    flags = ["--dataset", str(names_file), "--max-iters", "2", "--eval-interval", "2", "--out", str(tmp_path)] + TINY
    T.main(flags + ["--noise", "uniform"])
    (tmp_path / "ckpt_uniform.pt").rename(tmp_path / "ckpt_gaussian.pt")  # the wrong file under the right name
    with pytest.raises(SystemExit, match="--noise uniform"):
        T.main(flags + ["--noise", "gaussian", "--resume", "--max-iters", "4"])


def test_the_final_figure_is_the_mean_of_its_draws_and_their_spread_is_reported(names_file):
    """evaluate() draws one mask set at a time: the same masks as one call with draws=D, so the
    same figure, plus a standard error over the draws (none from one draw, zero for the AR twin)."""
    from torch_version import diffusion, train as T
    from torch_version.model import ModelConfig, Transformer
    data = T.load_dataset(str(names_file))
    torch.manual_seed(0)
    net = Transformer(ModelConfig(vocab_size=len(data["itos"]), n_out=len(data["itos"]) - 1,
                                  block_size=data["block_size"], n_layer=1, n_head=2, n_embd=16)).eval()
    torch.nn.init.normal_(net.head.weight, std=0.5)
    mask_id = len(data["itos"]) - 1
    value, se, draw_se = T.evaluate(net, data, False, 3, False, torch.autocast("cpu", enabled=False), mask_id, 0)
    whole = diffusion.estimate_nelbo(data["held"], net, mask_id, torch.Generator().manual_seed(T.EVAL_SEED), draws=3)
    assert value == pytest.approx(diffusion.per_char(whole, data["n_chars"])[0], rel=1e-12)
    assert draw_se > 0
    assert math.isnan(T.evaluate(net, data, False, 1, False, torch.autocast("cpu", enabled=False), mask_id, 0)[2])


def test_bench_names_noise_all_reports_four_models_and_scores_their_samples(names_file, tmp_path, capsys):
    from torch_version.bench import names as bench_names
    bench_names.main(["--dataset", str(names_file), "--max-iters", "2", "--eval-interval", "2", "--noise", "all",
                      "--out", str(tmp_path)] + TINY)
    out = capsys.readouterr().out
    for line in ("diffusion NELBO", "AR twin NLL", "uniform diffusion NELBO", "Gaussian diffusion NELBO",
                 "uniform diffusion / AR", "Gaussian diffusion / AR"):
        assert line in out
    table = out[out.index("samples per model"):].splitlines()[2:7]  # after the title and the header
    assert [row.split()[0] for row in table] == ["masked", "uniform", "gaussian", "AR", "data"]
