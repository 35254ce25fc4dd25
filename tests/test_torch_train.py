"""The torch tier's model, loss, evaluation and training engineering (torch_version/).

Tiny configs on CPU. The loop is checked against the NumPy tier (minimal/) on identical
inputs, and the NELBO estimator against exact enumeration and the toy oracle (SPEC 7)."""
import itertools
import math
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from minimal import train_minimal as tm
from tests import toy
from torch_version import diffusion as D
from torch_version import train as T
from torch_version.engine.muon import MuonAdamW, orthogonalize
from torch_version.model import ModelConfig, Transformer
from torch_version.engine.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=8, n_out=7, block_size=10, n_layer=2, n_head=2, n_embd=16)
TINY_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "16",
              "--eval-draws", "1", "--final-draws", "1", "--samples", "0", "--quiet", "--device", "cpu"]


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**dict(TINY, **overrides))).eval()
    torch.nn.init.normal_(model.head.weight)  # the head starts at zero; make the outputs non-trivial
    return model


@pytest.fixture
def lines_file(tmp_path):
    """A small names-like dataset: 200 lowercase 'names', one per line."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), rng.integers(2, 8))) for _ in range(200)]
    path = tmp_path / "items.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def run_main(argv):
    """train.main in-process; a sys.exit becomes (code, message)."""
    try:
        return T.main(argv), None
    except SystemExit as exit_:
        return None, exit_.code


# ---------------------------------------------------------------- the model: shapes and SUBS
@pytest.mark.parametrize("causal", [False, True])
def test_logits_have_one_class_per_real_token_and_none_for_mask(causal):
    model = tiny_model(causal=causal)
    logits = model(torch.randint(0, 8, (3, 10)))
    assert logits.shape == (3, 10, 7) and logits.dtype == torch.float32  # V - 1 outputs: MASK cannot be predicted


def test_denoiser_sees_both_sides_and_ar_twin_only_the_past():
    x = torch.randint(0, 8, (2, 10))
    changed = x.clone()
    changed[:, 6] = (x[:, 6] + 1) % 8
    for causal in (False, True):
        model = tiny_model(causal=causal)
        with torch.no_grad():
            moved = (model(x) - model(changed)).abs().amax(dim=(0, 2))  # (T,) change per position
        assert moved[:6].max() > 1e-4 if not causal else moved[:6].max() == 0


@pytest.mark.parametrize("positions", ["rope", "learned", "both"])
def test_kv_cached_decoding_gives_the_uncached_logits(positions):
    model = tiny_model(causal=True, positions=positions)
    x = torch.randint(0, 8, (3, 10))
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(3, "cpu")
        parts = [model(x[:, :4], kv_cache=cache, start_pos=0), model(x[:, 4:7], kv_cache=cache, start_pos=4)]
        parts += [model(x[:, i:i + 1], kv_cache=cache, start_pos=i) for i in range(7, 10)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)  # float32 sums in another order


def test_loss_ignores_predictions_at_unmasked_positions():
    x0 = torch.randint(0, 7, (4, 10))
    k = torch.tensor([1, 3, 5, 10])
    xt, mask = D.corrupt_k(x0, k, 7, torch.Generator().manual_seed(0))
    logits = torch.randn(4, 10, 7, requires_grad=True)
    D.nelbo_loss(logits, x0, mask, torch.rand(4, dtype=torch.float64) + 0.1).backward()
    assert logits.grad[~mask].abs().max() == 0 and logits.grad[mask].abs().max() > 0
    assert (xt[~mask] == x0[~mask]).all() and (xt[mask] == 7).all()


# ---------------------------------------------------------------- the loop agrees with the NumPy tier
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_and_weight_equal_the_minimal_tier(schedule):
    t = np.linspace(1e-3, 1, 101)
    torch.testing.assert_close(D.alpha(torch.tensor(t), schedule), torch.tensor(tm.alpha(t, schedule)))
    torch.testing.assert_close(D.weight(torch.tensor(t), schedule), torch.tensor(tm.weight(t, schedule)))


def test_antithetic_times_equal_the_minimal_tier_for_the_same_uniform():
    u = torch.rand((), generator=torch.Generator().manual_seed(5), dtype=torch.float64).item()
    ours = D.sample_times(64, torch.Generator().manual_seed(5))  # draws the same u first

    class FixedUniform:  # minimal's sample_times asks its rng for one uniform
        def random(self):
            return u
    torch.testing.assert_close(ours, torch.tensor(tm.sample_times(64, FixedUniform())))


def test_nelbo_loss_and_its_gradient_equal_the_minimal_tier():
    rng = np.random.default_rng(1)
    logits, x0 = rng.standard_normal((5, 16, 27)), rng.integers(0, 27, (5, 16))
    mask, t = rng.random((5, 16)) < 0.5, tm.sample_times(5, rng)
    loss_np, dlogits_np = tm.nelbo_loss(logits, x0, mask, t)
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = D.nelbo_loss(logits_t.double(), torch.tensor(x0), torch.tensor(mask), torch.tensor(t))
    loss_t.backward()
    # both in float64: they differ only by the order of the sums (~1e-16 relative)
    assert loss_t.item() == pytest.approx(loss_np, rel=1e-12)
    np.testing.assert_allclose(logits_t.grad.numpy(), dlogits_np, rtol=1e-12, atol=1e-15)


def test_per_char_equals_the_minimal_tier():
    rng = np.random.default_rng(2)
    nelbo, n_chars = rng.random(50) * 20, rng.integers(2, 16, 50)
    ours = D.per_char(torch.tensor(nelbo), torch.tensor(n_chars))
    assert ours == pytest.approx(tm.per_char(nelbo, n_chars), rel=1e-12)


def test_corrupt_masks_at_the_rate_the_schedule_says():
    t = torch.full((1000,), 0.3, dtype=torch.float64)
    _, mask = D.corrupt(torch.zeros(1000, 100, dtype=torch.long), t, 9, torch.Generator().manual_seed(3), "cosine")
    rate, expected = mask.double().mean().item(), 1 - math.cos(math.pi * 0.3 / 2)
    assert abs(rate - expected) < 4.5 * math.sqrt(expected * (1 - expected) / mask.numel())  # 4.5 sigma: 1 in 150,000


def test_k_form_masks_exactly_k_and_covers_every_k_evenly():
    k = D.sample_k(1600, 16, torch.Generator().manual_seed(4))
    assert k.min() == 1 and k.max() == 16 and (torch.bincount(k)[1:] == 100).all()  # antithetic: exactly even
    _, mask = D.corrupt_k(torch.zeros(1600, 16, dtype=torch.long), k, 5, torch.Generator().manual_seed(4))
    assert (mask.sum(1) == k).all()


def exact_discrete_nelbo(x0, denoise, mask_id):
    """SPEC 4's discrete form with every k-subset enumerated: the value the estimators aim at."""
    L, total = len(x0), 0.0
    for k in range(1, L + 1):
        subsets = list(itertools.combinations(range(L), k))
        for subset in subsets:
            xt = np.array(x0)
            xt[list(subset)] = mask_id
            logp = tm.log_softmax(denoise(xt[None])[0])
            total -= sum(logp[l, x0[l]] for l in subset) / k / len(subsets)
    return total


