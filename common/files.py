"""Files that are written whole, readable by whoever may read them, and refused in one sentence.

Shared by every tier and tool: the checkpoints, reports and downloads all go through here.
- atomic_write(path, write): a temporary file in the same folder, then os.replace, so a run killed
  mid-write leaves the previous file whole. The temporary file gets the mode a plain open() would
  give (0666 less the umask), not mkstemp's 0600, and leftovers of earlier killed writes of the
  same file are removed first.
- output_problem(folder): None if the folder can be written in, or made; else one sentence,
  checked before any long computation (it creates nothing).
- read_problem(error, path): the sentence for an OSError met while reading a file.
"""
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, suffix=".tmp"):
    """write(file_object) into a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f"{path.name}.*{suffix}"):  # from writes killed before their rename
        leftover.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_problem(folder):
    """None if `folder` is a folder this user can write in, or one that can be made (its nearest
    existing parent is a writable folder); else one sentence. Nothing is created here."""
    folder = Path(folder).absolute()
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder; give --out a folder."
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write in" if existing == folder else "create a folder in"
        return f"cannot {what} {existing} (permission denied); give --out a folder of yours."
    return None


def read_problem(error, path):
    """The sentence for an OSError met reading `path`."""
    if isinstance(error, PermissionError):
        return f"cannot read {path}: permission denied (ask its owner, or copy it somewhere you can read)."
    if isinstance(error, IsADirectoryError):
        return f"{path} is a folder, not a file."
    return f"cannot read {path} ({error.strerror or type(error).__name__})."
