"""The lessons: each notebook agrees with its py:percent twin, is committed clean and with its
full-mode outputs, and runs from top to bottom in fast mode (LESSONS_FAST=1)."""
import importlib.util
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
spec = importlib.util.spec_from_file_location("lessons_build", LESSONS / "build.py")
build = importlib.util.module_from_spec(spec)  # lessons/build.py: clean(), cells_of(), lesson_names()
spec.loader.exec_module(build)

NAMES = build.lesson_names()
CELL_TIMEOUT = 300  # seconds per cell: a hung kernel fails the test instead of stalling CI


def notebook(name):
    return nbformat.read(LESSONS / f"{name}.ipynb", as_version=4)


def test_the_three_tier_lessons_exist():
    assert {"01_minimal", "02_pure", "03_torch"} <= set(NAMES)


def test_solutions_live_in_their_own_file_which_is_no_lesson():
    """A learner who reads a lesson meets no solution by accident (lessons/README.md, "Exercises")."""
    assert (LESSONS / "solutions.py").is_file() and "solutions" not in NAMES and "checks" not in NAMES
    for name in NAMES:
        text = (LESSONS / f"{name}.py").read_text()
        assert not re.search(r"^def \w+_solution\(", text, re.M), f"{name}.py defines a solution: move it to solutions.py"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_and_py_file_have_the_same_cells(name):
    assert (LESSONS / f"{name}.ipynb").is_file(), f"{name}.ipynb is missing: run python3 lessons/build.py {name}"
    py, ipynb = jupytext.read(LESSONS / f"{name}.py"), jupytext.read(LESSONS / f"{name}.ipynb")
    assert build.cells_of(ipynb) == build.cells_of(py), f"{name}: .py and .ipynb disagree; rebuild the notebook"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
    nb = notebook(name)
    assert build.clean(nb) == nb, f"{name}.ipynb has execution counts or volatile metadata: run build.py --clean-only"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_holds_full_mode_outputs_without_errors(name):
    outputs = [out for cell in notebook(name).cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    assert "full mode" in text and "fast mode" not in text  # the setup cell says which mode ran
    assert any("image/png" in out.get("data", {}) for out in outputs), "no figure was stored"
    assert not [out for out in outputs if out.output_type == "error"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_in_fast_mode(name, monkeypatch):
    from nbclient import NotebookClient
    monkeypatch.setenv("LESSONS_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # figures are drawn but not encoded: faster, no display needed
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as lessons/build.py: small models, and on a busy 2-core
    #                                            machine two threads per process ran these notebooks 3x slower
    nb = notebook(name)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(LESSONS)}}).execute()  # raises on any failing cell
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "fast mode" in text


@pytest.mark.parametrize("name", NAMES)
def test_every_lesson_checks_its_exercises_with_the_one_shared_check(name):
    """One `check` (lessons/checks.py), each lesson binding its tolerance: no lesson defines its own."""
    text = (LESSONS / f"{name}.py").read_text()
    assert "def check(" not in text and '"checks", ROOT / "lessons" / "checks.py"' in text
