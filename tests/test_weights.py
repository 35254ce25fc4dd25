"""The committed weights (weights/): every entry point samples from them straight after a clone.

A change to model.py or to the checkpoint format that these files no longer fit fails here, in CI,
instead of on a learner's first command; weights/README.md says how to make them again."""
from pathlib import Path

import pytest
import torch

from torch_version import sample
from torch_version.tools import visualize
from torch_version.engine.checkpoints import load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
FOLDERS = sorted(p for p in WEIGHTS.iterdir() if p.is_dir()) if WEIGHTS.is_dir() else []


def diffusion_file(folder):
    """A folder's diffusion model: ckpt.pt, or its block-diffusion checkpoint where it has no masked one."""
    return folder / "ckpt.pt" if (folder / "ckpt.pt").is_file() else sorted(folder.glob("ckpt_block*.pt"))[0]


def test_the_names_and_shakespeare_weights_are_committed():
    assert {p.name for p in FOLDERS} >= {"names", "shakespeare_small", "shakespeare_laptop"}


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_committed_weights_load_as_weights_only_and_are_small(folder):
    for path, causal in ((diffusion_file(folder), False), (folder / "ckpt_ar.pt", True)):
        assert path.stat().st_size < 5e6  # a few MB at most
        model, ckpt = load_checkpoint(path)  # weights_only=True inside
        assert model.config.causal == causal and ckpt["optimizer"] == {} and "rng" not in ckpt


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_sample_py_samples_from_the_committed_weights(folder, capsys):
    names = folder.name == "names"
    size = ["--samples", "4"] if names else ["--chars", "80", "--steps", "8"]
    sample.main(["--ckpt", str(diffusion_file(folder)), "--device", "cpu"] + size)
    sample.main(["--ckpt", str(folder / "ckpt_ar.pt"), "--ar", "--device", "cpu"] + size)
    out = capsys.readouterr().out
    assert out.count("network evaluations") == 2 and "committed weights" in out


def test_without_a_trained_run_the_scripts_default_to_the_committed_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "OUT_DIR", tmp_path)  # a fresh clone: nothing trained yet
    assert sample.default_checkpoint("names") == WEIGHTS / "names" / "ckpt.pt"
    assert sample.default_checkpoint("shakespeare_small", ar=True) == WEIGHTS / "shakespeare_small" / "ckpt_ar.pt"
    (tmp_path / "names").mkdir()
    torch.save({}, tmp_path / "names" / "ckpt.pt")  # once you train, your own checkpoint wins
    assert sample.default_checkpoint("names") == tmp_path / "names" / "ckpt.pt"


def test_visualize_animates_the_committed_names_weights(tmp_path):
    gif = tmp_path / "names.gif"
    visualize.main(["--ckpt", str(WEIGHTS / "names" / "ckpt.pt"), "--steps", "3", "--samples", "2", "--out", str(gif),
                    "--device", "cpu"])
    assert gif.stat().st_size > 0


def test_the_committed_uniform_and_gaussian_models_sample_names():
    """lesson 4 and the README's table read these: they load, take t, and make mostly valid names."""
    from common.metrics import sample_metrics
    from torch_version import train as T
    for noise in ("uniform", "gaussian"):
        model, ckpt = load_checkpoint(WEIGHTS / "names" / f"ckpt_{noise}.pt")
        assert model.config.time_input and ckpt["config"]["noise"] == noise
        ids, _ = T.sample_noise(model, noise, 50, model.config.block_size, torch.Generator().manual_seed(0), "cpu",
                                "float32", steps=16)
        texts = ["".join(ckpt["itos"][i] for i in row) for row in ids.tolist()]
        assert sample_metrics(texts, [], ["emma"])["valid"] > 0.8


def test_sample_py_refuses_a_noise_model_in_one_sentence(capsys):
    with pytest.raises(SystemExit, match="uniform-noise model, which this script cannot sample"):
        sample.main(["--ckpt", str(WEIGHTS / "names" / "ckpt_uniform.pt")])


def test_the_committed_block_models_write_block_by_block_with_their_kv_cache():
    """lesson 5 and docs/block_diffusion.md read these: names from blocks of 4, and the laptop preset's
    paragraph, both through sample.py's default path for their folders."""
    from common.metrics import sample_metrics
    model, ckpt = load_checkpoint(WEIGHTS / "names" / "ckpt_block4.pt")
    assert model.config.block_len == 4 and ckpt["config"]["block"] == 4
    out = sample.blockwise(sample.sample_ancestral, 4)(sample.make_denoiser(model, "cpu"), 50, 16, len(ckpt["itos"]) - 1,
                                                       torch.Generator().manual_seed(0), steps=4)
    assert sample_metrics(["".join(ckpt["itos"][i] for i in row) for row in out.samples.tolist()], [], ["emma"])["valid"] > 0.8
    assert sample.default_checkpoint("shakespeare_laptop").name.startswith("ckpt_block")
