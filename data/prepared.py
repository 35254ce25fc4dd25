"""Reading a prepared text: token ids on disk, mapped into memory, never loaded whole.

data/prepare.py turns a UTF-8 text of any size into a folder of three files:

    train.bin   the first int(0.9 * n_chars) characters as token ids (nanoGPT's split, data/fetch.split_text)
    val.bin     the rest: the held-out characters
    meta.json   the vocabulary (itos), the ids' dtype, the counts, the text's SHA-256 and where it came from

The .bin files are raw little-endian ids, uint16 when the vocabulary fits (65,536 symbols) and
uint32 otherwise, one id per character, nothing else: np.memmap reads them as arrays, and the
operating system brings in only the pages a batch touches. meta.json is written last, so a folder
that has one is whole (prepare.py).

    from data.prepared import open_prepared, windows, held_out_windows
    data = open_prepared("data/prepared/my_text")          # np.memmap arrays, read-only
    x0 = windows(data["train"], starts, 256)               # (B, 256) int64, from B places in the file
    held = held_out_windows(data["val"], 256, 2000)        # (<=2000, 256) int64, today's held-out windows

Only NumPy is needed here: the torch tier turns these arrays into tensors (torch.from_numpy).
"""
import json
import mmap
from pathlib import Path

import numpy as np

from data.fetch import DatasetError

FORMAT = 1             # meta.json's "format": bumped whenever the files change meaning
TRAIN, VAL, META = "train.bin", "val.bin", "meta.json"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}  # little-endian on every machine


class PreparedError(DatasetError):
    """A prepared folder that cannot be used, or a text that cannot be prepared; one sentence that
    says what to do. A DatasetError, so the scripts that catch that one catch this one too."""


def open_prepared(folder):
    """A prepared folder -> dict(train, val, itos, stoi, sha256, dtype, n_chars, n_train, n_val, source).

    train and val are read-only np.memmap arrays of ids; nothing of them is read yet. sha256 is the
    text's (its UTF-8 bytes without a byte-order mark), the checksum a checkpoint records. The files'
    sizes are checked against meta.json, so a damaged or half-copied folder is refused, not used."""
    folder = Path(folder)
    again = f"prepare it again with `python3 data/prepare.py TEXT --out {folder}`"
    if not folder.is_dir():
        raise PreparedError(f"{folder} is not a folder of prepared data; make one with `python3 data/prepare.py TEXT`.")
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PreparedError(f"{folder} has no {META}: its preparation did not finish; {again}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise PreparedError(f"{folder / META} cannot be read as JSON; {again}.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PreparedError(f"{folder} was prepared in another format than this code reads ({FORMAT}); {again}.")
    try:
        itos, dtype = list(meta["itos"]), DTYPES[meta["dtype"]]
        counts = {TRAIN: int(meta["n_train"]), VAL: int(meta["n_val"])}
        sha256 = str(meta["sha256"])
    except (KeyError, TypeError, ValueError):
        raise PreparedError(f"{folder / META} lacks a field this code needs or has a bad one; {again}.") from None
    arrays = {}
    for name, count in counts.items():
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size != count * dtype.itemsize or count == 0:
            found = "is missing" if size is None else f"holds {size:,} bytes"
            raise PreparedError(f"{path} {found}, but {META} says {count:,} ids of {dtype.itemsize} bytes; {again}.")
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
    return dict(train=arrays[TRAIN], val=arrays[VAL], itos=itos, stoi={c: i for i, c in enumerate(itos)},
                sha256=sha256, dtype=meta["dtype"], n_chars=counts[TRAIN] + counts[VAL],
                n_train=counts[TRAIN], n_val=counts[VAL], source=meta.get("source"))


def windows(array, starts, L):
    """The L ids from each of `starts`: (B,) positions -> (B, L) int64, in memory.

    The same as today's `train[start[:, None] + arange(L)]` on a tensor. On a memmap only the pages
    of those B windows are read, through a map opened for this batch alone: a map kept open keeps
    every page it ever read resident, which over a long run is the whole file (5,000 batches of 64
    windows from a 966 MB train.bin: 959 MB resident at the end, against 51 MB this way, for 0.3 ms
    more a batch). nanoGPT re-opens its memmap every batch for the same reason."""
    starts = np.asarray(starts, dtype=np.int64)
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap):  # a whole file's map, not a slice of one
        array = np.memmap(array.filename, dtype=array.dtype, mode="r", offset=array.offset, shape=array.shape)
    return array[starts[:, None] + np.arange(L)].astype(np.int64)  # a copy: the map closes when `array` goes


def held_out_windows(val, L, max_windows=None):
    """Today's held-out windows of the validation ids, (N, L) int64: val[: len // L * L] cut into
    non-overlapping windows of L; when there are more than max_windows, max_windows of them evenly
    spaced from the first (window i * N // max_windows). A large text needs the cap: the 50 MB held
    out of a 500 MB text make about 200,000 windows of 256, far too many to score at every
    evaluation. The same windows are chosen every time, so two evaluations stay comparable."""
    n = len(val) // L
    if n < 2:
        raise PreparedError(f"the held-out split holds {len(val):,} characters, fewer than the two {L}-character "
                            f"windows a standard error needs; prepare a longer text or use a smaller block size.")
    chosen = np.arange(n) if max_windows is None or n <= max_windows else np.arange(max_windows) * n // max_windows
    groups = np.array_split(chosen, -(-len(chosen) // 256))  # a map per 256 windows, so that the pages read
    return np.concatenate([windows(val, group * L, L) for group in groups])  # stay few (see windows)
