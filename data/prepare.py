"""Prepare a UTF-8 text of any size for training: token ids on disk, read back by memory mapping.

What it teaches: how a text larger than memory becomes training data. The file is read twice in
chunks of 256 KiB, never whole: the first pass finds the characters it uses (the vocabulary),
counts them and takes the SHA-256; the second turns each chunk into ids and appends them to
train.bin (the first 90% of the characters) or val.bin (the rest), nanoGPT's split, the same as
data/fetch.split_text. data/prepared.py reads the folder back (np.memmap).

    python3 data/prepare.py my_text.txt                  # -> data/prepared/my_text/
    python3 data/prepare.py my_text.txt --out DIR        # -> DIR/{train.bin, val.bin, meta.json}

The ids are those the torch tier gives the same text (diffusion.build_vocab(..., pad=False) and
encode): the characters in sorted order, then MASK ('_', or a spare symbol when the text uses '_').
A byte-order mark at the start is dropped, as data/fetch.read_text drops it. The folder is whole
or not finished: the ids go to temporary files renamed at the end, and meta.json, which
data/prepared.py looks for first, is written last (an older one is removed before anything else).

Changes from reading the text (data/fetch.read_text, torch_version/train.load_dataset): the same
ids, split and checksum, but memory holds one chunk at a time instead of the text and its ids.
"""
import argparse
import codecs
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the project root
sys.path.insert(0, str(ROOT))  # so `common` and `data` import when this file runs as a script
from common import cli  # noqa: E402
from common.files import atomic_write, output_problem, read_problem  # noqa: E402
from data.prepared import DTYPES, FORMAT, META, TRAIN, VAL, PreparedError  # noqa: E402

OUT_DIR = ROOT / "data" / "prepared"  # default: data/prepared/<the text's name without suffix>/
CHUNK_BYTES = 1 << 18  # bytes read at a time (256 KiB): about 10 MB of memory with its copies; 4 MiB chunks
#                        were slower (3.8 s against 1.4 s for 256 MB, as they no longer fit in the CPU's cache)
TRAIN_FRACTION = 0.9   # the first 90% of the characters train (data/fetch.split_text)
BOM = codecs.BOM_UTF8  # an editor's mark at the start of a file, not a character of the text
N_CODE_POINTS = 0x110000  # every Unicode character has a number below this: lookup tables of this length
MASK, SPARE_SYMBOLS = "_", "~#|^@*"  # torch_version/diffusion.py's; tests/test_prepare.py keeps them equal