def fixed_denoiser(L=6, V=5, seed=0):
    """A fixed random function of xt (a linear map of its one-hot): stands for any denoiser."""
    W = np.random.default_rng(seed).standard_normal((L * V, L * (V - 1)))
    return lambda xt: (np.eye(V)[np.asarray(xt)].reshape(len(xt), -1) @ W).reshape(len(xt), L, V - 1)


@pytest.mark.parametrize("one_pass", [False, True])
def test_torch_and_numpy_nelbo_estimators_both_hit_the_enumerated_value(one_pass):
    denoise, mask_id = fixed_denoiser(), 4
    x0 = np.random.default_rng(5).integers(0, 4, (40, 6))
    exact = np.array([exact_discrete_nelbo(row, denoise, mask_id) for row in x0])
    draws = 400 if one_pass else 100
    ours = D.estimate_nelbo(torch.tensor(x0), lambda xt: torch.tensor(denoise(xt.numpy())), mask_id,
                            torch.Generator().manual_seed(6), draws=draws, one_pass=one_pass)
    theirs = tm.estimate_nelbo(x0, denoise, mask_id, np.random.default_rng(6), draws=100)
    for estimate, n in ((ours.numpy(), draws), (theirs, 100)):
        # Each row is a mean of n independent draws; the spread of the rows' errors, scaled by
        # sqrt(n) to one draw, is unknown, so bound the total error by 4.5 standard errors of the
        # mean error over the 40 rows (a 1-in-100,000 event if the estimator were unbiased).
        err = estimate - exact
        assert abs(err.mean()) < 4.5 * err.std(ddof=1) / np.sqrt(len(err)) + 1e-12


