"""Prepared text (data/prepare.py, data/prepared.py): the ids, vocabulary, split and checksum that
reading the whole text gives, from a file that is only ever read in chunks; a folder that is whole
or refused; one sentence for a bad text; and, on a file of 256 MB, a peak memory far below its size."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data import prepare
from data.fetch import read_text, split_text
from data.prepared import PreparedError, held_out_windows, open_prepared, windows
from torch_version import diffusion

ROOT = Path(__file__).resolve().parents[1]
# Two- three- and four-byte characters among the one-byte ones, so chunk borders fall inside them.
TEXT = "Ünïcødé text, 日本語 and 🙂 too.\nA second line: naïve café.\n" * 40


def prepared(tmp_path, text, chunk_bytes=prepare.CHUNK_BYTES, raw=None):
    """Write `text` (or the bytes `raw`) to a file, prepare it, and open the folder."""
    path = tmp_path / "text.txt"
    path.write_bytes(raw if raw is not None else text.encode("utf-8"))
    prepare.prepare(path, tmp_path / "out", chunk_bytes)
    return open_prepared(tmp_path / "out")


def as_read_today(text):
    """What torch_version/train.load_dataset makes of a text: vocabulary, ids of each split, checksum."""
    stoi, itos = diffusion.build_vocab([text], pad=False)
    train_text, val_text = split_text(text)
    return itos, diffusion.encode(train_text, stoi).numpy(), diffusion.encode(val_text, stoi).numpy(), \
        hashlib.sha256(text.encode("utf-8")).hexdigest()


def assert_same_as_today(data, text):
    itos, train, val, sha256 = as_read_today(text)
    assert data["itos"] == itos
    np.testing.assert_array_equal(data["train"], train)
    np.testing.assert_array_equal(data["val"], val)
    assert data["sha256"] == sha256
    assert data["n_chars"] == len(text)


# ---------------------------------------------------------------- the same ids as reading the text
def test_a_text_prepares_to_the_ids_split_and_checksum_of_reading_it_whole(tmp_path):
    data = prepared(tmp_path, TEXT)
    assert_same_as_today(data, TEXT)
    assert isinstance(data["train"], np.memmap) and data["dtype"] == "uint16"


def test_tiny_shakespeare_prepares_to_what_train_py_reads_today(tmp_path):
    path = ROOT / "data" / "tiny_shakespeare.txt"
    prepare.prepare(path, tmp_path)
    assert_same_as_today(open_prepared(tmp_path), read_text(path))


def test_a_text_that_uses_the_mask_symbol_gets_build_vocabs_spare_symbol():
    assert (prepare.MASK, prepare.SPARE_SYMBOLS) == (diffusion.MASK, diffusion.SPARE_SYMBOLS)
    for text in ["a_b c", "a_b~c", "_~#|^@ x"]:
        chars = sorted(set(text))
        assert prepare.vocabulary(chars) == diffusion.build_vocab([text], pad=False)[1], text


def test_a_text_with_the_mask_symbol_round_trips(tmp_path):
    text = "snake_case and ~tilde~ words\n" * 30
    data = prepared(tmp_path, text)
    assert data["itos"][-1] == "#"  # '_' and '~' are the text's own
    assert_same_as_today(data, text)


def test_characters_cut_by_a_chunk_border_are_read_whole(tmp_path):
    for chunk_bytes in [1, 2, 3, 5, 7]:  # every character of up to 4 bytes gets cut somewhere
        assert_same_as_today(prepared(tmp_path, TEXT, chunk_bytes), TEXT)


def test_a_byte_order_mark_is_dropped_as_fetch_read_text_drops_it(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.encode("utf-8"))
    assert read_text(path) == TEXT
    for chunk_bytes in [1, 2, prepare.CHUNK_BYTES]:  # the mark itself cut by a chunk border, or not
        assert_same_as_today(prepared(tmp_path, None, chunk_bytes, raw=path.read_bytes()), TEXT)


def test_a_vocabulary_beyond_65536_symbols_is_stored_as_uint32(tmp_path):
    text = "".join(chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c < 0xE000)  # no surrogates
    data = prepared(tmp_path, text)
    assert data["dtype"] == "uint32" and len(data["itos"]) > 2 ** 16
    assert_same_as_today(data, text)


def test_eleven_characters_are_the_least_that_split(tmp_path):
    data = prepared(tmp_path, "abcdefghijk")
    assert (data["n_train"], data["n_val"]) == (9, 2)  # int(0.9 * 11) = 9


# ---------------------------------------------------------------- reading windows
def test_windows_are_the_windows_train_py_indexes_today(tmp_path):
    data = prepared(tmp_path, TEXT)
    L, train = 16, torch.from_numpy(np.array(data["train"], dtype=np.int64))
    start = torch.randint(len(train) - L + 1, (32,), generator=torch.Generator().manual_seed(0))
    today = train[start[:, None] + torch.arange(L)]  # get_batch's indexing
    got = windows(data["train"], start, L)
    assert got.dtype == np.int64 and got.shape == (32, L)
    assert torch.equal(torch.from_numpy(got), today)


def test_held_out_windows_are_todays_and_a_cap_keeps_evenly_spaced_ones(tmp_path):
    data = prepared(tmp_path, TEXT)
    L, val = 8, torch.from_numpy(np.array(data["val"], dtype=np.int64))
    today = val[: len(val) // L * L].view(-1, L).numpy()  # load_dataset's held-out windows
    np.testing.assert_array_equal(held_out_windows(data["val"], L), today)
    capped = held_out_windows(data["val"], L, 5)
    n = len(today)
    np.testing.assert_array_equal(capped, today[[0, n // 5, 2 * n // 5, 3 * n // 5, 4 * n // 5]])


def test_fewer_than_two_held_out_windows_is_one_sentence(tmp_path):
    data = prepared(tmp_path, TEXT)
    with pytest.raises(PreparedError, match="fewer than the two 200-character windows"):
        held_out_windows(data["val"], 200)  # 224 held-out characters: one window


# ---------------------------------------------------------------- a folder is whole or refused
def test_meta_json_is_written_after_both_token_files_are_complete(tmp_path, monkeypatch):
    present = []
    real = prepare.atomic_write

    def spy(path, write, **kwargs):
        present.append(sorted(p.name for p in path.parent.iterdir()))
        return real(path, write, **kwargs)
    monkeypatch.setattr(prepare, "atomic_write", spy)
    data = prepared(tmp_path, TEXT)
    assert present == [["train.bin", "val.bin"]]  # no meta.json yet, no temporary file left
    assert len(data["train"]) + len(data["val"]) == len(TEXT)


def interrupted(in_pass):
    """prepare.code_points that is stopped (Ctrl-C) after one chunk of the given pass (1 or 2)."""
    real, passes = prepare.code_points, []

    def code_points(path, chunk_bytes):
        passes.append(1)
        for i, item in enumerate(real(path, chunk_bytes)):
            if len(passes) == in_pass and i == 1:
                raise KeyboardInterrupt
            yield item
    return code_points


def test_a_preparation_stopped_while_writing_leaves_a_folder_that_is_refused(tmp_path, monkeypatch):
    prepared(tmp_path, TEXT)  # an earlier, finished preparation in the same folder
    monkeypatch.setattr(prepare, "code_points", interrupted(in_pass=2))
    with pytest.raises(KeyboardInterrupt):
        prepared(tmp_path, TEXT.upper(), chunk_bytes=64)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.bin", "val.bin"]  # the old ones
    with pytest.raises(PreparedError, match="did not finish"):
        open_prepared(tmp_path / "out")


def test_a_preparation_stopped_while_reading_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    prepared(tmp_path, TEXT)
    monkeypatch.setattr(prepare, "code_points", interrupted(in_pass=1))
    with pytest.raises(KeyboardInterrupt):
        prepared(tmp_path, TEXT.upper(), chunk_bytes=64)
    assert_same_as_today(open_prepared(tmp_path / "out"), TEXT)


def test_a_text_that_changes_between_the_two_passes_is_refused_and_left_unfinished(tmp_path, monkeypatch):
    real = prepare.write_ids

    def edited_first(path, *args, **kwargs):
        path.write_text(TEXT.replace("café", "cafe"), encoding="utf-8")  # same characters, other bytes
        return real(path, *args, **kwargs)
    monkeypatch.setattr(prepare, "write_ids", edited_first)
    with pytest.raises(PreparedError, match="changed while it was being prepared"):
        prepared(tmp_path, TEXT)
    with pytest.raises(PreparedError, match="did not finish"):
        open_prepared(tmp_path / "out")


@pytest.mark.parametrize("damage, message", [
    (lambda out: shutil.rmtree(out), "is not a folder of prepared data"),
    (lambda out: (out / "meta.json").unlink(), "did not finish"),
    (lambda out: (out / "meta.json").write_text("{not json"), "cannot be read as JSON"),
    (lambda out: (out / "val.bin").unlink(), "val.bin is missing"),
    (lambda out: (out / "train.bin").write_bytes((out / "train.bin").read_bytes()[:-2]), "train.bin holds"),
    (lambda out: rewrite_meta(out, format=99), "another format"),
    (lambda out: rewrite_meta(out, dtype="int8"), "lacks a field"),
])
def test_a_missing_or_damaged_folder_is_refused_in_one_sentence(tmp_path, damage, message):
    prepared(tmp_path, TEXT)
    damage(tmp_path / "out")
    with pytest.raises(PreparedError, match=message) as err:
        open_prepared(tmp_path / "out")
    assert "prepare" in str(err.value) and str(err.value).endswith(".")


def rewrite_meta(out, **changes):
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, **changes}))


# ---------------------------------------------------------------- the command line
def test_the_command_prints_its_statistics_and_writes_under_data_prepared(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare, "OUT_DIR", tmp_path / "prepared")
    (tmp_path / "poems.txt").write_text(TEXT, encoding="utf-8")
    prepare.main([str(tmp_path / "poems.txt")])
    said = capsys.readouterr().out
    assert f"{len(TEXT):,} characters" in said and "train.bin has" in said and "val.bin has" in said
    assert open_prepared(tmp_path / "prepared" / "poems")["n_chars"] == len(TEXT)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),                                       # no such file
    ("folder", "is a folder, not a file"),
    (b"abc\xffdef", "not a UTF-8 text file (at byte 3)"),
    ("abcé".encode("utf-8")[:-1], "not a UTF-8 text file (at byte 3)"),  # ends inside a character
    (b"", "holds no text"),
    (b"\xef\xbb\xbf", "holds no text"),                           # a byte-order mark and nothing else
    (b"abcdefghij", "too short"),                                 # 1 held-out character
    ("_~#|^@* and more".encode("utf-8"), "no symbol is left to show MASK"),
])
def test_a_bad_text_is_one_sentence_and_exit_1(tmp_path, content, message):
    path = tmp_path / "text.txt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    done = subprocess.run([sys.executable, str(ROOT / "data" / "prepare.py"), str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()  # nothing written for a text that was refused


# ---------------------------------------------------------------- a text larger than it needs to be in memory
LINE = "naïve café, 日本語, 🙂\n"  # between the 1 MB blocks of ASCII: multi-byte characters throughout
PEAK = """
import sys
sys.path.insert(0, {root!r})
{code}
from data.prepare import peak_mb
print("peak MB", peak_mb())
"""


def peak_mb_of(code):
    """Run `code` in a fresh Python and return its peak resident memory in MB. (Linux's VmHWM, which
    prepare.peak_mb reads: ru_maxrss, of the child or RUSAGE_CHILDREN, would include this test
    process, whose memory the child inherits on Linux when it starts.)"""
    done = subprocess.run([sys.executable, "-c", PEAK.format(root=str(ROOT), code=code)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split("peak MB")[-1])


def write_words(path, megabytes, seed=0):
    """A text of random lower-case words in lines, written 1 MB at a time with NumPy, each MB
    followed by LINE -> its number of characters."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     \n", dtype=np.uint8)  # words of about 5 letters
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(letters[rng.integers(0, len(letters), 2 ** 20)].tobytes())
            f.write(LINE.encode("utf-8"))
    return megabytes * (2 ** 20 + len(LINE))


