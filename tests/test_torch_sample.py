"""The torch tier's samplers behave as docs/algorithm.md section 6 says and agree with the NumPy tiers; the script
and the sampling benchmark run, and bad input gets one sentence."""
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from data.fetch import load_text
from minimal import train_minimal as tm
from pure import train_pure as tp
from tests import toy
from torch_version.bench import sampling as bench_sampling
from torch_version import diffusion as D, sample as S
from torch_version.diffusion import ar_nll
from torch_version.model import ModelConfig, Transformer
from torch_version.engine.checkpoints import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "torch_version" / "sample.py"
NAMES_ITOS = ["."] + list("abcdefghijklmnopqrstuvwxyz") + ["_"]  # PAD, letters, MASK: as build_vocab makes it
MASK_ID = len(NAMES_ITOS) - 1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny (thousands of elements): handing them between threads costs more
    than the work, ten times more on a busy 2-core machine. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_denoise(xt):
    """The Bayes-optimal denoiser of tests/toy.py as a torch denoiser."""
    return torch.from_numpy(toy.oracle_log_probs(xt.numpy()))


def tiny_model(causal=False, block_size=16, vocab_size=len(NAMES_ITOS), seed=0):
    """A 1-layer transformer with random weights, its output layer too (model.py starts it at
    zero, which would make every prediction uniform and every sampler test blind)."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab_size, n_out=vocab_size - 1, block_size=block_size,
                         n_layer=1, n_head=2, n_embd=16, causal=causal)
    model = Transformer(config)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


def random_denoiser(seed=0):
    return S.make_denoiser(tiny_model(seed=seed), "cpu")


def torch_uniform_rng(seed):
    """Stands in for a NumPy generator: hands out the float64 uniforms a torch.Generator with the
    same seed gives the torch sampler, so both tiers can be run on identical random numbers."""
    class Uniforms:
        g = torch.Generator().manual_seed(seed)

        def random(self, shape):
            return torch.rand(shape, generator=self.g, dtype=torch.float64).numpy()
    return Uniforms()


# ---------------------------------------------------------------- draws
def test_draw_gives_the_minimal_tiers_tokens_on_the_same_uniforms():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((64, 16, 27)) * 3
    ours = D.draw(torch.from_numpy(logits), torch.Generator().manual_seed(1), temperature=0.8)
    theirs = tm.draw(logits, torch_uniform_rng(1), temperature=0.8)
    # Both are the inverse CDF of the same float64 probabilities at the same uniform: they can
    # differ only when a uniform lies within rounding (~1e-16) of a cumulative sum.
    assert np.array_equal(ours.numpy(), theirs)


def test_draws_resolve_probabilities_far_below_float32_resolution():
    p = D.probabilities(torch.log(torch.tensor([[1 - 1e-9, 1e-9]], dtype=torch.float64)))
    # Token 1 is drawn exactly when u > 1 - 1e-9. In float32 both 1 - 5e-10 and the cumulative
    # sum round to 1.0, so token 1 could never be drawn.
    assert D.inverse_cdf(p, torch.tensor([[1 - 5e-10]], dtype=torch.float64)).item() == 1
    assert D.inverse_cdf(p, torch.tensor([[1 - 2e-9]], dtype=torch.float64)).item() == 0
    # and draw() feeds it float64 uniforms from the generator, nothing coarser
    logits = torch.randn(1000, 5, generator=torch.Generator().manual_seed(2))
    u = torch.rand(1000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(D.draw(logits, torch.Generator().manual_seed(3)), D.inverse_cdf(D.probabilities(logits), u))


def test_top_k_and_top_p_draw_only_from_the_kept_tokens_in_proportion():
    p = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03], dtype=torch.float64)
    logits = p.log().repeat(40_000, 1)
    g = torch.Generator().manual_seed(4)
    for kw, kept in (({"top_k": 2}, 2), ({"top_p": 0.8}, 3), ({"top_k": 4, "top_p": 0.7}, 2)):
        got = torch.bincount(D.draw(logits, g, **kw), minlength=5).double() / len(logits)
        want = torch.cat([p[:kept] / p[:kept].sum(), torch.zeros(5 - kept, dtype=torch.float64)])
        # a share's standard error is at most sqrt(0.25 / 40,000) = 0.0025: 0.01 is four of them
        assert torch.allclose(got, want, atol=0.01), kw


# ---------------------------------------------------------------- the toy oracle (SPEC 7)
def toy_counts(samples, strings):
    return toy.counts_of(samples.numpy(), strings)


def test_ancestral_sampler_with_many_steps_reproduces_q():
    n = 5000
    samples = S.sample_ancestral(toy_denoise, n, toy.LENGTH, toy.MASK_ID, torch.Generator().manual_seed(5),
                                 steps=500).samples
    counts = toy_counts(samples, toy.STRINGS)
    # With 500 steps two of the 3 positions share a step in ~0.6% of samples (drawn independently,
    # then), which moves at most ~30 samples: a shift far below the chi-square threshold at this n.
    assert counts.sum() >= 0.99 * n
    stat = ((counts - counts.sum() * toy.Q) ** 2 / (counts.sum() * toy.Q)).sum()
    assert stat < chi2.ppf(0.999, df=len(toy.Q) - 1)  # a false alarm once in 1,000 seeds


def test_ancestral_sampler_with_one_step_gives_the_product_of_marginals():
    n = 5000
    samples = S.sample_ancestral(toy_denoise, n, toy.LENGTH, toy.MASK_ID, torch.Generator().manual_seed(6),
                                 steps=1).samples
    strings, p = toy.product_of_marginals()
    keep = p * n >= 5  # pool the cells too rare for the chi-square approximation
    counts = np.append(toy_counts(samples, strings[keep]), 0)
    counts[-1] = n - counts[:-1].sum()
    expected = n * np.append(p[keep], p[~keep].sum())
    stat = ((counts - expected) ** 2 / np.maximum(expected, 1e-12)).sum()
    assert stat < chi2.ppf(0.999, df=len(counts) - 1)
    assert toy_counts(samples, toy.STRINGS).sum() < 0.9 * n  # and that is not q: joint structure is lost


def test_ancestral_sampler_gives_the_minimal_tiers_samples_on_the_same_uniforms():
    params = tm.init_params(len(NAMES_ITOS), np.random.default_rng(7), dtype=np.float64)
    params["W2"] *= 100  # sharper predictions than at initialisation, so the denoiser matters
    xt = np.full((32, tm.BLOCK_SIZE), MASK_ID)
    xt[:, 0] = 5  # a prompt: "e"
    theirs, their_trajectory = tm.sample_ancestral(lambda x: tm.forward(params, x)[0], 32, MASK_ID,
                                                   torch_uniform_rng(8), steps=20, xt=xt)
    ours = S.sample_ancestral(lambda x: torch.from_numpy(tm.forward(params, x.numpy())[0]), 32, tm.BLOCK_SIZE,
                              MASK_ID, torch.Generator().manual_seed(8), steps=20, xt=torch.from_numpy(xt))
    # Same logits, same uniforms in the same order, same formulas: the same samples, step by step
    # (up to a uniform falling within rounding of a threshold, ~1e-16 per draw).
    assert np.array_equal(ours.samples.numpy(), theirs)
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(ours.trajectory, their_trajectory, strict=True))


def test_confidence_sampler_gives_the_pure_tiers_samples_on_the_same_uniforms():
    params = tm.init_params(len(NAMES_ITOS), np.random.default_rng(20), dtype=np.float64)
    params["W2"] *= 100
    xt = np.full((32, 16), MASK_ID)
    xt[:, :2] = [5, 13]  # "em": 14 masks, so round(14 * 0.75) = round(10.5) tests the rounding rule too
    theirs, their_trajectory = tp.sample_confidence(lambda x: tm.forward(params, x)[0], 32, MASK_ID,
                                                    torch_uniform_rng(21), steps=4, xt=xt)
    ours = S.sample_confidence(lambda x: torch.from_numpy(tm.forward(params, x.numpy())[0]), 32, 16, MASK_ID,
                               torch.Generator().manual_seed(21), steps=4, xt=torch.from_numpy(xt))
    assert np.array_equal(ours.samples.numpy(), theirs)
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(ours.trajectory, their_trajectory, strict=True))


# ---------------------------------------------------------------- what every sampler promises
def sample_with(name, denoise, xt, seed=9):
    n, L = xt.shape
    kw = {"tau": 0.5} if name == "threshold" else {"steps": 6}
    return S.SAMPLERS[name](denoise, n, L, MASK_ID, torch.Generator().manual_seed(seed), xt=xt, **kw)


@pytest.mark.parametrize("name", sorted(S.SAMPLERS))
def test_sampler_never_changes_unmasked_positions_and_ends_with_no_mask(name):
    xt = torch.full((40, 16), MASK_ID)
    xt[:, :2] = torch.tensor([5, 13])  # a prefix, "em"
    xt[:, 9] = 1  # and one fixed position in the middle: infill
    result = sample_with(name, random_denoiser(), xt)
    assert not (result.samples == MASK_ID).any()
    for before, after in zip(result.trajectory[:-1], result.trajectory[1:]):
        clean = before != MASK_ID
        assert torch.equal(after[clean], before[clean])
    assert torch.equal(result.trajectory[-1], result.samples)


@pytest.mark.parametrize("name", sorted(S.SAMPLERS))
def test_sampler_records_a_confidence_per_step_at_the_masked_positions(name):
    xt = torch.full((5, 16), MASK_ID)
    xt[:, 3] = 1
    result = sample_with(name, random_denoiser(), xt)
    assert len(result.confidence) == len(result.trajectory) - 1 == len(result.times) - 1
    for before, conf in zip(result.trajectory, result.confidence):
        assert torch.equal(conf.isnan(), before != MASK_ID)  # a number exactly where a mask waits
        assert (conf[~conf.isnan()] > 0).all() and (conf[~conf.isnan()] <= 1).all()


@pytest.mark.parametrize("name", sorted(S.SAMPLERS))
def test_same_seed_same_samples(name):
    xt = torch.full((10, 16), MASK_ID)
    a = sample_with(name, random_denoiser(), xt, seed=10)
    b = sample_with(name, random_denoiser(), xt, seed=10)
    assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe


def test_ancestral_cache_calls_the_network_only_after_a_change():
    calls = []
    denoise = random_denoiser()
    result = S.sample_ancestral(lambda xt: calls.append(1) or denoise(xt), 1, 16, MASK_ID,
                                torch.Generator().manual_seed(11), steps=64)
    changes = sum(not torch.equal(a, b) for a, b in zip(result.trajectory[:-1], result.trajectory[1:]))
    # one call at the start, one after every change but the last (which leaves no mask)
    assert result.nfe == len(calls) == changes < 64


def test_confidence_sampler_follows_the_schedule_and_unmasks_the_most_confident():
    denoise = random_denoiser()
    result = S.sample_confidence(denoise, 8, 16, MASK_ID, torch.Generator().manual_seed(12), steps=4,
                                 temperature=1e-3)  # near argmax: the drawn token is the top one
    assert result.nfe == 4
    left = [int((x[0] == MASK_ID).sum()) for x in result.trajectory]
    assert left == [16, 12, 8, 4, 0]  # round(16 * (1 - alpha(s))) with alpha(s) = 1 - s
    for before, after, conf in zip(result.trajectory[:-1], result.trajectory[1:], result.confidence):
        chosen = (before == MASK_ID) & (after != MASK_ID)
        waiting = after == MASK_ID
        for row in range(8):  # every position unmasked was at least as confident as every one left
            if waiting[row].any():
                assert conf[row][chosen[row]].min() >= conf[row][waiting[row]].max()


def test_threshold_sampler_unmasks_all_confident_positions_at_once():
    denoise = random_denoiser()
    g = torch.Generator().manual_seed(13)
    one_by_one = S.sample_threshold(denoise, 4, 16, MASK_ID, g, tau=1.0)  # no draw has probability 1
    assert one_by_one.nfe == 16 and all(
        int((a != b).sum(1).max()) == 1 for a, b in zip(one_by_one.trajectory[:-1], one_by_one.trajectory[1:]))
    all_at_once = S.sample_threshold(denoise, 4, 16, MASK_ID, g, tau=1e-9)
    assert all_at_once.nfe == 1 and not (all_at_once.samples == MASK_ID).any()


def test_impossible_step_counts_are_refused_with_one_sentence():
    denoise = random_denoiser()
    g = torch.Generator().manual_seed(14)
    with pytest.raises(ValueError, match="at least 1 step"):
        S.sample_ancestral(denoise, 2, 16, MASK_ID, g, steps=0)
    with pytest.raises(ValueError, match="between 1 and the 16 masked positions"):
        S.sample_confidence(denoise, 2, 16, MASK_ID, g, steps=17)
    with pytest.raises(ValueError, match="tau"):
        S.sample_threshold(denoise, 2, 16, MASK_ID, g, tau=0)


# ---------------------------------------------------------------- long text, infill, AR
def test_long_text_is_made_in_blocks_that_fit_the_window_and_keep_their_context():
    denoise, block_size = random_denoiser(), 16
    prompt = torch.tensor([1, 2, 3])
    ids, nfe, blocks = S.sample_text(denoise, S.sample_ancestral, 2, 50, block_size, MASK_ID,
                                     torch.Generator().manual_seed(15), prompt=prompt, block_chars=6, steps=3)
    assert ids.shape == (2, 53) and torch.equal(ids[:, :3], prompt.expand(2, -1))
    assert not (ids == MASK_ID).any() and nfe == sum(b.nfe for _, b in blocks)
    for start, block in blocks:
        start_xt, end = block.trajectory[0], start + block.samples.shape[1]
        assert block.samples.shape[1] <= block_size  # context + new block fit the window
        new = start_xt[0] == MASK_ID
        assert torch.equal(start_xt[:, ~new], ids[:, start:end][:, ~new])  # the context is the text before
        assert torch.equal(block.samples, ids[:, start:end])
    assert blocks[0][1].samples.shape[1] == block_size  # the first block fills the window


def exact_names_denoiser(strings, q, n_tokens):
    """Bayes-optimal denoiser of a distribution over a few padded strings, by enumeration."""
    strings, q = torch.tensor(strings), torch.tensor(q, dtype=torch.float64)

    def denoise(xt):
        agrees = ((xt[:, None, :] == MASK_ID) | (xt[:, None, :] == strings[None])).all(-1)  # (B, S)
        posterior = torch.where(agrees.any(1, keepdim=True), agrees * q, q)
        posterior = posterior / posterior.sum(1, keepdim=True)
        marginals = torch.einsum("bs,slv->blv", posterior, torch.eye(n_tokens, dtype=torch.float64)[strings])
        return marginals.log()
    return denoise


def test_variable_length_infill_keeps_the_gap_length_with_the_best_nelbo_per_character():
    def padded(word):
        return [NAMES_ITOS.index(c) for c in word.ljust(8, ".")]
    words, q = ["ab", "aab", "aaab", "aaaab"], [0.04, 0.03, 0.9, 0.03]
    denoise = exact_names_denoiser([padded(w) for w in words], q, len(NAMES_ITOS) - 1)
    template = torch.tensor([1, MASK_ID, 2])  # "a_b"
    fills, scores, tried, _ = S.fill_variable(denoise, template, [0, 1, 2, 3], 6, 8, MASK_ID,
                                              torch.Generator().manual_seed(16), S.sample_ancestral, pad_id=0,
                                              steps=8)
    # Each template has one completion in the support, and an exact denoiser makes its expected
    # NELBO -log q: per character (len + 1) ab 1.07, aab 0.88, aaab 0.02, aaaab 0.58 nats. A
    # middle length wins, so the choice favours neither the shortest nor the longest gap.
    assert [tried[g][0][0].tolist() for g in (0, 1, 2, 3)] == [padded(w) for w in ("ab", "aab", "aaab", "aaaab")]
    assert all(torch.equal(f, torch.tensor(padded("aaab"))) for f in fills)
    assert torch.equal(scores, tried[2][1])


def test_kv_cached_ar_generation_equals_uncached_generation():
    model = tiny_model(causal=True, block_size=12)
    prefix = torch.tensor([[5, 13], [1, 2]])
    runs = [S.generate_ar(model, prefix, 30, torch.Generator().manual_seed(17), MASK_ID, kv_cache=cached)
            for cached in (True, False)]
    # 30 new tokens in a window of 12 slide it several times, so the cache is rebuilt too. The
    # logits agree to float rounding, so a draw could differ only at a uniform within ~1e-6 of a
    # cumulative sum; with the seed fixed this is a deterministic check.
    assert runs[0][0].shape == (2, 32) and torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1] == 30


def test_ar_names_stop_at_their_end_and_are_padded():
    model = tiny_model(causal=True)
    ids, nfe = S.generate_ar(model, torch.empty((20, 0), dtype=torch.long), 16, torch.Generator().manual_seed(18),
                             MASK_ID, stop_id=0)
    ended = (ids == 0).long().cumsum(1) > 0
    assert ids.shape == (20, 16) and torch.all(ids[ended] == 0) and nfe <= 16


# ---------------------------------------------------------------- the script
def checkpoint(folder, causal=False, kind="names", itos=NAMES_ITOS):
    """A tiny random model saved the way train.py saves one."""
    model = tiny_model(causal=causal, vocab_size=len(itos), block_size=16 if kind == "names" else 32)
    path = Path(folder) / ("ckpt_ar.pt" if causal else "ckpt.pt")
    config = dict(kind=kind, schedule="linear", mask_id=len(itos) - 1, pad_id=0 if kind == "names" else None,
                  bos_id=len(itos) - 1)
    save_checkpoint(path, model=model.state_dict(), optimizer={}, model_args=asdict(model.config),
                    config=config, itos=itos, step=0, best_val_loss=0.0)
    return path


def run_main(*argv):
    """main() in this process (no interpreter start-up per case): (exit code, sys.exit's message)."""
    try:
        S.main([str(a) for a in argv])
        return 0, None
    except SystemExit as exit_:
        return exit_.code, exit_.code


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    text_itos = sorted(set(load_text())) + ["_"]  # Shakespeare's characters, then MASK
    return {"names": checkpoint(folder), "ar": checkpoint(folder, causal=True),
            "text": checkpoint(folder / "text", kind="text", itos=text_itos),
            "text_ar": checkpoint(folder / "text", causal=True, kind="text", itos=text_itos)}


def test_script_samples_names_with_every_sampler_and_reports_its_cost(ckpts, capsys):
    for args in ([], ["--sampler", "confidence", "--steps", "4"], ["--sampler", "threshold"], ["--prompt", "em"],
                 ["--infill", "m__a"], ["--infill", "m?a", "--blank", "?", "--infill-lengths", "1-3"]):
        code, _ = run_main("--ckpt", ckpts["names"], "--samples", 4, "--device", "cpu", *args)
        out = capsys.readouterr().out
        assert code == 0 and "network evaluations" in out and "characters/s" in out, args
    code, _ = run_main("--ckpt", ckpts["ar"], "--ar", "--samples", 4, "--device", "cpu")
    assert code == 0 and "network evaluations" in capsys.readouterr().out


def test_script_writes_long_text_in_blocks(ckpts, capsys):
    code, _ = run_main("--ckpt", ckpts["text"], "--chars", 70, "--steps", 4, "--device", "cpu", "--prompt", "First")
    out = capsys.readouterr().out
    assert code == 0 and "70 characters" in out and out.count("---------------- sample") == 1


@pytest.mark.parametrize("args, says", [
    (["--prompt", "em9"], "does not know: '9'"),
    (["--prompt", "abcdefghijklmnop"], "window holds 15"),
    (["--prompt", "e_"], "MASK"),
    (["--sampler", "confidence", "--steps", "17"], "between 1 and the 16"),
    (["--steps", "0"], None),
    (["--infill", "emma"], "no blank"),
    (["--infill", "m?a"], "--blank picks another"),
    (["--infill", "e_m_a", "--infill-lengths", "2-4"], "exactly one run"),
    (["--infill", "e_a", "--infill-lengths", "12-16"], "window holds 15"),
    (["--infill-lengths", "2-x", "--infill", "e_a"], None),
    (["--ar"], "diffusion model"),
    (["--device", "nonsense"], "cannot use --device"),
])
def test_bad_input_gives_one_clear_sentence(ckpts, capsys, args, says):
    code, message = run_main("--ckpt", ckpts["names"], "--device", "cpu", *args)
    err = capsys.readouterr().err
    assert code not in (0, None)
    text = message if isinstance(message, str) else err  # sys.exit("error: ...") or parser.error
    last = text.strip().splitlines()[-1]  # argparse puts its usage line first
    assert (last.startswith("error:") or ": error:" in last) and "Traceback" not in text
    if says:
        assert says in text


def test_script_run_from_the_shell_exits_non_zero_without_a_traceback(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--ckpt", str(tmp_path / "missing.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "missing.pt" in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- the sampling benchmark
def test_judge_scores_every_character_once_as_the_ar_twin_does():
    twin = tiny_model(causal=True, block_size=16)
    ids = torch.randint(0, MASK_ID, (40,), generator=torch.Generator().manual_seed(19))
    nll = bench_sampling.judge_nll(twin, ids, MASK_ID, "cpu")
    assert nll.shape == (40,) and torch.isfinite(nll).all()
    # up to one window the judge is the twin's own exact loss (diffusion.ar_nll), start token and all
    whole = ar_nll(ids[None, :16], S.make_denoiser(twin, "cpu"), MASK_ID)
    assert torch.allclose(nll[:16].sum(), whole[0], rtol=1e-6)
    assert torch.allclose(bench_sampling.judge_nll(twin, ids[:16], MASK_ID, "cpu"), nll[:16])


def test_sampling_benchmark_runs_end_to_end_and_writes_its_table_and_plot(ckpts, tmp_path, capsys):
    bench_sampling.main(["--ckpt", str(ckpts["text"]), "--ckpt-ar", str(ckpts["text_ar"]), "--chars", "40",
                         "--samples", "1", "--steps", "2", "--taus", "0.9", "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "AR twin, KV cache" in out and "validation text" in out and "figure (500 NFE" in out
    table = json.loads((tmp_path / "bench_sampling.json").read_text())
    assert [r["sampler"] for r in table["diffusion"]] == ["ancestral", "confidence", "threshold"]
    assert table["ar"]["nfe"] == 40 and all(r["nfe"] <= 40 for r in table["diffusion"])
    assert (tmp_path / "sampling.png").stat().st_size > 0
