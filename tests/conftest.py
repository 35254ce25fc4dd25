"""Tests read the datasets from ../shared/data (beside the project) unless told otherwise."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

if "DIFFUSION_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DIFFUSION_DATA_DIR"] = str(SHARED_DATA)
