"""Regenerate the lesson notebooks from their py:percent files: convert, execute, clean.

The .py files are the source (readable diffs); each .ipynb is generated from its .py, executed
in full mode so its stored outputs are the real figures, then cleaned: no execution counts, no
timing or kernel details, stable cell ids. Run it after editing a lesson, then commit both files.

    python3 lessons/build.py                 # every lesson, full mode (a few minutes on 2 cores)
    python3 lessons/build.py 01_minimal      # one lesson
    python3 lessons/build.py --fast          # quick look with LESSONS_FAST=1 (do not commit these outputs)
    python3 lessons/build.py --clean-only    # only clean the notebooks as they are (after saving from Jupyter)
"""
import argparse
import base64
import copy
import hashlib
import io
import os
import sys
import time
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
CELL_TIMEOUT = 1800  # seconds per cell; the longest full-mode cell trains for a few minutes
KEEP_NOTEBOOK_METADATA = ("kernelspec", "jupytext")  # the rest (language_info versions, widgets) is volatile
KEEP_CELL_METADATA = ("jupyter", "tags")  # "jupyter" holds source_hidden for the solution cells
PNG_COLOURS = 64  # figures are stored as palette PNGs: 3-4x smaller, and plots use few colours


def lesson_names():
    return sorted(p.stem for p in LESSONS.glob("[0-9][0-9]_*.py"))


def clean(nb):
    """A copy of the notebook without volatile fields: execution counts, timing, kernel versions,
    the way a kernel happened to split printed text. Cell ids come from the cell's own text, so
    regenerating an unchanged cell keeps its id."""
    nb = copy.deepcopy(nb)
    nb.metadata = {k: nb.metadata[k] for k in KEEP_NOTEBOOK_METADATA if k in nb.metadata}
    nb.metadata["language_info"] = {"name": "python"}  # enough for GitHub's syntax highlighting
    nb.metadata.get("jupytext", {}).pop("text_representation", None)  # the .py header filters it out; some
    #                                                                   jupytext versions write it anyway
    seen = set()
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        digest = hashlib.sha1((cell.cell_type + cell.source).encode()).hexdigest()[:8]
        cell.id = digest if digest not in seen else f"{digest}-{len(seen)}"
        seen.add(cell.id)
        if cell.cell_type == "code":
            cell.execution_count = None
            merged = []  # one stream output per run of prints: how a kernel splits them depends on timing
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = None
                if merged and out.output_type == "stream" == merged[-1].output_type and out.name == merged[-1].name:
                    merged[-1].text += out.text
                else:
                    merged.append(out)
            cell.outputs = merged
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def shrink_figures(nb):
    """Re-encode every PNG output with a palette of PNG_COLOURS colours, in place (the repository
    stays light; a line plot loses nothing visible). Done once, after execution, not by clean()."""
    from PIL import Image
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                image = Image.open(io.BytesIO(base64.b64decode(out.data["image/png"]))).convert("RGB")
                buffer = io.BytesIO()
                image.quantize(colors=PNG_COLOURS).save(buffer, "PNG", optimize=True)
                out.data["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return nb


def execute(nb, fast, timeout=CELL_TIMEOUT):
    """Run every cell in a fresh kernel with lessons/ as the working folder, as Jupyter would."""
    from nbclient import NotebookClient
    os.environ["LESSONS_FAST"] = "1" if fast else "0"
    os.environ.pop("MPLBACKEND", None)  # CI sets Agg; the stored notebooks need inline PNG figures
    # One BLAS / OpenMP thread: the lessons' models are small, the numbers no longer depend on
    # the machine's thread count, and on a busy 2-core machine two threads per process were
    # 10x slower or worse (lesson 2's 600-step runs: 127-205 s against 9-16 s).
    os.environ["OMP_NUM_THREADS"] = "1"
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(LESSONS)}}).execute()
    return nb


def cells_of(nb):
    """What must agree between a .py file and its notebook: the type and text of every cell."""
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson names such as 01_minimal (default: all)")
    parser.add_argument("--fast", action="store_true", help="execute with LESSONS_FAST=1")
    parser.add_argument("--clean-only", action="store_true", help="do not convert or execute, only clean")
    args = parser.parse_args(argv)
    import jupytext
    import nbformat
    names = args.lessons or lesson_names()
    unknown = [n for n in names if not (LESSONS / f"{n}.py").is_file()]
    if unknown:
        parser.error(f"no lesson named {', '.join(unknown)}; the lessons are {', '.join(lesson_names())}")
    for name in names:
        py, ipynb = LESSONS / f"{name}.py", LESSONS / f"{name}.ipynb"
        if args.clean_only:
            if not ipynb.is_file():
                sys.exit(f"error: {ipynb.name} does not exist yet; run without --clean-only to create it.")
            nb = nbformat.read(ipynb, as_version=4)
        else:
            start = time.time()
            nb = shrink_figures(execute(jupytext.read(py), args.fast))
            print(f"{name}: executed in {'fast' if args.fast else 'full'} mode in {time.time() - start:.0f} s")
        nb = clean(nb)
        if cells_of(nb) != cells_of(jupytext.read(py)):
            sys.exit(f"error: {ipynb.name} and {py.name} have different cells; edit the .py and rebuild.")
        tmp = ipynb.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, ipynb)  # atomic: an interrupted build never leaves half a notebook
        print(f"{name}: wrote {ipynb.name} ({ipynb.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
