"""The two datasets of the series, shipped with the code and verified by checksum.

    names.txt                  32,033 US first names (SSA, 2018), one per line, at the project root
    data/tiny_shakespeare.txt  1.1M characters of Shakespeare's plays
Both are public domain and committed, so a clone works with no network (data/README.md).

Where a file comes from, first match wins:
    1. a folder you name: --data-dir DIR, or the environment variable DIFFUSION_DATA_DIR
    2. the shipped copy: names.txt at the project root, data/tiny_shakespeare.txt
    3. only when that copy was deleted: a download from its public address, saved back there
Every file is checked against its SHA-256 before use; a mismatch is refused, never used.

    python3 data/fetch.py                 # check both and print their statistics
    python3 data/fetch.py --restore       # download a deleted or damaged shipped copy again
    python3 data/fetch.py --data-dir DIR  # check the copies in DIR instead
"""
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project root
sys.path.insert(0, str(ROOT))  # so `common` imports when this file runs as a script
from common.files import atomic_write, read_problem  # noqa: E402

DATASETS = {  # name: (public address, sha256, the shipped copy)
    "names.txt": (
        "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt",
        "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
        ROOT / "names.txt",
    ),
    "tiny_shakespeare.txt": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ROOT / "data" / "tiny_shakespeare.txt",
    ),
}


class DatasetError(Exception):
    """A dataset cannot be had; the message is one sentence that says what to do."""


def sha256(path):
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise DatasetError(read_problem(err, path)) from None


def _in_project(path):
    """`path` as the git command that restores it names it: relative to the project root when inside it."""
    path = Path(path).absolute()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _checked(path, expected, shipped=False):
    if sha256(path) != expected:
        how = (f"restore it with `git checkout -- {_in_project(path)}` or `python3 data/fetch.py --restore`"
               if shipped else "point --data-dir at a good copy")
        raise DatasetError(f"{path} does not match its published SHA-256 checksum, so it was not used; {how}.")
    return path


def dataset_path(name, data_dir=None, download=True):
    """Path to a verified copy of `name` ('names.txt' or 'tiny_shakespeare.txt'): the folder the
    user named, else the shipped copy, else (deleted) a download saved where the copy belongs."""
    url, expected, kept = DATASETS[name]
    data_dir = data_dir or os.environ.get("DIFFUSION_DATA_DIR")
    if data_dir:  # a folder the user named is the only place looked at
        path = Path(data_dir).expanduser() / name
        if not path.is_file():
            raise DatasetError(f"{name} is not in {data_dir} (named by --data-dir or "
                               f"DIFFUSION_DATA_DIR); put it there or unset that folder to download it.")
        return _checked(path, expected)
    if kept.is_file():
        return _checked(kept, expected, shipped=True)
    if not download:
        raise DatasetError(f"{name} is not at {kept}; restore it with `git checkout -- {_in_project(kept)}`, "
                           f"or name a folder that holds it with --data-dir or DIFFUSION_DATA_DIR.")
    return download_copy(name)


def download_copy(name):
    """Download `name` from its public address, check its SHA-256 and save it as the shipped copy
    (whole or not at all). DatasetError, one sentence, when that fails."""
    url, expected, kept = DATASETS[name]
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        raise DatasetError(f"{name} could not be downloaded from {url} ({err}); "
                           f"restore it with `git checkout -- {_in_project(kept)}`, or name a folder that "
                           f"holds it with --data-dir or DIFFUSION_DATA_DIR.") from None
    if hashlib.sha256(payload).hexdigest() != expected:
        raise DatasetError(f"the download of {name} from {url} does not match its published "
                           f"SHA-256 checksum, so it was not saved; try again later.")
    atomic_write(kept, lambda f: f.write(payload))  # whole or not at all
    return kept


def read_text(path):
    """A UTF-8 text file as a string, without a byte-order mark (an editor's, not a character of
    the data); DatasetError, one sentence, when it cannot be read."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DatasetError(read_problem(err, path)) from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a UTF-8 text file.") from None


def load_names(data_dir=None):
    """The names, lower-case, in file order."""
    text = read_text(dataset_path("names.txt", data_dir))
    return [w.strip() for w in text.splitlines() if w.strip()]


def load_text(data_dir=None):
    """Tiny Shakespeare as one string."""
    return read_text(dataset_path("tiny_shakespeare.txt", data_dir))


def split_names(words):
    """Deterministic held-out split, the same in every tier: every 10th name is held out.
    names.txt is sorted by popularity, so the held-out set spans common and rare names alike."""
    train = [w for i, w in enumerate(words) if i % 10 != 0]
    held_out = [w for i, w in enumerate(words) if i % 10 == 0]
    return train, held_out


def split_text(text):
    """nanoGPT's split: the first 90% of the characters train, the last 10% validate."""
    n = int(0.9 * len(text))
    return text[:n], text[n:]


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Check names.txt and tiny_shakespeare.txt against their SHA-256 "
                                     "and print their statistics.")
    parser.add_argument("--data-dir", help="a folder that holds both files (else DIFFUSION_DATA_DIR, else the "
                        "shipped copies)")
    parser.add_argument("--restore", action="store_true", help="download the shipped copies that are missing or "
                        "damaged (needs network access)")
    args = parser.parse_args()
    try:
        if args.restore:
            for name, (_, expected, kept) in DATASETS.items():
                if not kept.is_file() or sha256(kept) != expected:
                    download_copy(name)
                    print(f"restored {kept}")
        words = load_names(args.data_dir)
        text = load_text(args.data_dir)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    lengths = [len(w) for w in words]
    print(f"names.txt: {len(words):,} names, {len(set(''.join(words)))} letters, "
          f"lengths {min(lengths)}-{max(lengths)} (mean {sum(lengths) / len(words):.2f})")
    print(f"tiny_shakespeare.txt: {len(text):,} characters, {len(set(text))} distinct")