def test_nelbo_of_the_toy_oracle_is_minus_log_q():
    denoise = lambda xt: torch.tensor(toy.oracle_log_probs(xt.numpy()))  # noqa: E731
    x0 = torch.tensor(toy.STRINGS).repeat(500, 1)  # each toy string 500 times
    nelbo = D.estimate_nelbo(x0, denoise, toy.MASK_ID, torch.Generator().manual_seed(7)).view(500, 4)
    # An exact denoiser makes the bound tight: every draw's mean is -log q up to Monte Carlo noise.
    mean, se = nelbo.mean(0).numpy(), nelbo.std(0).numpy() / np.sqrt(500)
    assert (np.abs(mean + np.log(toy.Q)) < 4.5 * se + 1e-12).all()


# ---------------------------------------------------------------- the AR twin's loss
def test_ar_twin_scores_each_name_with_len_plus_one_predictions():
    stoi, itos = D.build_vocab(["emma", "ava", "olivia"])
    x0 = D.encode(["emma", "ava", "olivia"], stoi, 8)
    uniform = lambda ids: torch.zeros(*ids.shape, len(itos) - 1)  # noqa: E731 -- every prediction costs log(n_out)
    nll = D.ar_nll(x0, uniform, bos_id=len(itos) - 1, pad_id=0)
    torch.testing.assert_close(nll, torch.tensor([5, 4, 7], dtype=torch.float64) * math.log(len(itos) - 1))


def test_ar_inputs_start_with_mask_and_see_only_earlier_characters():
    x0 = torch.tensor([[3, 1, 2, 0, 0]])
    assert D.ar_inputs(x0, 9).tolist() == [[9, 3, 1, 2, 0]]
    assert D.ar_targets(x0, 0).tolist() == [[3, 1, 2, 0, -1]]


def test_ar_training_loss_is_the_held_out_loss_per_char():
    model = tiny_model(causal=True)
    x0 = torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0, 0, 0], [4, 5, 6, 6, 5, 4, 0, 0, 0, 0]])
    loss = T.ar_loss(model, x0, bos_id=7, pad_id=0)
    nll = D.ar_nll(x0, model, bos_id=7, pad_id=0)
    assert loss.item() == pytest.approx(nll.sum().item() / (4 + 7), rel=1e-5)  # float32 vs float64 sums


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_gives_the_same_logits(tmp_path):
    model = tiny_model()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model.state_dict(), optimizer={}, model_args=asdict(model.config),
                    config={"kind": "names"}, itos=list("abcdefg_"), step=3, best_val_loss=1.5)
    loaded, ckpt = load_checkpoint(path)
    x = torch.randint(0, 8, (2, 10))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert ckpt["step"] == 3 and ckpt["itos"] == list("abcdefg_") and list(tmp_path.iterdir()) == [path]


def test_missing_corrupt_and_foreign_checkpoints_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "other.pt")
    model = tiny_model()
    args = dict(asdict(model.config), n_embd=32)  # a config the weights do not fit
    save_checkpoint(tmp_path / "mixed.pt", model=model.state_dict(), optimizer={}, model_args=args,
                    config={}, itos=[], step=0, best_val_loss=0.0)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "mixed.pt")