def test_a_256_mb_text_is_prepared_and_read_in_a_small_fraction_of_its_size(tmp_path):
    # The bound: the text is 256 MB and its uint16 ids 512 MB, so a process that held either whole, or
    # a map that kept every page it read, would pass 100 MB. Python with NumPy starts at about 35 MB,
    # and measured here both preparing and reading peaked at about 45 MB.
    text, out = tmp_path / "words.txt", tmp_path / "words"
    try:
        n_chars = write_words(text, 256)
        peak = peak_mb_of(f"from data import prepare; prepare.main([{str(text)!r}, '--out', {str(out)!r}])")
        print(f"preparing: peak {peak:.0f} MB")
        assert peak < 100, f"preparing a 256 MB text peaked at {peak:.0f} MB"
        data = open_prepared(out)
        assert data["n_chars"] == n_chars and data["dtype"] == "uint16"
        assert data["itos"] == sorted(set("abcdefghijklmnopqrstuvwxyz \n" + LINE)) + ["_"]
        with open(text, "rb") as f:  # the file's two ends, against the ids' two ends
            head, _ = f.read(4096), f.seek(-4096, 2)
            tail = f.read().decode("utf-8")
        decode = lambda ids: "".join(data["itos"][i] for i in ids)  # noqa: E731
        assert decode(data["train"][:4096]) == head.decode("utf-8")
        assert decode(data["val"][-len(tail):]) == tail
        # Every page of train.bin read, one batch of windows at a time, then the capped held-out windows.
        peak = peak_mb_of(f"""
import numpy as np
from data.prepared import open_prepared, windows, held_out_windows
data = open_prepared({str(out)!r})
starts = np.arange(0, len(data["train"]) - 256, 2048)  # one window per 4 KB page
for batch in np.array_split(starts, len(starts) // 1024):
    x0 = windows(data["train"], batch, 256)
held = held_out_windows(data["val"], 256, 2000)
assert held.shape == (2000, 256)
""")
        print(f"reading: peak {peak:.0f} MB")
        assert peak < 100, f"reading every page of train.bin peaked at {peak:.0f} MB"
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # 768 MB that pytest would otherwise keep


