"""The evaluation report: its metrics are right on hand-made samples with known answers, invalid
names are never scored as if they were valid, and a run on a tiny checkpoint writes the JSON,
Markdown and PNG report."""
import json
import math
from dataclasses import asdict

import pytest
import torch

from common.metrics import sample_metrics
from torch_version import diffusion
from torch_version.tools import evaluate
from torch_version.model import ModelConfig, Transformer
from torch_version.engine.checkpoints import save_checkpoint

ITOS = [".", "a", "b", "e", "m", "n", "o", "_"]  # PAD first, MASK last: 6 letters, 7 output classes
STOI = {c: i for i, c in enumerate(ITOS)}
MASK_ID = len(ITOS) - 1
TRAIN_WORDS = ["anna", "bob", "ben"]
REAL_WORDS = ["emma", "bob", "ab", "anna"]  # lengths 4, 3, 2, 4
SAMPLES = ["anna..", "emma..", "bob...", "ab.a..", "......", "an_a.."]  # the last three are invalid


def ids(texts):
    return torch.tensor([[STOI[c] for c in t] for t in texts])


def uniform_judge(xt):
    return torch.zeros(xt.shape + (len(ITOS) - 1,))  # every output class equally likely


def end_judge(q):
    """A judge that gives the end-of-name (PAD) probability q and shares 1 - q over the 6 letters."""
    def judge(xt):
        logits = torch.full(xt.shape + (len(ITOS) - 1,), math.log((1 - q) / 6), dtype=torch.float64)  # exact
        logits[..., 0] = math.log(q)
        return logits
    return judge


def test_shares_and_length_distance_of_hand_made_names():
    report = evaluate.score(ids(SAMPLES), uniform_judge, MASK_ID, ITOS, 0, TRAIN_WORDS, REAL_WORDS)
    assert report["valid"] == pytest.approx(3 / 6)   # anna, emma, bob
    assert report["copied"] == pytest.approx(2 / 6)  # anna and bob are training names
    assert report["new"] == pytest.approx(1 / 6)     # emma is not
    # valid lengths {3: 1/3, 4: 2/3} against real {2: 1/4, 3: 1/4, 4: 1/2}: TV = (1/4 + 1/12 + 1/6) / 2
    assert report["tv_length"] == pytest.approx(0.25)


def test_validity_per_row_agrees_with_the_shared_sample_metrics():
    assert evaluate.valid_rows(ids(SAMPLES), 0, MASK_ID).tolist() == [True, True, True, False, False, False]
    assert evaluate.valid_rows(ids(SAMPLES), 0, MASK_ID).double().mean().item() == pytest.approx(
        sample_metrics(SAMPLES, TRAIN_WORDS, REAL_WORDS)["valid"])


def test_judge_perplexity_of_a_uniform_judge_is_the_number_of_classes():
    report = evaluate.score(ids(SAMPLES), uniform_judge, MASK_ID, ITOS, 0, TRAIN_WORDS, REAL_WORDS)
    assert report["judge_ppl"] == pytest.approx(len(ITOS) - 1)
    assert report["judge_ppl_se"] == pytest.approx(0, abs=1e-12)  # every character costs the same


def test_judge_scores_each_valid_name_as_its_letters_and_one_end():
    """11 letters at -log((1 - q) / 6) and 3 ends at -log(q), over 14 characters: trailing PADs after
    the end and the invalid rows add nothing."""
    q = 0.3
    report = evaluate.score(ids(SAMPLES), end_judge(q), MASK_ID, ITOS, 0, TRAIN_WORDS, REAL_WORDS)
    expected = (11 * -math.log((1 - q) / 6) + 3 * -math.log(q)) / 14
    assert report["n_scored"] == 3
    assert report["judge_nll"] == pytest.approx(expected, rel=1e-12)


def test_invalid_names_are_not_scored_by_the_judge():
    report = evaluate.score(ids(SAMPLES[3:]), uniform_judge, MASK_ID, ITOS, 0, TRAIN_WORDS, REAL_WORDS)
    assert report["valid"] == 0 and report["n_scored"] == 0
    assert report["judge_ppl"] is None and report["entropy_bits"] is None


def test_unigram_entropy_in_bits_of_the_scored_characters():
    report = evaluate.score(ids(SAMPLES), uniform_judge, MASK_ID, ITOS, 0, TRAIN_WORDS, REAL_WORDS)
    counts = torch.tensor([3, 3, 2, 2, 2, 1, 1.0])  # anna. emma. bob. -> a, '.', n, m, b, e, o
    p = counts / counts.sum()
    assert report["entropy_bits"] == pytest.approx(float(-(p * p.log2()).sum()))
    assert evaluate.unigram_entropy(torch.tensor([0, 1, 0, 1])) == pytest.approx(1.0)


