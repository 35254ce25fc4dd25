"""Block diffusion (torch_version/processes/block.py): the bound, block by block, is exact with the
exact denoiser; blocks of 1 are the AR factorisation and one block is the masked model; the
attention mask that makes it so (and proof that the check of it can fail); the sampler with its KV
cache; and train.py --block."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from tests import toy
from tests.conftest import write_names_like
from torch_version import diffusion, train as T
from torch_version import model as M
from torch_version.model import ModelConfig, Transformer
from torch_version.processes import block as B

K, MASK = toy.N_TOKENS, toy.MASK_ID
L4 = toy.STRINGS4.shape[1]  # the block toy's length: blocks of 1, 2 and 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and the numbers do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def oracle(block):
    """The exact block-diffusion denoiser of tests/toy.py (STRINGS4) as block.estimate_nelbo calls it."""
    def denoise(xt, x0=None):
        return torch.from_numpy(toy.block_oracle_log_probs(xt.numpy(), x0.numpy(), block))
    return denoise


def copies(m):
    return torch.from_numpy(np.repeat(toy.STRINGS4, m, axis=0))


def per_string(nelbo, m):
    per = nelbo.view(len(toy.STRINGS4), m)
    return per.mean(1), per.std(1) / math.sqrt(m)


# ---------------------------------------------------------------- the bound, with the exact denoiser
@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("one_pass", [False, True], ids=["full", "one-pass"])
def test_with_the_exact_denoiser_the_bound_is_minus_log_q(block, one_pass):
    m = 3000
    nelbo = B.estimate_nelbo(copies(m), oracle(block), MASK, torch.Generator().manual_seed(0), one_pass=one_pass,
                             block=block)
    mean, se = per_string(nelbo, m)
    # The estimator is unbiased and the bound is tight for the exact denoiser, block by block: each
    # block's discrete form is -log q(block | blocks before). Four standard errors, plus float64 rounding.
    assert ((mean + torch.log(torch.tensor(toy.Q4))).abs() <= 4 * se + 1e-9).all(), (mean, se)


def test_blocks_of_one_draw_nothing_and_give_the_ar_factorisations_exact_nll():
    """Blocks of 1: every position is masked alone (k = 1), its context the clean positions before
    it. No randomness is left, so any two draws agree to the last bit, and with the exact denoiser
    the figure is -log q(x0) itself, not an estimate of it."""
    a = B.estimate_nelbo(copies(2), oracle(1), MASK, torch.Generator().manual_seed(1), draws=3, block=1)
    b = B.estimate_nelbo(copies(2), oracle(1), MASK, torch.Generator().manual_seed(2), one_pass=True, block=1)
    assert torch.equal(a, b)
    assert torch.allclose(a, -torch.log(torch.tensor(toy.Q4, dtype=torch.float64)).repeat_interleave(2), atol=1e-12)


@pytest.mark.parametrize("one_pass", [False, True], ids=["full", "one-pass"])
def test_one_block_is_the_masked_models_estimate_on_the_same_draws(one_pass):
    def masked_oracle(xt):
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(toy.marginals_given(xt.numpy(), toy.STRINGS4, toy.Q4)))
    x0 = copies(50)
    ours = B.estimate_nelbo(x0, oracle(L4), MASK, torch.Generator().manual_seed(3), draws=2, one_pass=one_pass,
                            block=L4)
    theirs = diffusion.estimate_nelbo(x0, masked_oracle, MASK, torch.Generator().manual_seed(3), draws=2,
                                      one_pass=one_pass)
    assert torch.equal(ours, theirs)


def test_one_training_k_per_block_spreads_over_every_mask_size_and_one_block_is_the_masked_draw():
    k = B.sample_k(512, 16, torch.Generator().manual_seed(4), block=4)  # (512, 4)
    assert k.shape == (512, 4) and k.min() == 1 and k.max() == 4
    for j in range(4):  # in every block, each size equally often
        assert torch.equal(torch.bincount(k[:, j])[1:], torch.full((4,), 128))
    assert (k.float().std(1) > 0).float().mean() > 0.9  # a row's blocks do not share one k
    assert torch.equal(B.sample_k(64, 16, torch.Generator().manual_seed(5), block=16)[:, 0],
                       diffusion.sample_k(64, 16, torch.Generator().manual_seed(5)))
    x0 = torch.randint(K, (64, 16), generator=torch.Generator().manual_seed(6))
    xt, mask = B.corrupt_k(x0, k[:64], MASK, torch.Generator().manual_seed(7))
    assert torch.equal(mask.view(64, 4, 4).sum(-1), k[:64]) and torch.equal(xt[mask], torch.full((int(mask.sum()),), MASK))


# ---------------------------------------------------------------- the model and its attention mask
def block_model(block, L=8, vocab=K + 2, seed=0):
    """A 2-layer block-diffusion transformer with random weights (its output layer too: model.py
    starts it at zero, which would make every logit the same and every check below blind)."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**B.model_args(vocab - 1, block=block), n_out=vocab - 1, block_size=L,
                                    n_layer=2, n_head=2, n_embd=16))
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