# ---------------------------------------------------------------- the optimizer (muon.py)
def test_orthogonalize_keeps_the_singular_vectors_and_brings_every_singular_value_near_one():
    G = torch.randn(32, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    G[:, 0] *= 50  # one direction dominates the raw matrix
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    for matrix, (left, right) in ((G, (U, Vh)), (G.T, (Vh.T, U.T))):  # wide and tall
        O = orthogonalize(matrix)
        inner = left.T @ O @ right.T  # O in G's singular basis: diagonal if the vectors are kept
        assert torch.allclose(inner, torch.diag(torch.diagonal(inner)), atol=1e-9)
        s = torch.diagonal(inner)
        assert s.min() > 0.6 and s.max() < 1.25, s  # S' of the quintic iteration, about [0.7, 1.2]
    assert S.max() / S.min() > 50  # while those of G itself spread over a factor of 60


def muon_and_reference_after_steps(reference, muon, n_steps=5):
    """Parameters after n_steps of MuonAdamW (muon=True or False) and of a torch optimizer, same gradients."""
    torch.manual_seed(0)
    start, grads = torch.randn(24, 40), [torch.randn(24, 40) for _ in range(n_steps)]
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    optimizers = (MuonAdamW([dict(params=[ours], muon=muon)], lr=0.02, weight_decay=0.1), reference([theirs]))
    for g in grads:
        for p, opt in zip((ours, theirs), optimizers):
            p.grad = g.clone()
            opt.step()
    return ours.detach(), theirs.detach(), start


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in torch 2.9")
def test_muon_rule_takes_the_steps_of_torch_optim_muon():
    ours, theirs, start = muon_and_reference_after_steps(
        lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"), muon=True)
    # torch runs the Newton-Schulz products in bfloat16 (8 significant bits: rounding errors of
    # about 0.4% in each of the 15 products), muon.py in float32: the five steps agree to 3% of
    # their size (0.7% measured). Without Nesterov, with Keller Jordan's rescaling, with one
    # Newton-Schulz step fewer or without weight decay, they differ by 17% or more.
    moved = (theirs - start).norm()
    assert (ours - theirs).norm() < 0.03 * moved


def test_adamw_rule_takes_the_steps_of_torch_optim_adamw():
    ours, theirs, _ = muon_and_reference_after_steps(
        lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.1, betas=(0.9, 0.99)), muon=False)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-6)  # the same float32 formula, in another order


def test_muon_refuses_parameters_that_are_not_matrices():
    with pytest.raises(ValueError, match="2-D weight matrices only"):
        MuonAdamW([dict(params=[torch.zeros(3, requires_grad=True)], muon=True)], lr=0.01)


