"""Bad files, folders and data: one sentence and a non-zero exit, never a traceback or another run's figure.

The classes of issue #15 beyond bad numbers (tests/test_bad_numbers.py): output that cannot be
written (checked before any work), damaged or hand-edited checkpoints of both kinds, data files
(a byte-order mark, too little held-out data, a list with one over-long line, a file changed
after training), and the NumPy tiers' and data/fetch.py's command lines. Each case runs the
script's main() in this process and checks the exit and the message; a few run from the shell to
check that no traceback reaches the user."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minimal import train_minimal
from tests.conftest import write_names_like
from pure import train_pure
from torch_version.bench import sampling as bench_sampling
from torch_version.tools import evaluate, visualize
from torch_version import sample
from torch_version import train as T
from torch_version.engine.checkpoints import CheckpointError, read_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8", "--eval-draws", "1",
        "--final-draws", "1", "--samples", "0", "--quiet", "--no-compile", "--device", "cpu"]


def exit_of(main, argv, capsys):
    """(exit code, the message the user sees: sys.exit's text or argparse's last line)."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    code = exit_.value.code
    message = code if isinstance(code, str) else (err.splitlines()[-1] if err else "")
    return (1 if isinstance(code, str) else code), message


def one_sentence(message):
    return message and "\n" not in message.strip() and "Traceback" not in message


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    return write_names_like(tmp_path_factory.mktemp("names") / "items.txt")