def leak(model, block, L=8):
    """The largest change in the noisy half's logits at block j when the clean copy changes at block
    j or later: what the denoiser would know of the answer it is asked for."""
    g, V = torch.Generator().manual_seed(8), model.config.n_out
    x0 = torch.randint(V, (6, L), generator=g)
    xt = x0.masked_fill(torch.rand(6, L, generator=g) < 0.5, V)
    base, worst = model(xt, x0=x0), 0.0
    for j in range(0, L, block):
        other = x0.clone()
        other[:, j:] = torch.randint(V, (6, L - j), generator=g)
        worst = max(worst, (model(xt, x0=other) - base)[:, j:j + block].abs().max().item())
    return worst


@pytest.mark.parametrize("block", [1, 2, 4, 8])
def test_a_noisy_block_never_sees_its_own_clean_copy_or_anything_after_it(block):
    assert leak(block_model(block), block) == 0.0


def test_the_leak_check_catches_a_noisy_block_that_sees_its_own_clean_copy(monkeypatch):
    """The deliberate mistake: a noisy block allowed to read the clean copy of its own block. The
    check above must see it (so it can fail), and with it a loss that the model can drive to zero."""
    good = M.block_diffusion_mask

    def leaky(T, block_len, device=None):
        mask = good(T, block_len, device).clone()
        of_block = torch.arange(T, device=device) // block_len
        mask[:T, T:] |= of_block[:, None] == of_block[None, :]  # noisy block j -> clean block j
        return mask
    monkeypatch.setattr(M, "block_diffusion_mask", leaky)
    assert leak(block_model(2), 2) > 1e-3
    monkeypatch.setattr(M, "block_diffusion_mask", good)
    assert leak(block_model(2), 2) == 0.0


@pytest.mark.parametrize("block", [1, 2, 4, 8])
def test_the_kv_cache_path_gives_the_training_passs_logits(block):
    """Sampling reads the clean blocks from a KV cache; training reads [xt, x0] in one pass. Block
    by block, the noisy block's logits must be the same both ways (float32 rounding apart)."""
    model, L = block_model(block), 8
    g = torch.Generator().manual_seed(9)
    x0 = torch.randint(K, (3, L), generator=g)
    xt = x0.masked_fill(torch.rand(3, L, generator=g) < 0.6, K)
    full, cache, parts = model(xt, x0=x0), model.new_kv_cache(3), []
    for j in range(0, L, block):
        parts.append(model(xt[:, j:j + block], kv_cache=cache, start_pos=j))
        model(x0[:, j:j + block], kv_cache=cache, start_pos=j)  # the finished block enters the cache
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    # several clean blocks in one pass (a prompt) fill the cache as block by block does
    cache2 = model.new_kv_cache(3)
    model(x0[:, :L - block], kv_cache=cache2, start_pos=0)
    assert torch.allclose(model(xt[:, L - block:], kv_cache=cache2, start_pos=L - block), full[:, L - block:], atol=1e-5)



class WithoutCache:
    """A block-diffusion model as block.sample_blocks calls it, but with no KV cache: every call reads
    the whole window so far through the training pass, [xt, x0] with the clean blocks in both halves."""
    def __init__(self, model):
        self.model, self.config = model, model.config

    def new_kv_cache(self, n):
        return torch.full((n, self.config.block_size), self.config.n_out)

    @torch.no_grad()
    def __call__(self, x, kv_cache=None, start_pos=0):
        end = start_pos + x.shape[1]
        kv_cache[:, start_pos:end] = x
        return self.model(kv_cache[:, :end], x0=kv_cache[:, :end])[:, start_pos:end]


