"""The device policy (torch_version/engine/devices.py) and every entry point on a device that is not the host.

The bugs that only show on a GPU are of two classes: data, model and random draws on different
devices, and float64 on a device that has none (Apple's MPS). tests/pretend_device.py turns
both into test failures on a CPU-only machine: each entry point runs with --device meta, where a
mismatch raises as it would on CUDA and a float64 tensor on the device fails at once. The
policy's other rules (bf16 only with bf16 tensor cores, the random state of the chosen CUDA
device, refusing a cross-device resume) are checked with torch's CUDA queries stood in for.
Tests that need a real GPU are marked and skipped without one."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_names_like
from tests.pretend_device import DeviceMismatch, Float64OnDevice, pretend_accelerator
from torch_version.bench import names as bench_names, sampling as bench_sampling, shakespeare as bench_shakespeare
from torch_version.engine import devices
from torch_version import diffusion, sample
from torch_version.tools import evaluate
from torch_version import train as T
from torch_version import model as M
from torch_version.tools import visualize
from torch_version.model import ModelConfig, Transformer
from torch_version.engine.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8", "--eval-draws", "1",
        "--final-draws", "1", "--samples", "2", "--quiet", "--no-compile"]
pytestmark = pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # meta weights
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
mps = pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs Apple's MPS")


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """A names-like list file and a prose file, small enough to train on in a second."""
    folder = tmp_path_factory.mktemp("data")
    names = write_names_like(folder / "items.txt")
    prose = folder / "prose.txt"
    prose.write_text("It was a dark and stormy night; the rain fell in torrents. " * 100)
    return dict(names=names, prose=prose)


@pytest.fixture(scope="module")
def trained(items, tmp_path_factory):
    """Tiny diffusion and AR checkpoints, trained on the host, for the sampling entry points."""
    out = {}
    for kind in ("names", "prose"):
        folder = tmp_path_factory.mktemp(kind)
        T.main(["--dataset", str(items[kind]), "--both", "--max-iters", "2", "--eval-interval", "2",
                "--device", "cpu", "--out", str(folder)] + TINY)
        out[kind] = folder
    return out


# ---------------------------------------------------------------- the pretend device catches both classes
def test_the_pretend_device_refuses_float64_and_host_data_indexed_by_device_indices():
    with pretend_accelerator() as device:
        with pytest.raises(Float64OnDevice):
            torch.zeros(3, device=device).double()
        with pytest.raises(DeviceMismatch):
            torch.arange(5)[torch.tensor([1, 2], device=device)]
        with pytest.raises(RuntimeError):  # torch's own check: host and device tensors in one op
            torch.zeros(3) + torch.zeros(3, device=device)
        assert torch.zeros(3, device=device).sum().item() == 1  # device -> host: a stand-in value


# ---------------------------------------------------------------- every entry point on the pretend device
@pytest.mark.parametrize("extra", [["--both"], ["--objective", "time", "--schedule", "cosine"],
                                   ["--optimizer", "adamw", "--ema", "0.9", "--dropout", "0.1"],
                                   ["--noise", "uniform"], ["--noise", "gaussian"], ["--block", "2"]])
def test_training_keeps_data_model_and_draws_on_the_device_and_makes_no_float64_there(items, extra, tmp_path):
    for kind in ("names", "prose"):
        with pretend_accelerator() as device:
            results = T.main(["--dataset", str(items[kind]), "--max-iters", "2", "--eval-interval", "1",
                              "--device", device, "--out", str(tmp_path / kind)] + TINY + extra)
        assert all(r["model"].head.weight.device.type == device for r in results)


def test_a_run_resumes_on_the_device_it_was_trained_on(items, tmp_path):
    flags = ["--dataset", str(items["names"]), "--eval-interval", "1", "--out", str(tmp_path)] + TINY
    with pretend_accelerator() as device:
        T.main(flags + ["--max-iters", "1", "--device", device])
        (result,) = T.main(flags + ["--max-iters", "2", "--device", device, "--resume"])
    assert result["best_step"] >= 1


def test_bench_names_trains_both_models_on_the_device(items, tmp_path, capsys):
    with pretend_accelerator() as device:
        bench_names.main(["--dataset", str(items["names"]), "--max-iters", "2", "--eval-interval", "2",
                          "--device", device, "--out", str(tmp_path)] + TINY)
    assert "ratio diffusion / AR" in capsys.readouterr().out


def test_bench_names_trains_and_samples_every_noise_on_the_device(items, tmp_path, capsys):
    with pretend_accelerator() as device:
        bench_names.main(["--dataset", str(items["names"]), "--max-iters", "2", "--eval-interval", "2", "--noise", "all",
                          "--device", device, "--out", str(tmp_path)] + TINY)
    out = capsys.readouterr().out
    assert "Gaussian diffusion / AR" in out and "gaussian   64 steps" in out


def test_bench_shakespeare_times_and_trains_on_the_device(capsys, tmp_path):
    with pretend_accelerator() as device:
        bench_shakespeare.main(["--device", device, "--out", str(tmp_path), "--max-iters", "1", "--eval-interval", "1", "--timing-iters", "1",
                                "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "2",
                                "--eval-draws", "1", "--final-draws", "1"])
    out = capsys.readouterr().out
    assert "diffusion, eager" in out and "ratio diffusion NELBO / AR NLL" in out


@pytest.mark.parametrize("args", [[], ["--sampler", "confidence", "--steps", "3"], ["--sampler", "threshold"],
                                  ["--infill", "a__b"], ["--infill", "a_b", "--infill-lengths", "0-2"], ["--ar"]])
def test_sample_py_samples_on_the_device(trained, args, capsys):
    ckpt = trained["names"] / ("ckpt_ar.pt" if "--ar" in args else "ckpt.pt")
    with pretend_accelerator() as device:
        sample.main(["--ckpt", str(ckpt), "--samples", "3", "--device", device] + args)
    assert "network evaluations" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_block(items, tmp_path_factory):
    """Tiny block-diffusion checkpoints (blocks of 2), names and prose, trained on the host."""
    out = {}
    for kind in ("names", "prose"):
        folder = tmp_path_factory.mktemp(f"block_{kind}")
        T.main(["--dataset", str(items[kind]), "--block", "2", "--both", "--max-iters", "2", "--eval-interval", "2",
                "--device", "cpu", "--out", str(folder)] + TINY)
        out[kind] = folder / "ckpt_block2.pt"  # and its AR twin, ckpt_ar.pt beside it
    return out


@pytest.mark.parametrize("args", [[], ["--sampler", "confidence", "--steps", "2"], ["--sampler", "threshold"],
                                  ["--infill", "a__b"], ["--infill", "a_b", "--infill-lengths", "0-2"], ["--prompt", "ab"]])
def test_sample_py_samples_a_block_model_with_its_kv_cache_on_the_device(trained_block, args, capsys):
    with pretend_accelerator() as device:
        sample.main(["--ckpt", str(trained_block["names"]), "--samples", "3", "--device", device] + args)
        sample.main(["--ckpt", str(trained_block["prose"]), "--chars", "40", "--device", device])
    assert capsys.readouterr().out.count("network evaluations") == 2


def test_block_models_evaluate_and_film_on_the_device(trained_block, tmp_path):
    with pretend_accelerator() as device:
        evaluate.main([str(trained_block["names"]), "--samples", "4", "--grid", "ancestral:2", "confidence:2",
                       "threshold:0.5", "--out", str(tmp_path), "--device", device])
        visualize.main(["--ckpt", str(trained_block["names"]), "--steps", "2", "--samples", "2",
                        "--out", str(tmp_path / "b.gif"), "--device", device])
    assert (tmp_path / "b.gif").stat().st_size > 0 and (tmp_path / "report.json").is_file()


def test_sample_py_writes_text_and_the_ar_twin_continues_it_on_the_device(trained, capsys):
    with pretend_accelerator() as device:
        sample.main(["--ckpt", str(trained["prose"] / "ckpt.pt"), "--chars", "40", "--steps", "4", "--device", device])
        sample.main(["--ckpt", str(trained["prose"] / "ckpt_ar.pt"), "--ar", "--chars", "40", "--device", device])
    assert capsys.readouterr().out.count("---------------- sample 1") == 2


def test_evaluate_py_scores_and_samples_on_the_device(trained, tmp_path):
    with pretend_accelerator() as device:
        evaluate.main([str(trained["names"] / "ckpt.pt"), "--samples", "4", "--grid", "ancestral:2", "confidence:2",
                       "threshold:0.5", "--out", str(tmp_path), "--device", device])
    assert (tmp_path / "report.json").is_file()


def test_visualize_py_films_both_models_on_the_device(trained, tmp_path):
    with pretend_accelerator() as device:
        visualize.main(["--ckpt", str(trained["names"] / "ckpt.pt"), "--compare", "--steps", "3", "--samples", "2",
                        "--out", str(tmp_path / "a.gif"), "--device", device])
    assert (tmp_path / "a.gif").stat().st_size > 0


def test_bench_sampling_samples_and_judges_on_the_device(items, trained, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_sampling, "load_text", lambda data_dir=None: items["prose"].read_text())
    with pretend_accelerator() as device:
        bench_sampling.main(["--ckpt", str(trained["prose"] / "ckpt.pt"), "--ckpt-ar", str(trained["prose"] / "ckpt_ar.pt"),
                             "--chars", "30", "--samples", "1", "--steps", "4", "--taus", "0.9", "--device", device,
                             "--out", str(tmp_path)])
    assert (tmp_path / "bench_sampling.json").is_file()


def test_the_estimators_and_samplers_run_on_the_device():
    """The functions the entry points share, each on its own: a regression names the function."""
    config = ModelConfig(vocab_size=8, n_out=7, block_size=10, n_layer=1, n_head=2, n_embd=16)
    g = torch.Generator().manual_seed(0)
    with pretend_accelerator() as device:
        denoiser = Transformer(config).to(device)
        twin = Transformer(ModelConfig(**dict(config.__dict__, causal=True))).to(device)
        x0 = torch.randint(0, 7, (6, 10)).to(device)
        diffusion.estimate_nelbo(x0, denoiser, 7, g, draws=1)
        diffusion.estimate_nelbo(x0, denoiser, 7, g, draws=2, one_pass=True)
        diffusion.ar_nll(x0, twin, 7, pad_id=0)
        t = diffusion.sample_times(6, g)
        xt, mask = diffusion.corrupt(x0, t, 7, g, "cosine")
        diffusion.nelbo_loss(denoiser(xt), x0, mask, t, "cosine").backward()
        denoise = sample.make_denoiser(denoiser, device)
        for name, kw in (("ancestral", dict(steps=3)), ("confidence", dict(steps=3)), ("threshold", {})):
            sample.SAMPLERS[name](denoise, 2, 10, 7, g, **kw)
        sample.generate_ar(twin, torch.zeros((2, 1), dtype=torch.long), 5, g, 7, device=device)
        bench_sampling.judge_nll(twin, torch.randint(0, 7, (25,)), 7, device)


# ---------------------------------------------------------------- the policy
def test_names_default_to_the_cpu_and_everything_else_to_the_best_device_found(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.default_device("names") == "cpu" and devices.default_device("shakespeare") == "cuda"
    assert T.parse_args([]).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.default_device("shakespeare") == "mps"


@pytest.mark.parametrize("capability, auto, explicit_bf16", [((7, 5), "float32", ValueError),   # T4
                                                              ((7, 0), "float32", ValueError),   # V100
                                                              ((8, 0), "bfloat16", "bfloat16"),  # A100
                                                              ((9, 0), "bfloat16", "bfloat16")])  # H100, H200
def test_bf16_only_where_the_gpu_has_bf16_tensor_cores(monkeypatch, capability, auto, explicit_bf16):
    asked = []

    def get_device_capability(device=None):
        asked.append(device)
        return capability
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true on a T4 too: not the test
    assert devices.precision("cuda:1", "auto") == auto
    assert asked == ["cuda:1"]  # the chosen GPU, not cuda:0
    if explicit_bf16 is ValueError:
        with pytest.raises(ValueError, match="no bf16 tensor cores"):
            devices.precision("cuda:1", "bfloat16")
    else:
        assert devices.precision("cuda:1", "bfloat16") == explicit_bf16
    assert devices.precision("cuda:1", "float32") == "float32"


def test_the_cpu_and_mps_train_in_float32_unless_the_cpu_is_asked_for_bf16():
    assert devices.precision("cpu") == "float32" and devices.precision("cpu", "bfloat16") == "bfloat16"
    with pytest.raises(ValueError):
        devices.precision("mps", "bfloat16")
    assert devices.precision("mps") == "float32"


def test_the_random_state_saved_and_restored_is_that_of_the_chosen_cuda_device(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": seen.append(("get", device)) or
                        torch.zeros(4, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": seen.append(("set", device)))
    state = devices.rng_state("cuda:1")
    devices.set_rng_state(state, "cuda:1")
    assert seen == [("get", "cuda:1"), ("set", "cuda:1")]


def test_cublas_is_told_to_be_deterministic_before_cuda_starts():
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"  # set when devices.py is imported


def test_a_checkpoint_from_another_kind_of_device_is_refused_in_one_sentence(items, tmp_path):
    flags = ["--dataset", str(items["names"]), "--eval-interval", "1", "--out", str(tmp_path)] + TINY
    T.main(flags + ["--max-iters", "1", "--device", "cpu"])
    with pretend_accelerator() as device, pytest.raises(SystemExit) as exit_:
        T.main(flags + ["--max-iters", "2", "--device", device, "--resume"])
    message = str(exit_.value.code)
    assert "was trained on cpu; resume it with --device cpu" in message and message.count(". ") == 0


def test_sampling_moves_only_the_weights_to_the_device(trained):
    with pretend_accelerator() as device:
        model, ckpt = load_checkpoint(trained["names"] / "ckpt.pt", device)
    assert model.head.weight.device.type == device
    moments = [v for state in ckpt["optimizer"]["state"].values() for v in state.values()
               if isinstance(v, torch.Tensor)]
    assert moments and all(v.device.type == "cpu" for v in moments)


def test_evaluate_scores_in_the_precision_the_model_was_trained_in(items, tmp_path, capsys):
    """A bf16-trained checkpoint evaluated in bf16 gives training's own final figure."""
    T.main(["--dataset", str(items["names"]), "--both", "--max-iters", "2", "--eval-interval", "2", "--dtype",
            "bfloat16", "--device", "cpu", "--out", str(tmp_path), "--final-draws", "1"] + TINY[:-1])
    trained_figure = float(re.search(r"held-out NELBO \([^)]*\): ([0-9.]+)", capsys.readouterr().out).group(1))
    evaluate.main([str(tmp_path / "ckpt.pt"), "--samples", "2", "--draws", "1", "--grid", "ancestral:2",
                   "--out", str(tmp_path / "report"), "--device", "cpu"])
    evaluated = float(re.search(r"held-out NELBO: ([0-9.]+)", capsys.readouterr().out).group(1))
    assert evaluated == trained_figure