@pytest.fixture(scope="module")
def trained(names, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    T.main(["--dataset", str(names), "--both", "--max-iters", "2", "--eval-interval", "2", "--out", str(out)] + TINY)
    return out


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "not_a_folder"
    path.write_text("x")
    return path


# ---------------------------------------------------------------- output that cannot be written
def test_every_writer_refuses_an_output_that_is_a_file_before_any_work(names, trained, a_file, capsys):
    cases = [(T.main, ["--dataset", names, "--out", a_file] + TINY),
             (evaluate.main, [trained / "ckpt.pt", "--out", a_file, "--device", "cpu"]),
             (visualize.main, ["--ckpt", trained / "ckpt.pt", "--out", a_file / "x.gif", "--device", "cpu"]),
             (bench_sampling.main, ["--ckpt", trained / "ckpt.pt", "--ckpt-ar", trained / "ckpt_ar.pt",
                                    "--out", a_file, "--device", "cpu"]),
             (train_pure.main, ["--out", a_file, "--steps", "1", "--no-plots"])]
    for main, argv in cases:
        code, message = exit_of(main, argv, capsys)
        assert code == 1 and one_sentence(message) and "is a file, not a folder" in message, (main, message)


def test_checkpoints_get_the_mode_the_umask_gives_and_killed_writes_leave_nothing_behind(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "ckpt.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a write killed before its rename
        save_checkpoint(tmp_path / "ckpt.pt", step=1)
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt.pt").stat().st_mode & 0o777 == 0o644  # readable by others, as a plain file would be
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_an_unreadable_checkpoint_says_permission_not_delete_it(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"x")

    def denied(*args, **kwargs):  # tests run as root, who can read anything: the error is stood in for
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(CheckpointError, match="permission denied") as err:
        read_checkpoint(path)
    assert "delete" not in str(err.value)


# ---------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("edit", ["no itos", "step as text", "itos of numbers", "no rng", "no config dataset"])
def test_a_hand_edited_torch_checkpoint_is_refused_in_one_sentence_by_every_reader(names, trained, edit, tmp_path,
                                                                                   capsys):
    ckpt = torch.load(trained / "ckpt.pt", weights_only=True)
    if edit == "no itos":
        del ckpt["itos"]
    elif edit == "step as text":
        ckpt["step"] = "2"
    elif edit == "itos of numbers":
        ckpt["itos"] = list(range(len(ckpt["itos"])))
    elif edit == "no rng":
        del ckpt["rng"]
    else:
        del ckpt["config"]["dataset"]
    folder = tmp_path / "run"
    save_checkpoint(folder / "ckpt.pt", **ckpt)
    save_checkpoint(folder / "ckpt_ar.pt", **torch.load(trained / "ckpt_ar.pt", weights_only=True))
    resume = (T.main, ["--dataset", names, "--out", folder, "--resume", "--max-iters", "4"] + TINY)
    score = (evaluate.main, [folder / "ckpt.pt", "--device", "cpu", "--samples", "2", "--grid", "ancestral:2"])
    draw = (sample.main, ["--ckpt", folder / "ckpt.pt", "--device", "cpu"])
    readers = {"no rng": [resume], "no config dataset": [score]}.get(edit, [resume, score, draw])  # who needs it
    for main, argv in readers:
        code, message = exit_of(main, argv, capsys)
        assert code == 1 and one_sentence(message) and message.startswith("error:"), (edit, main, message)


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a zip", "no meta"])
def test_pure_resume_refuses_a_damaged_checkpoint_in_one_sentence(damage, tmp_path, capsys):
    out = tmp_path / "out"
    train_pure.main(["--steps", "2", "--out", str(out), "--no-plots", "--quiet", "--samples", "1"])
    capsys.readouterr()
    ckpt = out / "ckpt.npz"
    data = ckpt.read_bytes()
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "not a zip":
        ckpt.write_text("hello")
    else:
        with np.load(ckpt, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != "meta"}
        np.savez(ckpt.with_suffix(""), **arrays)  # writes ckpt.npz again, without its record of the run
    code, message = exit_of(train_pure.main, ["--steps", "4", "--out", out, "--no-plots", "--resume"], capsys)
    assert code == 1 and one_sentence(message) and "--resume" in message, message


# ---------------------------------------------------------------- data files
def test_a_byte_order_mark_is_not_a_character_of_the_data(names, tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + names.read_bytes())
    assert "\ufeff" not in "".join(T.load_dataset(str(path))["itos"])


@pytest.mark.parametrize("text, says", [
    ("\n".join(["anna", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ida", "jo"]) + "\n", "at least 2"),
    ("It was a dark and stormy night. " * 10, "two 256-character windows"),
    ("\n".join(["anna"] * 30 + ["x" * 80] + ["bob"] * 30) + "\n", "line 31 has more than 64 characters"),
])
def test_too_little_held_out_data_is_refused_and_says_why(text, says, tmp_path, capsys):
    path = tmp_path / "data.txt"
    path.write_text(text)
    code, message = exit_of(T.main, ["--dataset", path, "--out", tmp_path / "out"] + TINY, capsys)
    assert code == 1 and one_sentence(message) and says in message, message


def test_the_full_form_during_training_is_refused_for_text_windows_in_one_sentence(tmp_path, capsys):
    path = tmp_path / "prose.txt"
    path.write_text("It was a dark and stormy night; the rain fell in torrents. " * 200)
    code, message = exit_of(T.main, ["--dataset", path, "--out", tmp_path / "out", "--eval-full", "--max-iters", "2"]
                            + TINY, capsys)
    assert code == 1 and one_sentence(message) and "--eval-full is for lists of names" in message, message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # refused before any training


def test_a_dataset_changed_after_training_is_refused_by_resume_and_by_evaluate(names, tmp_path, capsys):
    path = tmp_path / "items.txt"
    path.write_text(names.read_text())
    out = tmp_path / "out"
    T.main(["--dataset", str(path), "--both", "--max-iters", "2", "--eval-interval", "2", "--out", str(out)] + TINY)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # the same names, in another order: another split
    for main, argv in [(T.main, ["--dataset", path, "--out", out, "--resume", "--max-iters", "4"] + TINY),
                       (evaluate.main, [out / "ckpt.pt", "--device", "cpu", "--samples", "2", "--grid", "ancestral:2"])]:
        code, message = exit_of(main, [str(a) for a in argv], capsys)
        assert code == 1 and one_sentence(message) and "checksum" in message, message


def test_a_dataset_that_is_a_folder_or_not_utf8_is_one_sentence(tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1") * 20)
    for dataset, says in ((tmp_path, "is a folder"), (latin, "not a UTF-8 text file")):
        code, message = exit_of(T.main, ["--dataset", dataset, "--out", tmp_path / "out"] + TINY, capsys)
        assert code == 1 and one_sentence(message) and says in message, message


# ---------------------------------------------------------------- the NumPy tiers and data/fetch.py
@pytest.mark.parametrize("main", [train_minimal.main, train_pure.main])
@pytest.mark.parametrize("argv", [["--steps", "0"], ["--steps", "1.5"], ["--seed", "-1"], ["--seed", str(2**63)],
                                  ["--samples", "0"], ["--temperature", "nan"], ["--temperature", "0"],
                                  ["--temperature", "inf"]])
def test_the_numpy_tiers_refuse_bad_numbers_in_one_sentence(main, argv, capsys):
    code, message = exit_of(main, argv, capsys)
    assert code == 2 and one_sentence(message) and f"argument {argv[0]}" in message


@pytest.mark.parametrize("main", [train_minimal.main, train_pure.main])
def test_the_numpy_tiers_name_a_missing_data_folder_in_one_sentence(main, tmp_path, capsys):
    code, message = exit_of(main, ["--data-dir", tmp_path / "nowhere", "--steps", "1"], capsys)
    assert code == 1 and one_sentence(message) and "names.txt is not in" in message


def test_fetch_prints_help_instead_of_downloading_and_names_a_missing_folder():
    done = subprocess.run([sys.executable, str(ROOT / "data" / "fetch.py"), "--help"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, DIFFUSION_DATA_DIR="/nonexistent"))
    assert done.returncode == 0 and done.stdout.startswith("usage:")
    done = subprocess.run([sys.executable, str(ROOT / "data" / "fetch.py"), "--data-dir", "/nonexistent"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error:") and "Traceback" not in done.stderr


@pytest.mark.parametrize("script, argv", [("minimal/train_minimal.py", ["--seed", "-1"]),
                                          ("pure/train_pure.py", ["--temperature", "nan"]),
                                          ("torch_version/tools/evaluate.py", ["/no/such/ckpt.pt", "--device", "cpu"])])
def test_from_the_shell_a_bad_input_prints_no_traceback(script, argv):
    done = subprocess.run([sys.executable, str(ROOT / script)] + argv, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr and done.stderr.strip()


def test_bench_names_never_prints_the_figures_of_checkpoints_left_by_an_earlier_benchmark(names, tmp_path, capsys):
    from torch_version.bench import names as bench_names
    flags = ["--dataset", str(names), "--max-iters", "2", "--eval-interval", "2", "--out", str(tmp_path)] + TINY
    bench_names.main(flags)  # a healthy benchmark leaves both checkpoints behind
    capsys.readouterr()
    code, message = exit_of(bench_names.main, flags + ["--lr", "1e30"], capsys)  # this one diverges at once
    assert code == 1 and one_sentence(message) and "diverged" in message


def test_ctrl_c_in_any_script_is_one_line_and_exit_130(monkeypatch, capsys):
    from common import cli

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as exit_:
        cli.run(interrupted)
    assert exit_.value.code == 130 and len(capsys.readouterr().err.strip().splitlines()) == 1
