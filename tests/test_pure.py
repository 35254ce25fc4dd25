"""The pure tier: hand-written gradients, optimiser schedule, confidence sampler, sample
metrics, checkpoints and resume, and a smoke run of the script."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_pure", ROOT / "pure" / "train_pure.py")
pure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pure)

V = 6  # a small vocabulary: PAD, four letters, MASK


@pytest.fixture
def small(monkeypatch):
    """A pure tier shrunk to a few hundred parameters and small batches, for fast tests."""
    for name, value in {"N_EMBD": 8, "N_HIDDEN": 12, "N_LAYER": 2, "BATCH_SIZE": 16, "EVAL_EVERY": 5,
                        "WARMUP": 3, "METRIC_SAMPLES": 30, "EVAL_DRAWS": 1}.items():
        monkeypatch.setattr(pure, name, value)
    return pure


def gradcheck_setup():
    """float64 parameters moved away from their initial values (LayerNorm gains of exactly 1
    and zero biases would hide mistakes that multiply by them), and one noisy batch."""
    rng = np.random.default_rng(0)
    params = pure.init_params(V, rng, dtype=np.float64)
    for p in params.values():
        p += rng.standard_normal(p.shape) * 0.3
    x0 = rng.integers(0, V - 1, (4, pure.BLOCK_SIZE))
    t = np.array([0.2, 0.5, 0.7, 0.95])
    xt, mask = pure.corrupt(x0, t, V - 1, rng)

    def loss_of(p):
        return pure.nelbo_loss(pure.forward(p, xt)[0], x0, mask, t)[0]

    logits, cache = pure.forward(params, xt)
    grads = pure.backward(params, pure.nelbo_loss(logits, x0, mask, t)[1], cache)
    return params, grads, loss_of


@pytest.mark.parametrize("name", ["W_in", "b_in", "ln0.g", "ln0.b", "W1.0", "b1.0", "W2.0", "b2.0",
                                  "ln1.g", "ln1.b", "W1.1", "b1.1", "W2.1", "b2.1",
                                  "lnf.g", "lnf.b", "W_out", "b_out"])
def test_gradient_matches_centered_finite_differences(small, name):
    params, grads, loss_of = gradcheck_setup()
    assert set(grads) == set(params)  # every parameter gets a gradient
    p, numeric, h = params[name], np.zeros_like(params[name]), 1e-5
    for i in np.ndindex(p.shape):  # every entry: a few hundred per parameter at this size
        old = p[i]
        p[i] = old + h
        up = loss_of(params)
        p[i] = old - h
        down = loss_of(params)
        p[i] = old
        numeric[i] = (up - down) / (2 * h)
    # float64 centered differences err by about h^2 * f''' + 1e-16 * loss / h, ~1e-10 here;
    # a wrong gradient is off by its own size. 1e-6 relative (to the largest entry) separates them.
    scale = max(np.abs(numeric).max(), 1e-8)
    assert np.abs(grads[name] - numeric).max() / scale < 1e-6
    assert np.abs(numeric).max() > 1e-6  # the check is not vacuous: this parameter does matter


def test_denoiser_outputs_every_real_token_but_never_mask(small):
    params = small.init_params(V, np.random.default_rng(0))
    logits, _ = small.forward(params, np.full((3, small.BLOCK_SIZE), V - 1))
    assert logits.shape == (3, small.BLOCK_SIZE, V - 1)  # classes PAD and the letters: no MASK column


def test_training_stays_in_float32(small):
    """float64 creeping in (a NumPy float64 scalar times a float32 array gives float64) would
    silently double the time of every step."""
    params, state = small_run(small, 3)
    assert {p.dtype for p in params.values()} == {np.dtype(np.float32)}
    assert {v.dtype for k, v in state.items() if k[:2] in ("m_", "v_")} == {np.dtype(np.float32)}


def test_layer_norm_gives_zero_mean_unit_variance_rows():
    x = np.random.default_rng(1).standard_normal((5, 32)) * 7 + 3
    y, _ = pure.layer_norm(x, np.ones(32), np.zeros(32))
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(1), 1, rtol=1e-5)  # 1e-5: the eps inside the square root


def test_learning_rate_warms_up_then_decays_to_min_lr():
    steps = 1000
    lr = np.array([pure.learning_rate(s, steps) for s in range(1, steps + 1)])
    assert lr[0] == pytest.approx(pure.LEARNING_RATE / pure.WARMUP)
    assert lr[pure.WARMUP - 1] == pytest.approx(pure.LEARNING_RATE)
    assert np.all(np.diff(lr[:pure.WARMUP]) > 0) and np.all(np.diff(lr[pure.WARMUP - 1:]) <= 0)
    assert lr[-1] == pytest.approx(pure.MIN_LR)


def test_clipping_rescales_a_large_gradient_to_the_maximum_norm():
    grads = {"a": np.full(4, 3.0), "b": np.full(9, 4.0)}  # global norm sqrt(36 + 144) = 13.4
    norm = pure.clip_grads(grads, max_norm=1.0)
    assert norm == pytest.approx(np.sqrt(180))
    assert np.sqrt(sum((g ** 2).sum() for g in grads.values())) == pytest.approx(1.0)
    np.testing.assert_allclose(grads["b"] / grads["a"][0], 4 / 3)  # direction kept


def test_clipping_leaves_a_small_gradient_unchanged():
    grads = {"a": np.array([0.3, -0.4])}
    pure.clip_grads(grads, max_norm=1.0)
    np.testing.assert_array_equal(grads["a"], [0.3, -0.4])


def peaked_denoiser(xt):
    """Token 1 everywhere, more certain at later positions: p(1) grows from 0.4 to 1 - 1e-7."""
    logits = np.zeros(xt.shape + (V - 1,))
    logits[..., 1] = 3 + np.arange(xt.shape[1])
    return logits


def test_confidence_sampler_keeps_the_scheduled_number_of_masks():
    L, steps = pure.BLOCK_SIZE, 10
    _, trajectory = pure.sample_confidence(peaked_denoiser, 3, V - 1, np.random.default_rng(2), steps)
    left = [int((x[0] == V - 1).sum()) for x in trajectory]
    expected = [L]
    for s in np.linspace(1, 0, steps + 1)[1:]:  # round(L * (1 - alpha(s))), at least one fewer per step
        expected.append(max(0, min(expected[-1] - 1, round(L * (1 - pure.alpha(s))))))
    assert left == expected and left[-1] == 0


def test_confidence_sampler_unmasks_the_most_confident_position_first():
    _, trajectory = pure.sample_confidence(peaked_denoiser, 5, V - 1, np.random.default_rng(3), steps=16)
    for step, position in enumerate([15, 14, 13], start=1):  # one unmask per step, most certain first
        newly = (trajectory[step - 1] == V - 1) & (trajectory[step] != V - 1)
        assert newly.sum(1).tolist() == [1] * 5 and newly[:, position].all()


def test_confidence_sampler_never_changes_a_prompt():
    xt = np.full((4, pure.BLOCK_SIZE), V - 1)
    xt[:, [0, 5]] = [2, 3]
    x, _ = pure.sample_confidence(peaked_denoiser, 4, V - 1, np.random.default_rng(4), 8, xt=xt)
    assert (x[:, 0] == 2).all() and (x[:, 5] == 3).all() and (x != V - 1).all()


def test_sample_metrics_on_hand_made_samples():
    samples = ["emma....", "zoe.....", "qux.....", "em.a....", "emm_....", "........"]
    m = pure.sample_metrics(samples, train_words=["emma", "zoe", "ava"],
                            real_words=["ab", "abc", "abc", "abcd"])
    assert m["valid"] == pytest.approx(3 / 6)  # PAD inside, MASK left, empty name: invalid
    assert m["copied"] == pytest.approx(2 / 6) and m["new"] == pytest.approx(1 / 6)
    # valid lengths 4, 3, 3 -> {3: 2/3, 4: 1/3}; real {2: 1/4, 3: 1/2, 4: 1/4}
    assert m["tv_length"] == pytest.approx(0.5 * (1 / 4 + 1 / 6 + 1 / 12))


def test_sample_metrics_length_distance_is_zero_for_the_same_lengths():
    m = pure.sample_metrics(["abc.", "de..", "fgh."], ["x"], ["xyz", "xy", "xyz"])
    assert m["tv_length"] == 0 and m["valid"] == 1 and m["new"] == 1


def small_run(pure, steps, stop=None, ckpt=None, params=None, state=None, rng_state=None):
    """A few steps of the shrunk model on 200 names, with the held-out NELBO every 5 steps."""
    rng = np.random.default_rng(5)
    data = np.random.default_rng(6).integers(0, V - 1, (200, pure.BLOCK_SIZE))
    held = (data[:20], np.full(20, pure.BLOCK_SIZE))
    if params is None:
        params, state = pure.init_params(V, rng), {}
    else:
        rng.bit_generator.state = rng_state
    pure.train(params, state, data, steps, rng, V - 1, held, ckpt, stop=stop, quiet=True)
    return params, state


def test_checkpoint_round_trip_keeps_parameters_optimiser_and_random_state(small, tmp_path):
    params, state = small_run(small, 5)
    rng = np.random.default_rng(7)
    rng.random(3)
    path, config = tmp_path / "ckpt.npz", {"n_embd": 8}
    small.save_checkpoint(path, params, state, rng, config)
    params2, state2, rng_state = small.load_checkpoint(path, config)
    assert set(params2) == set(params) and all(np.array_equal(params[k], params2[k]) for k in params)
    assert {k for k in state2 if k[:2] in ("m_", "v_")} == {k for k in state if k[:2] in ("m_", "v_")}
    assert all(np.array_equal(state[k], state2[k]) for k in state if k[:2] in ("m_", "v_"))
    assert state2["step"] == state["step"] and state2["best"] == state["best"]
    assert state2["history"] == state["history"]
    assert rng_state == rng.bit_generator.state
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed, none left behind


def test_checkpoint_of_another_config_is_refused(small, tmp_path):
    params, state = small_run(small, 5)
    path = tmp_path / "ckpt.npz"
    small.save_checkpoint(path, params, state, np.random.default_rng(0), {"n_embd": 8, "n_layer": 2})
    with pytest.raises(small.CheckpointError, match="n_embd 8 vs 16"):
        small.load_checkpoint(path, {"n_embd": 16, "n_layer": 2})


def test_a_file_that_is_not_a_checkpoint_is_refused(small, tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_text("not a checkpoint")
    with pytest.raises(small.CheckpointError, match="is not a readable checkpoint"):
        small.load_checkpoint(path, {})


def test_resume_reaches_the_same_parameters_as_an_uninterrupted_run(small, tmp_path):
    path, config = tmp_path / "ckpt.npz", {"test": 1}
    straight, straight_state = small_run(small, 20)
    small_run(small, 20, stop=10, ckpt=(path, config))  # "interrupted" after step 10
    params, state, rng_state = small.load_checkpoint(path, config)
    assert state["step"] == 10  # the held-out NELBO still improves at step 10, so it was saved there
    resumed, resumed_state = small_run(small, 20, params=params, state=state, rng_state=rng_state)
    assert resumed_state["history"] == straight_state["history"]
    for k in straight:  # same operations on the same numbers in the same order: bit-identical
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_smoke_run_prints_the_nelbo_and_writes_every_plot(small, tmp_path, capsys):
    small.main(["--steps", "6", "--samples", "5", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "held-out NELBO: " in printed and "sample_ancestral" in printed and "samples:" in printed
    for name in ["nelbo", "schedule", "forward", "reverse", "temperatures", "lengths"]:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "ckpt.npz").is_file()


def test_resume_without_a_checkpoint_is_one_clear_error(small, tmp_path):
    with pytest.raises(SystemExit, match="--resume needs a checkpoint"):
        small.main(["--steps", "6", "--out", str(tmp_path), "--resume", "--no-plots"])


def test_resume_with_other_steps_is_refused(small, tmp_path):
    small.main(["--steps", "5", "--samples", "1", "--out", str(tmp_path), "--no-plots", "--quiet"])
    with pytest.raises(SystemExit, match="steps 5 vs 9"):
        small.main(["--steps", "9", "--out", str(tmp_path), "--resume", "--no-plots"])