# ---------------------------------------------------------------- training runs
def test_killed_and_resumed_run_ends_where_an_uninterrupted_run_ends(lines_file, tmp_path, monkeypatch, capsys):
    flags = ["--dataset", str(lines_file), "--max-iters", "12", "--eval-interval", "4", "--dropout", "0.1"] + TINY_FLAGS
    (full,), _ = run_main(flags + ["--out", str(tmp_path / "a")])

    real_get_batch, calls = T.get_batch, []
    from torch_version.engine import checkpoints as model_module
    real_save = model_module.save_checkpoint

    def slow_save(*args, **kwargs):  # a slow disk: step 8's checkpoint is still being written at step 10
        time.sleep(0.5)
        real_save(*args, **kwargs)
    monkeypatch.setattr(model_module, "save_checkpoint", slow_save)

    def killed_at_step_10(*args):  # dies inside step 10, after the checkpoint of step 8
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_get_batch(*args)
    monkeypatch.setattr(T, "get_batch", killed_at_step_10)
    with pytest.raises(SystemExit) as exit_:  # Ctrl-C: one line that says how to go on, no traceback
        T.main(flags + ["--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 130 and "--resume" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(T, "get_batch", real_get_batch)
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["step"] == 8  # the write was finished first
    (resumed,), _ = run_main(flags + ["--out", str(tmp_path / "b"), "--resume"])
    assert resumed["history"][0][0] == 12  # it went on from step 8, not from the start
    assert resumed["history"][-1][1:] == full["history"][-1][1:]  # same train and held-out loss, bit for bit
    assert resumed["nats"] == full["nats"]


def test_resume_refuses_another_config_and_another_vocabulary(lines_file, tmp_path):
    out = str(tmp_path / "out")
    run_main(["--dataset", str(lines_file), "--max-iters", "2", "--eval-interval", "2", "--out", out] + TINY_FLAGS)
    _, message = run_main(["--dataset", str(lines_file), "--max-iters", "4", "--out", out, "--resume"]
                          + TINY_FLAGS + ["--n-embd", "32"])
    assert message.startswith("error:") and "other flags" in message and "n_embd=16 (now 32)" in message
    other = tmp_path / "other.txt"  # the same number of letters, but other ones: same sizes, other vocabulary
    other.write_text(lines_file.read_text().replace("h", "z"), encoding="utf-8")
    _, message = run_main(["--dataset", str(other), "--max-iters", "4", "--out", out, "--resume"] + TINY_FLAGS)
    assert message.startswith("error:") and "another vocabulary" in message
    _, message = run_main(["--dataset", str(lines_file), "--max-iters", "4", "--out", out, "--resume"]
                          + TINY_FLAGS + ["--optimizer", "adamw"])
    assert message.startswith("error:") and "--optimizer muon" in message


def test_where_torch_compile_fails_training_goes_on_uncompiled_with_the_same_numbers(lines_file, tmp_path,
                                                                                      monkeypatch, capsys):
    flags = ["--dataset", str(lines_file), "--max-iters", "3", "--eval-interval", "3", "--dropout", "0.1"] + TINY_FLAGS
    (plain,), _ = run_main(flags + ["--out", str(tmp_path / "a"), "--no-compile"])
    assert "torch.compile" not in capsys.readouterr().err

    def no_compiler(model, **kwargs):  # inductor without a C++ compiler: fails on the first call, after tracing
        def fails(*args, **kwargs):
            model(*args, **kwargs)  # runs the model first, dropout included: it draws from torch's RNG
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(long details)")
        return fails
    monkeypatch.setattr(torch, "compile", no_compiler)
    (fallback,), _ = run_main(flags + ["--out", str(tmp_path / "b"), "--compile"])
    err = capsys.readouterr().err
    assert "torch.compile does not work here (RuntimeError: InvalidCxxCompiler" in err and "long details" not in err
    assert fallback["history"] == plain["history"]  # the failed attempt used its own batch and restored the RNG


def test_compiled_training_on_two_threads_repeats_to_the_last_digit(tmp_path):
    # the names default, compiled; unordered parallel sums in inductor's CPU kernels made two such
    # runs differ in the 9th digit of the held-out figure after 4 steps, until train.py turned on
    # torch's deterministic mode (on a 1-core machine this test cannot tell the difference)
    flags = ["--max-iters", "3", "--eval-interval", "3", "--eval-draws", "1", "--final-draws", "1", "--threads", "2",
             "--samples", "0", "--quiet", "--device", "cpu", "--compile"]
    threads = torch.get_num_threads()
    try:
        (a,), _ = run_main(flags + ["--out", str(tmp_path / "a")])
        (b,), _ = run_main(flags + ["--out", str(tmp_path / "b")])
    finally:
        torch.set_num_threads(threads)  # train.main set two for the whole process
    assert a["history"] == b["history"] and a["nats"] == b["nats"]


def test_same_seed_gives_the_same_losses_and_bf16_autocast_trains(lines_file, tmp_path):
    flags = ["--dataset", str(lines_file), "--max-iters", "4", "--eval-interval", "2"] + TINY_FLAGS
    (a,), _ = run_main(flags + ["--out", str(tmp_path / "a")])
    (b,), _ = run_main(flags + ["--out", str(tmp_path / "b")])
    assert a["history"] == b["history"]
    (c,), _ = run_main(flags + ["--out", str(tmp_path / "c"), "--dtype", "bfloat16", "--objective", "time"])
    assert all(math.isfinite(v) for row in c["history"] for v in row)


def test_both_trains_diffusion_and_the_ar_twin_on_the_same_characters(lines_file, tmp_path, capsys):
    results, _ = run_main(["--dataset", str(lines_file), "--max-iters", "2", "--eval-interval", "2", "--both",
                           "--out", str(tmp_path)] + TINY_FLAGS)
    assert [r["name"] for r in results] == ["diffusion", "AR twin"]
    assert (tmp_path / "ckpt.pt").is_file() and (tmp_path / "ckpt_ar.pt").is_file()
    assert "ratio diffusion / AR" in capsys.readouterr().out


def test_a_file_of_short_lines_is_a_names_like_dataset_and_prose_a_stream(lines_file, tmp_path):
    data = T.load_dataset(str(lines_file))
    assert data["kind"] == "names" and data["itos"][0] == "." and data["itos"][-1] == "_"
    assert len(data["held"]) == 20 and data["block_size"] == max(map(len, lines_file.read_text().split())) + 1
    prose = tmp_path / "prose.txt"
    prose.write_text("It was a dark and stormy night; the rain fell in torrents. " * 100, encoding="utf-8")
    data = T.load_dataset(str(prose))
    assert data["kind"] == "text" and data["held"].shape[1] == T.TEXT_BLOCK_SIZE and data["train"].dim() == 1


def test_vocabulary_picks_pad_and_mask_symbols_the_data_does_not_use():
    _, itos = D.build_vocab(["a.b", "c_d"])
    assert itos[0] not in "abcd._" and itos[-1] not in "abcd._" and itos[0] != itos[-1]


def test_shakespeare_config_has_about_10_7M_parameters():
    config = ModelConfig(vocab_size=66, n_out=65, block_size=256, **{k: T.SHAKESPEARE[k] for k in ("n_layer", "n_head", "n_embd")})
    with torch.device("meta"):  # count without allocating or initialising
        n = Transformer(config).num_params()
    assert 10.6e6 < n < 10.8e6


@pytest.mark.parametrize("flags, expected", [
    (["--max-iters", "0"], "at least 1"),
    (["--dataset", "/no/such/file.txt"], "cannot read"),
    (["--device", "cuda:7"], "cannot use --device"),
    (["--n-embd", "30", "--n-head", "4"], "multiple of --n-head"),
])
def test_bad_inputs_exit_with_one_sentence(flags, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        T.main(flags + ["--out", str(tmp_path)])
    message = str(exit_.value.code) + capsys.readouterr().err  # sys.exit("error: ...") or parser.error
    assert exit_.value.code != 0 and expected in message


def test_a_bad_input_as_a_script_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "torch_version" / "train.py"), "--dataset", str(tmp_path / "none.txt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: cannot read") and "Traceback" not in done.stderr


# ---------------------------------------------------------------- the benchmark scripts run end to end
def test_bench_names_prints_both_losses_and_their_ratio(lines_file, tmp_path, capsys):
    from torch_version.bench import names as bench_names
    bench_names.main(["--dataset", str(lines_file), "--max-iters", "2", "--eval-interval", "2",
                      "--out", str(tmp_path)] + TINY_FLAGS)
    out = capsys.readouterr().out
    assert "diffusion NELBO" in out and "AR twin NLL" in out and "ratio diffusion / AR" in out


def test_bench_shakespeare_prints_speed_mfu_and_the_ratio(tmp_path, capsys):
    from torch_version.bench import shakespeare as bench_shakespeare
    prose = tmp_path / "prose.txt"  # a stand-in for Shakespeare: 30 windows of text
    prose.write_text("It was a dark and stormy night; the rain fell in torrents. " * 150, encoding="utf-8")
    bench_shakespeare.main(["--dataset", str(prose), "--no-compile", "--timing-iters", "1", "--peak-tflops", "1",
                            "--max-iters", "2", "--eval-interval", "2", "--out", str(tmp_path)] + TINY_FLAGS)
    out = capsys.readouterr().out
    assert "tokens/s" in out and "%" in out and "ratio diffusion NELBO / AR NLL" in out


# ---------------------------------------------------------------- a run reports only its own figures
def test_a_diverged_run_stops_in_one_sentence_and_never_reports_the_checkpoint_left_by_another(lines_file, tmp_path,
                                                                                               capsys):
    flags = ["--dataset", str(lines_file), "--max-iters", "4", "--eval-interval", "2", "--out", str(tmp_path)] + TINY_FLAGS
    run_main(flags)  # an earlier, healthy run leaves its checkpoint in --out
    capsys.readouterr()
    _, message = run_main(flags + ["--lr", "1e30"])  # this one blows up at once
    out = capsys.readouterr().out
    assert message.startswith("error: the diffusion diverged by step 2") and "held-out" not in out


def test_the_final_figure_comes_only_from_a_checkpoint_this_run_wrote(lines_file, tmp_path):
    data = T.load_dataset(str(lines_file))
    args = T.parse_args(["--dataset", str(lines_file), "--out", str(tmp_path)] + TINY_FLAGS)
    stale = dict(path=tmp_path / "ckpt.pt", saved_step=None)  # wrote nothing, whatever lies in --out
    with pytest.raises(T.TrainingError, match="wrote no checkpoint"):
        T.final_evaluation(stale, data, args)


@pytest.mark.parametrize("changed", [["--lr", "0.03"], ["--batch-size", "32"], ["--objective", "time"],
                                     ["--weight-decay", "0.2"], ["--seed", "1"], ["--optimizer", "adamw"],
                                     ["--ema", "0.9"], ["--schedule", "cosine"], ["--dtype", "bfloat16"]])
def test_resume_refuses_changed_training_flags_in_one_sentence(lines_file, tmp_path, changed):
    flags = ["--dataset", str(lines_file), "--eval-interval", "2", "--out", str(tmp_path)] + TINY_FLAGS
    run_main(flags + ["--max-iters", "2"])
    _, message = run_main(flags + ["--max-iters", "4", "--resume"] + changed)
    assert message.startswith("error:") and f"{changed[0]} " in message and "may change" in message
    assert "\n" not in message


def test_resume_may_train_longer(lines_file, tmp_path):
    flags = ["--dataset", str(lines_file), "--eval-interval", "2", "--out", str(tmp_path)] + TINY_FLAGS
    run_main(flags + ["--max-iters", "2"])
    (resumed,), message = run_main(flags + ["--max-iters", "4", "--resume", "--eval-draws", "2"])
    assert message is None and resumed["history"][-1][0] == 4


def test_both_stopped_before_the_twins_first_checkpoint_is_finished_by_both_resume(lines_file, tmp_path,
                                                                                   monkeypatch):
    flags = ["--dataset", str(lines_file), "--max-iters", "4", "--eval-interval", "2", "--both"] + TINY_FLAGS
    full, _ = run_main(flags + ["--out", str(tmp_path / "a")])
    real_ar_loss = T.ar_loss

    def stopped(*args):  # Ctrl-C in the twin's first step, before it saved anything
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "ar_loss", stopped)
    with pytest.raises(SystemExit):
        T.main(flags + ["--out", str(tmp_path / "b")])
    monkeypatch.setattr(T, "ar_loss", real_ar_loss)
    assert (tmp_path / "b" / "ckpt.pt").is_file() and not (tmp_path / "b" / "ckpt_ar.pt").exists()
    resumed, message = run_main(flags + ["--out", str(tmp_path / "b"), "--resume"])
    assert message is None and [r["nats"] for r in resumed] == [r["nats"] for r in full]


def test_the_small_shakespeare_preset_is_cpu_sized_with_its_own_windows_and_folder():
    args = T.parse_args(["--dataset", "shakespeare", "--size", "small"])
    assert (args.n_layer, args.n_embd, args.block_size, args.device) == (4, 128, 64, "cpu")
    assert args.out.endswith("shakespeare_small") and T.parse_args(["--dataset", "shakespeare"]).block_size == 256
    data = T.load_dataset("shakespeare", block_size=args.block_size)
    assert data["held"].shape[1] == 64 and len(data["held"]) == 111_540 // 64  # the same split, windows of 64
    with pytest.raises(SystemExit):
        T.parse_args(["--size", "small"])  # names have no sizes