@pytest.mark.parametrize("block", [2, 4])
def test_the_sampler_writes_with_its_cache_what_it_writes_without_one(block):
    """The sampler puts a finished block in the cache in the same call as the next block's first
    step, and restarts the window of 8 when 20 positions do not fit: the text must be the one the
    uncached training pass writes from the same draws, at one network call per step."""
    from torch_version import sample as S
    model = block_model(block)
    mask = model.config.n_out  # this model's MASK: the id after its K + 1 outputs
    cached = B.sample_ancestral(S.make_denoiser(model, "cpu"), 6, 20, mask, torch.Generator().manual_seed(15), block,
                                block=block)
    plain = B.sample_ancestral(WithoutCache(model), 6, 20, mask, torch.Generator().manual_seed(15), block, block=block)
    assert torch.equal(cached.samples, plain.samples) and (cached.samples != mask).all()
    assert cached.nfe == plain.nfe <= 20  # at most `block` steps per block of `block`: no extra pass for the cache


def test_the_animation_of_a_block_model_keeps_a_frame_wherever_the_text_changed():
    """visualize.py samples a block model with many steps per block (sample.BLOCK_STEPS per position),
    most of which unmask nothing: its film keeps the first frame and every frame that differs."""
    from torch_version import sample as S
    from torch_version.tools import visualize as V
    model = block_model(2)
    mask = model.config.n_out
    film, result = V.diffusion_film(S.make_denoiser(model, "cpu"), "ancestral", 2, 8, mask, torch.Generator().manual_seed(16),
                                    S.BLOCK_STEPS * 2, 0.9, 1.0, "linear")
    assert len(result.trajectory) == 4 * S.BLOCK_STEPS * 2 + 1 > len(film.frames) == len(film.labels) > 4
    assert all(not torch.equal(a, b) for a, b in zip(film.frames, film.frames[1:]))
    assert (film.frames[0] == mask).all() and torch.equal(film.frames[-1], result.samples)


def test_one_block_is_the_masked_denoiser_with_the_same_weights():
    model = block_model(8)
    plain = Transformer(ModelConfig(**{**vars(model.config), "block_len": 0})).eval()
    plain.load_state_dict(model.state_dict())  # block_len adds no weights
    x0 = torch.randint(K, (4, 8), generator=torch.Generator().manual_seed(10))
    xt = x0.masked_fill(torch.rand(4, 8, generator=torch.Generator().manual_seed(11)) < 0.5, K)
    assert torch.allclose(model(xt, x0=x0), plain(xt), atol=1e-5)


# ---------------------------------------------------------------- the sampler
class BlockOracle:
    """The exact denoiser as block.sample_blocks calls it: a KV cache (here the ids written so far,
    where a model keeps their keys and values) and a window of L4 positions."""
    config = SimpleNamespace(block_size=L4)

    def new_kv_cache(self, n):
        return torch.full((n, L4), MASK)

    def __call__(self, x, kv_cache=None, start_pos=0):
        end = start_pos + x.shape[1]
        kv_cache[:, start_pos:end] = x
        visible = kv_cache.clone()
        visible[:, end:] = MASK
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(toy.marginals_given(visible.numpy(), toy.STRINGS4, toy.Q4)))[:, start_pos:end]


def chi_square_against_q4(samples):
    counts = toy.counts_of(samples.numpy(), toy.STRINGS4)
    return counts.sum() / len(samples), ((counts - counts.sum() * toy.Q4) ** 2 / (counts.sum() * toy.Q4)).sum()


@pytest.mark.parametrize("block, steps", [(1, 1), (2, 200), (4, 400)])
def test_the_block_sampler_with_the_exact_denoiser_reproduces_q(block, steps):
    n = 5000
    out = B.sample_ancestral(BlockOracle(), n, L4, MASK, torch.Generator().manual_seed(12), steps, block=block)
    on_support, stat = chi_square_against_q4(out.samples)
    # Blocks of 1 are exact AR sampling at any number of steps; in larger blocks two positions
    # share a step rarely at these step counts (drawn independently then), far below the threshold.
    assert on_support >= (1.0 if block == 1 else 0.99)
    assert stat < chi2.ppf(0.999, df=len(toy.Q4) - 1)


def test_the_sampler_keeps_a_prompt_and_counts_every_network_call():
    calls = []

    class Counting(BlockOracle):
        def __call__(self, x, kv_cache=None, start_pos=0):
            calls.append(start_pos)
            return super().__call__(x, kv_cache, start_pos)

    xt = torch.full((50, L4), MASK)
    xt[:, :3] = torch.tensor([0, 0, 1])  # a prompt across the first block and into the second
    out = B.sample_ancestral(Counting(), 50, L4, MASK, torch.Generator().manual_seed(13), 4, xt=xt, block=2)
    assert (out.samples[:, :3] == torch.tensor([0, 0, 1])).all()
    assert (out.samples[:, 3] == 2).all()  # the only string that starts aab is aab c
    assert out.nfe == len(calls) and calls[0] == 0  # the prompt's first block went into the cache in one call