def test_the_ar_twin_caches_keys_and_values_in_the_activations_dtype():
    model = Transformer(ModelConfig(vocab_size=8, n_out=7, block_size=10, n_layer=1, n_head=2, n_embd=16, causal=True))
    made = []
    new_kv_cache = model.new_kv_cache
    model.new_kv_cache = lambda *a: made.append(new_kv_cache(*a)) or made[-1]
    for dtype, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        sample.generate_ar(model, torch.zeros((2, 1), dtype=torch.long), 4, torch.Generator().manual_seed(0), 7,
                           dtype=dtype)
        assert made[-1].k.dtype == expected


def test_rotary_runs_in_the_activations_dtype_and_turns_q_and_k_in_one_op():
    model = Transformer(ModelConfig(vocab_size=8, n_out=7, block_size=10, n_layer=1, n_head=2, n_embd=16))
    calls = []
    apply = M.apply_rotary

    def spy(x, cos, sin):
        out = apply(x, cos, sin)
        calls.append((x.shape, out.dtype))
        return out
    M.apply_rotary = spy
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randint(0, 8, (3, 10)))
    finally:
        M.apply_rotary = apply
    assert calls == [((3, 2, 2, 10, 8), torch.bfloat16)]  # (B, H, q and k, T, hs), once per layer, in bf16


