"""The dataset loader: the shipped copies, verified; a folder the user names; a download only to
restore a deleted copy; one clear sentence otherwise."""
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from data import fetch

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_copies_pass_their_checksums(monkeypatch):
    monkeypatch.delenv("DIFFUSION_DATA_DIR", raising=False)
    assert fetch.dataset_path("names.txt") == ROOT / "names.txt"
    assert fetch.dataset_path("tiny_shakespeare.txt") == ROOT / "data" / "tiny_shakespeare.txt"
    assert len(fetch.load_names()) == 32_033  # 32,032 newlines, the last name has none
    assert len(fetch.load_text()) == 1_115_394


def test_a_named_folder_still_wins_over_the_shipped_copy(monkeypatch, tmp_path):
    (tmp_path / "names.txt").write_bytes((ROOT / "names.txt").read_bytes())
    monkeypatch.setenv("DIFFUSION_DATA_DIR", str(tmp_path))
    assert fetch.dataset_path("names.txt") == tmp_path / "names.txt"
    monkeypatch.delenv("DIFFUSION_DATA_DIR")
    assert fetch.dataset_path("names.txt", data_dir=tmp_path) == tmp_path / "names.txt"


def test_a_damaged_shipped_copy_is_refused_and_says_how_to_restore_it(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFUSION_DATA_DIR", raising=False)
    url, sha, _ = fetch.DATASETS["names.txt"]
    (tmp_path / "names.txt").write_text("emma\nolivia\n")
    monkeypatch.setitem(fetch.DATASETS, "names.txt", (url, sha, tmp_path / "names.txt"))
    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)  # a damaged copy is never downloaded over
    with pytest.raises(fetch.DatasetError, match="git checkout|--restore"):
        fetch.load_names()


# The first README command, as a new user runs it: a fresh clone, no variable, no network. The
# script runs in a child process whose every way out is blocked: urlopen raises, and so does any
# socket connection (whatever library would open it).
NO_NETWORK = """
import runpy, socket, sys, urllib.request
def blocked(*args, **kwargs):
    raise OSError("network blocked by the test")
urllib.request.urlopen = blocked
socket.socket.connect = socket.socket.connect_ex = blocked
socket.create_connection = blocked
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_first_readme_command_trains_with_no_network_and_no_variable_set():
    env = {k: v for k, v in os.environ.items() if k != "DIFFUSION_DATA_DIR"}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK, str(ROOT / "minimal" / "train_minimal.py"),
                           "--steps", "50", "--samples", "3"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "held-out NELBO" in done.stdout and "network blocked" not in done.stdout + done.stderr


def test_a_file_whose_checksum_does_not_match_is_refused(tmp_path):
    (tmp_path / "names.txt").write_text("emma\nolivia\n")
    with pytest.raises(fetch.DatasetError, match="checksum"):
        fetch.load_names(tmp_path)


def test_a_named_folder_without_the_file_says_so(tmp_path):
    with pytest.raises(fetch.DatasetError, match="not in"):
        fetch.load_names(tmp_path)


def offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_offline_with_the_shipped_copy_deleted_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFUSION_DATA_DIR", raising=False)
    url, sha, _ = fetch.DATASETS["names.txt"]
    monkeypatch.setitem(fetch.DATASETS, "names.txt", (url, sha, tmp_path / "names.txt"))
    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    with pytest.raises(fetch.DatasetError, match="git checkout"):
        fetch.load_names()
    assert not (tmp_path / "names.txt").exists()


def test_a_download_with_the_wrong_checksum_is_not_saved(monkeypatch, tmp_path):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"not the names\n"

    monkeypatch.delenv("DIFFUSION_DATA_DIR", raising=False)
    url, sha, _ = fetch.DATASETS["names.txt"]
    monkeypatch.setitem(fetch.DATASETS, "names.txt", (url, sha, tmp_path / "names.txt"))
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(fetch.DatasetError, match="checksum"):
        fetch.load_names()
    assert not (tmp_path / "names.txt").exists()


def test_the_script_turns_a_missing_dataset_into_one_sentence_and_exit_1(tmp_path):
    script = ROOT / "minimal" / "train_minimal.py"
    out = subprocess.run([sys.executable, str(script), "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: names.txt is not in")


def test_held_out_split_is_deterministic_disjoint_and_large_enough():
    words = fetch.load_names()
    train, held_out = fetch.split_names(words)
    assert fetch.split_names(words) == (train, held_out)
    assert len(held_out) >= 1000 and len(train) + len(held_out) == len(words)
    assert held_out[:3] == [words[0], words[10], words[20]]


def test_text_split_is_nanogpts_90_10():
    train, val = fetch.split_text("x" * 1000)
    assert (len(train), len(val)) == (900, 100)


def test_a_deleted_shipped_copy_is_restored_by_a_checked_download(monkeypatch, tmp_path):
    payload = (ROOT / "names.txt").read_bytes()

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return payload

    monkeypatch.delenv("DIFFUSION_DATA_DIR", raising=False)
    url, sha, _ = fetch.DATASETS["names.txt"]
    monkeypatch.setitem(fetch.DATASETS, "names.txt", (url, sha, tmp_path / "names.txt"))
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda *a, **k: Response())
    assert len(fetch.load_names()) == 32_033
    assert (tmp_path / "names.txt").read_bytes() == payload