def test_text_longer_than_the_window_restarts_it_and_stays_on_the_data():
    """A long text: the window of 4 fills, restarts from its last half (one block of 2) and goes on.
    Every window the sampler wrote is a toy string's continuation of the block before it."""
    out = B.sample_ancestral(BlockOracle(), 200, 10, MASK, torch.Generator().manual_seed(14), 8, block=2)
    assert out.samples.shape == (200, 10) and (out.samples != MASK).all()
    assert len(out.trajectory) == len(out.times) == len(out.confidence) + 1


# ---------------------------------------------------------------- train.py --block
@pytest.fixture(scope="module")
def lines_file(tmp_path_factory):
    return write_names_like(tmp_path_factory.mktemp("block") / "lines.txt", n=300)  # names of 2-7 letters: L = 8


def run_train(argv, capsys):
    T.main(argv + ["--max-iters", "30", "--eval-interval", "15", "--batch-size", "32", "--final-draws", "2",
                   "--samples", "3", "--no-compile", "--quiet", "--threads", "1"])
    return capsys.readouterr().out


def test_train_py_trains_a_block_model_into_its_own_checkpoint_and_repeats_with_the_same_seed(lines_file, tmp_path, capsys):
    first = run_train(["--dataset", str(lines_file), "--block", "2", "--out", str(tmp_path / "a")], capsys)
    again = run_train(["--dataset", str(lines_file), "--block", "2", "--out", str(tmp_path / "b")], capsys)
    assert (tmp_path / "a" / "ckpt_block2.pt").is_file() and "full discrete form of each block of 2" in first
    figure = lambda out: next(line for line in out.splitlines() if "held-out NELBO" in line).split("trained in")[1]  # noqa: E731
    assert figure(first).split(";")[1] == figure(again).split(";")[1]


def test_a_block_that_does_not_divide_the_window_or_another_process_is_refused(lines_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        T.main(["--dataset", str(lines_file), "--block", "3", "--out", str(tmp_path)])
    assert done.value.code == "error: --block 3 does not divide the window of 8 characters into whole blocks; pick a divisor of 8."
    with pytest.raises(SystemExit) as done:
        T.main(["--dataset", str(lines_file), "--block", "2", "--noise", "uniform", "--out", str(tmp_path)])
    assert done.value.code == 2 and "--block" in capsys.readouterr().err


def test_a_block_run_is_not_resumed_with_another_block(lines_file, tmp_path, capsys):
    run_train(["--dataset", str(lines_file), "--block", "2", "--out", str(tmp_path)], capsys)
    (tmp_path / "ckpt_block2.pt").rename(tmp_path / "ckpt_block4.pt")
    with pytest.raises(SystemExit) as done:
        T.main(["--dataset", str(lines_file), "--block", "4", "--out", str(tmp_path), "--resume", "--no-compile"])
    assert "block" in str(done.value.code) and str(done.value.code).startswith("error:")


def test_sampling_a_folder_picks_its_block_model_when_it_has_no_masked_one(tmp_path, monkeypatch):
    from torch_version import sample as S
    monkeypatch.setattr(S, "OUT_DIR", tmp_path / "out")
    monkeypatch.setattr(S, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights" / "text").mkdir(parents=True)
    (tmp_path / "weights" / "text" / "ckpt_block4.pt").write_bytes(b"")
    assert S.default_checkpoint("text") == tmp_path / "weights" / "text" / "ckpt_block4.pt"
    (tmp_path / "weights" / "text" / "ckpt.pt").write_bytes(b"")  # a masked model wins where there is one
    assert S.default_checkpoint("text") == tmp_path / "weights" / "text" / "ckpt.pt"
    assert S.default_checkpoint("text", ar=True) == tmp_path / "out" / "text" / "ckpt_ar.pt"


def test_the_laptop_preset_is_block_diffusion_on_windows_of_256_on_the_cpu():
    args = T.parse_args(["--dataset", "shakespeare", "--size", "laptop"])
    assert (args.block, args.block_size, args.device) == (T.SHAKESPEARE_LAPTOP["block"], 256, "cpu")
    assert args.out.endswith("shakespeare_laptop") and T.checkpoint_path(args, False).name == f"ckpt_block{args.block}.pt"
    assert T.parse_args(["--dataset", "shakespeare", "--size", "laptop", "--block", "0"]).block == 0  # masked, 256