def test_nfe_per_sample_counts_the_steps_that_changed_each_row():
    m = MASK_ID
    trajectory = [torch.tensor([[m, m], [m, m]]), torch.tensor([[1, m], [m, m]]),  # row 1 unchanged: cached
                  torch.tensor([[1, m], [2, m]]), torch.tensor([[1, 3], [2, 4]])]
    assert evaluate.nfe_per_sample(trajectory).tolist() == [2, 2]


def test_grid_entries_are_parsed_and_bad_ones_refused():
    assert evaluate.parse_grid(["ancestral:2,8", "threshold:0.5"]) == [
        ("ancestral", 2), ("ancestral", 8), ("threshold", 0.5)]
    for bad in ["ancestral", "nosuch:2", "confidence:0", "threshold:1.5", "ancestral:x"]:
        with pytest.raises(ValueError):
            evaluate.parse_grid([bad])


# ---------------------------------------------------------------- the whole report, on a tiny checkpoint
WORDS = ["anna", "bob", "emma", "ben", "mona", "nan", "abbe", "bea", "ena", "noe", "omen", "mae"] * 3


def tiny_checkpoints(folder, dataset):
    stoi, itos = diffusion.build_vocab(WORDS)
    block_size = max(map(len, WORDS)) + 1  # as train.load_dataset sets it
    for name, causal in (("ckpt.pt", False), ("ckpt_ar.pt", True)):
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=len(itos), n_out=len(itos) - 1, block_size=block_size, n_layer=1,
                             n_head=2, n_embd=16, causal=causal)
        save_checkpoint(folder / name, model=Transformer(config).state_dict(), optimizer={},
                        model_args=asdict(config), config={"kind": "names", "dataset": str(dataset),
                                                           "schedule": "linear"},
                        itos=itos, step=0, best_val_loss=0.0)
    return folder / "ckpt.pt"


def test_report_is_written_as_json_markdown_and_png(tmp_path):
    dataset = tmp_path / "tiny_names.txt"
    dataset.write_text("\n".join(WORDS) + "\n")
    ckpt = tiny_checkpoints(tmp_path, dataset)
    out = tmp_path / "report"
    evaluate.main([str(ckpt), "--samples", "6", "--draws", "1", "--grid", "ancestral:2", "threshold:0.5",
                   "--out", str(out), "--device", "cpu"])
    report = json.loads((out / "report.json").read_text())
    assert [r["sampler"] for r in report["rows"]] == ["ancestral", "threshold", "AR twin", "data"]
    assert report["held_out"]["sequences"] == len(WORDS[::10])  # every 10th name is held out
    assert math.isfinite(report["held_out"]["nats"]) and report["held_out"]["se"] >= 0
    data_row = report["rows"][-1]
    assert data_row["valid"] == 1.0 and data_row["n_scored"] == data_row["n"] == 4  # all 4 held-out names, valid
    assert "| sampler | setting | NFE/sample |" in (out / "report.md").read_text()
    assert (out / "quality_vs_nfe.png").stat().st_size > 0


def test_a_judge_that_is_not_an_ar_model_is_refused(tmp_path):
    dataset = tmp_path / "tiny_names.txt"
    dataset.write_text("\n".join(WORDS) + "\n")
    ckpt = tiny_checkpoints(tmp_path, dataset)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(ckpt), "--judge", str(ckpt), "--device", "cpu"])
    assert str(stop.value).startswith("error:") and "AR twin" in str(stop.value)


def test_evaluate_repeats_the_final_figure_with_the_draws_training_used(tmp_path, capsys):
    """A run with --final-draws 3 records them; evaluate.py, asked for no --draws, uses the same 3
    and prints training's own figure to the last digit."""
    import re
    from tests.conftest import write_names_like
    from torch_version import train as T
    names = write_names_like(tmp_path / "items.txt")
    T.main(["--dataset", str(names), "--both", "--max-iters", "2", "--eval-interval", "2", "--n-layer", "1",
            "--n-head", "2", "--n-embd", "16", "--batch-size", "8", "--eval-draws", "1", "--final-draws", "3",
            "--samples", "0", "--quiet", "--no-compile", "--device", "cpu", "--out", str(tmp_path / "run")])
    trained = float(re.search(r"held-out NELBO \(full discrete form, 3 mask draws\): ([0-9.]+)", capsys.readouterr().out).group(1))
    evaluate.main([str(tmp_path / "run" / "ckpt.pt"), "--samples", "2", "--grid", "ancestral:2", "--out",
                   str(tmp_path / "report"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert "3 mask draws" in out and float(re.search(r"held-out NELBO: ([0-9.]+)", out).group(1)) == trained
