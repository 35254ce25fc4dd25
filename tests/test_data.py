"""The dataset loader: verified files only, a folder the user names, one clear sentence otherwise."""
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from data import fetch

ROOT = Path(__file__).resolve().parents[1]


def test_reference_copies_pass_their_checksums():
    assert len(fetch.load_names()) == 32_033  # 32,032 newlines, the last name has none
    assert len(fetch.load_text()) == 1_115_394


def test_a_file_whose_checksum_does_not_match_is_refused(tmp_path):
    (tmp_path / "names.txt").write_text("emma\nolivia\n")
    with pytest.raises(fetch.DatasetError, match="checksum"):
        fetch.load_names(tmp_path)


def test_a_named_folder_without_the_file_says_so(tmp_path):
    with pytest.raises(fetch.DatasetError, match="not in"):
        fetch.load_names(tmp_path)


def offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_offline_with_no_local_copy_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFUSION_DATA_DIR")
    url, sha, _ = fetch.DATASETS["names.txt"]
    monkeypatch.setitem(fetch.DATASETS, "names.txt", (url, sha, tmp_path / "names.txt"))
    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    with pytest.raises(fetch.DatasetError, match="--data-dir"):
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

    monkeypatch.delenv("DIFFUSION_DATA_DIR")
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
