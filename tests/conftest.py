"""Tests read the datasets from ../shared/data (beside the project) unless told otherwise."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

if "DIFFUSION_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DIFFUSION_DATA_DIR"] = str(SHARED_DATA)


def write_names_like(path, n=200, seed=0):
    """A small names-like dataset at `path`: n lowercase 'names' of 2-7 letters from a-h, one per line."""
    import numpy as np
    rng = np.random.default_rng(seed)
    path.write_text("\n".join("".join(rng.choice(list("abcdefgh"), rng.integers(2, 8))) for _ in range(n)) + "\n")
    return path