# ---------------------------------------------------------------- reading in chunks
def code_points(path, chunk_bytes=CHUNK_BYTES):
    """Yield the text of `path` chunk by chunk: (the bytes read, their characters as code points, a
    uint32 array). The decoder keeps the bytes of a character cut by a chunk's end until the next
    chunk completes it. A byte-order mark at the start is skipped. PreparedError, one sentence, for
    bytes that are not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # strict: a bad byte raises
    with open(path, "rb") as f:
        offset = len(BOM) if f.read(len(BOM)) == BOM else 0  # of the next byte to read
        f.seek(offset)
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            held = len(decoder.getstate()[0])  # bytes of a cut character, from the chunk before
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise PreparedError(not_utf8(path, offset - held + err.start)) from None
            yield chunk, np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # 4 bytes a character
            offset += len(chunk)
    held = len(decoder.getstate()[0])
    if held:  # the file ends inside a character
        raise PreparedError(not_utf8(path, offset - held))


def not_utf8(path, position):
    return f"{path} is not a UTF-8 text file (at byte {position:,})."


# ---------------------------------------------------------------- the vocabulary
def vocabulary(chars):
    """itos for a text of these (sorted, distinct) characters, as diffusion.build_vocab(pad=False)
    makes it: the characters, then MASK, which is '_' unless the text uses it (then a spare symbol)."""
    if MASK not in chars:
        return chars + [MASK]
    spare = [c for c in SPARE_SYMBOLS if c not in chars]
    if not spare:
        raise PreparedError(f"the text uses '_' and all of {SPARE_SYMBOLS!r}, so no symbol is left to show MASK; "
                            f"replace one of them in the text.")
    return chars + spare[:1]


# ---------------------------------------------------------------- the two passes
def scan(path, chunk_bytes=CHUNK_BYTES):
    """Pass 1 -> (sorted distinct characters, number of characters, SHA-256 of the text's bytes)."""
    seen = np.zeros(N_CODE_POINTS, dtype=bool)  # seen[c]: the text uses the character numbered c
    n_chars, digest = 0, hashlib.sha256()
    for chunk, cps in code_points(path, chunk_bytes):
        seen[cps] = True
        n_chars += len(cps)
        digest.update(chunk)  # valid UTF-8 after the mark: the text's own bytes, as train.py hashes them
    return [chr(c) for c in np.flatnonzero(seen)], n_chars, digest.hexdigest()


def write_ids(path, out, itos, dtype, n_train, chunk_bytes=CHUNK_BYTES):
    """Pass 2: each chunk's characters -> ids, the first n_train to train.bin, the rest to val.bin.
    Both are written under temporary names and renamed when complete. -> the SHA-256 of the bytes
    read, which is pass 1's unless the file changed in between."""
    table = np.zeros(N_CODE_POINTS, dtype=DTYPES[dtype])  # table[code point] = id
    table[[ord(c) for c in itos[:-1]]] = np.arange(len(itos) - 1)  # MASK (the last id) is not in the text
    temporary = {name: out / f"{name}.tmp" for name in (TRAIN, VAL)}
    digest = hashlib.sha256()
    try:
        with open(temporary[TRAIN], "wb") as train_file, open(temporary[VAL], "wb") as val_file:
            left = n_train  # training characters still to write
            for chunk, cps in code_points(path, chunk_bytes):
                digest.update(chunk)
                ids = table[cps]  # (n,) one id per character
                train_file.write(ids[:left].tobytes())
                val_file.write(ids[left:].tobytes())
                left = max(0, left - len(ids))
        for name, tmp in temporary.items():
            os.replace(tmp, out / name)
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def prepare(path, out, chunk_bytes=CHUNK_BYTES):
    """Prepare the text at `path` into the folder `out` -> the meta dict written to out/meta.json.
    PreparedError, one sentence, for a text that cannot be read or is too small to split."""
    path, out = Path(path), Path(out)
    try:
        chars, n_chars, sha256 = scan(path, chunk_bytes)
    except OSError as err:
        raise PreparedError(read_problem(err, path)) from None
    if n_chars == 0:
        raise PreparedError(f"{path} holds no text; give it a file with characters in it.")
    n_train = int(TRAIN_FRACTION * n_chars)  # exactly data/fetch.split_text's cut
    if n_chars - n_train < 2:  # the least that makes two held-out windows (of one character)
        raise PreparedError(f"{path} is too short: its last 10% is {n_chars - n_train} character, fewer than the two "
                            f"held-out windows a standard error needs; give it 11 characters or more.")
    itos = vocabulary(chars)
    dtype = "uint16" if len(itos) <= 2 ** 16 else "uint32"
    meta = dict(format=FORMAT, source=str(path.resolve()), sha256=sha256, n_chars=n_chars, n_train=n_train,
                n_val=n_chars - n_train, dtype=dtype, vocab_size=len(itos), itos="".join(itos),
                split=f"the first int({TRAIN_FRACTION} * n_chars) characters train, the rest validate")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / META).unlink(missing_ok=True)  # from here on the folder is not a finished preparation
        if write_ids(path, out, itos, dtype, n_train, chunk_bytes) != sha256:  # then its ids may be wrong
            raise PreparedError(f"{path} changed while it was being prepared; prepare it again when nothing "
                                f"writes to it.")
        atomic_write(out / META, lambda f: f.write(json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8")))
    except OSError as err:  # a full disk, a folder made read-only meanwhile
        raise PreparedError(f"cannot write the prepared files in {out} ({err.strerror or err}).") from None
    return meta


def peak_mb():
    """This process's peak resident memory so far, in MB; None where the OS does not say. Linux's
    VmHWM counts this program only; ru_maxrss there also counts the process it was started from."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2 ** 10  # in kB
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10  # macOS counts bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description="Encode a UTF-8 text file, in chunks, into token ids on disk "
                                     "(train.bin, val.bin) and its vocabulary (meta.json), for training on texts "
                                     "larger than memory.")
    parser.add_argument("path", help="the UTF-8 text file")
    parser.add_argument("--out", help="the folder to write (default: data/prepared/<name of the file>/)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else OUT_DIR / Path(args.path).stem
    if problem := output_problem(out):
        sys.exit(f"error: {problem}")
    began = time.perf_counter()
    try:
        meta = prepare(args.path, out)
    except PreparedError as err:
        sys.exit(f"error: {err}")
    seconds = time.perf_counter() - began
    itos, size = meta["itos"], DTYPES[meta["dtype"]].itemsize
    shown = itos[:-1] if len(itos) <= 200 else itos[:200] + "..."
    print(f"{args.path}: {meta['n_chars']:,} characters, {Path(args.path).stat().st_size / 1e6:,.1f} MB, "
          f"sha256 {meta['sha256'][:16]}...")
    print(f"vocabulary {len(itos):,} ({meta['dtype']} ids): {shown!r}, then MASK {itos[-1]!r}")
    print(f"train.bin has {meta['n_train']:,} tokens ({meta['n_train'] * size / 1e6:,.1f} MB)")
    print(f"val.bin has {meta['n_val']:,} tokens ({meta['n_val'] * size / 1e6:,.1f} MB)")
    peak = peak_mb()
    print(f"written to {out} in {seconds:.2f} s" + (f", peak memory {peak:,.0f} MB" if peak else ""))


if __name__ == "__main__":
    cli.run(main)