# ---------------------------------------------------------------- train.py on a prepared folder
def test_train_py_on_a_prepared_folder_is_the_run_on_the_text_itself(tmp_path):
    """get_batch reads the windows from the file, load_dataset the held-out windows, the checkpoint
    records the text's checksum: the same run, figure and checkpoint as on the text read whole."""
    from torch_version import train as T
    text = tmp_path / "prose.txt"
    text.write_text("It was a dark and stormy night; the rain fell in torrents, except at occasional intervals. " * 60)
    prepare.prepare(text, tmp_path / "prepared")
    flags = ["--max-iters", "6", "--eval-interval", "3", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
             "--batch-size", "4", "--eval-draws", "1", "--final-draws", "1", "--samples", "0", "--no-compile",
             "--quiet"]
    (whole,) = T.main(["--dataset", str(text), "--out", str(tmp_path / "a")] + flags)
    (mapped,) = T.main(["--dataset", str(tmp_path / "prepared"), "--out", str(tmp_path / "b")] + flags)
    assert (whole["nats"], whole["se"], whole["best_step"]) == (mapped["nats"], mapped["se"], mapped["best_step"])
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in "ab")
    assert a["config"]["data_sha256"] == b["config"]["data_sha256"] and a["itos"] == b["itos"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_bench_big_text_measures_preparing_and_training_on_a_generated_text(tmp_path, capsys):
    """The benchmark's machinery on 2 MB and 2 steps (its 500 MB figure is in docs/results.md)."""
    from torch_version.bench import big_text
    big_text.main(["--megabytes", "2", "--steps", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "words_2mb.txt" in out and "beyond the same run on Tiny Shakespeare" in out
    assert (tmp_path / "prepared_words_2mb" / "meta.json").is_file()