def test_the_rotation_is_the_rotary_formula():
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    cos, sin = (t.double() for t in M.rotary_tables(5, 8))
    angle = torch.atan2(sin, cos)  # (T, hs/2)
    x1, x2 = x[..., :4], x[..., 4:]
    want = torch.cat([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()], -1)
    torch.testing.assert_close(M.apply_rotary(x, cos, sin), want)


def test_a_step_that_fails_uncompiled_too_is_not_blamed_on_the_compiler(items, monkeypatch, capsys, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("MPS does not support float64")  # the step's own fault, as on a Mac
    monkeypatch.setattr(T, "batch_loss", broken)
    with pytest.raises(RuntimeError, match="MPS does not support float64"):
        T.main(["--dataset", str(items["names"]), "--max-iters", "1", "--device", "cpu", "--out", str(tmp_path),
                "--compile"] + TINY[:-1])
    assert "torch.compile does not work here" not in capsys.readouterr().err


def test_the_lesson_takes_its_device_from_one_place():
    source = (ROOT / "lessons" / "03_torch.py").read_text()
    assert source.count("devices.default_device(") == 1  # DEVICE = ..., in the first cell
    for call in ("train.load_dataset(\"names\"", "sample.make_denoiser(", "train.parse_args(["):
        for line in [line for line in source.splitlines() if call in line]:
            assert "DEVICE" in line, line
    assert not re.search(r"""(device=|make_denoiser\([^)]*,\s*)["'](cpu|cuda|mps)""", source)


# ---------------------------------------------------------------- only on a real GPU
@cuda
def test_cuda_training_repeats_to_the_last_digit_and_resumes_exactly(items, tmp_path):
    flags = ["--dataset", str(items["names"]), "--max-iters", "4", "--eval-interval", "2", "--device", "cuda"] + TINY
    (a,) = T.main(flags + ["--out", str(tmp_path / "a")])
    (b,) = T.main(flags + ["--out", str(tmp_path / "b")])
    assert a["history"] == b["history"] and a["nats"] == b["nats"]
    T.main(flags[:3] + ["2"] + flags[4:] + ["--out", str(tmp_path / "c")])
    (c,) = T.main(flags + ["--out", str(tmp_path / "c"), "--resume"])
    assert c["nats"] == a["nats"]


@cuda
def test_cuda_compiled_training_trains(items, tmp_path):
    (result,) = T.main(["--dataset", str(items["prose"]), "--max-iters", "3", "--eval-interval", "3", "--device", "cuda",
                        "--compile", "--out", str(tmp_path)] + TINY[:-1])
    assert np.isfinite(result["nats"])


@mps
def test_mps_trains_and_samples(items, tmp_path):
    (result,) = T.main(["--dataset", str(items["names"]), "--max-iters", "2", "--eval-interval", "2", "--device", "mps",
                        "--out", str(tmp_path)] + TINY)
    assert np.isfinite(result["nats"])


# ---------------------------------------------------------------- the fast path's engineering
def test_a_checkpoint_written_in_the_background_holds_the_weights_of_the_step_it_was_taken(tmp_path, monkeypatch):
    import threading
    from torch_version.engine import checkpoints as model_module
    release = threading.Event()
    save = model_module.save_checkpoint

    def slow_save(path, **fields):  # the disk is slow: training goes on while the file is written
        release.wait(10)
        save(path, **fields)
    monkeypatch.setattr(model_module, "save_checkpoint", slow_save)
    weights = torch.ones(3)
    writer = model_module.CheckpointWriter()
    writer.save(tmp_path / "ckpt.pt", model={"w": weights}, step=1)
    weights += 1  # the next training step changes the weights in place
    release.set()
    writer.wait()
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert torch.equal(saved["model"]["w"], torch.ones(3)) and saved["step"] == 1


def test_a_checkpoint_that_cannot_be_written_is_one_sentence_when_the_run_next_waits(tmp_path):
    from torch_version.engine.checkpoints import CheckpointError, CheckpointWriter
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.save(blocker / "ckpt.pt", step=1)
    with pytest.raises(CheckpointError, match="cannot write the checkpoint"):
        writer.wait()


@pytest.mark.parametrize("name, precision, tflops", [
    ("NVIDIA H200", "bfloat16", 989.4), ("NVIDIA H200 NVL", "bfloat16", 835.5),
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4), ("NVIDIA H100 PCIe", "bfloat16", 756.0),
    ("NVIDIA A100-SXM4-80GB", "float32", 156.0), ("NVIDIA A10G", "bfloat16", 70.0),
    ("Tesla T4", "float32", 8.1), ("Tesla T4", "bfloat16", None), ("Some New GPU", "bfloat16", None)])
def test_mfu_uses_the_peak_of_the_gpu_model_and_precision_found(name, precision, tflops):
    peak = bench_shakespeare.peak_flops(name, precision)
    assert peak == (tflops * 1e12 if tflops else None)
    assert bench_shakespeare.peak_flops(name, precision, override_tflops=100) == 100e12
