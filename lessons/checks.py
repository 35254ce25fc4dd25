"""The check that every lesson's exercises run: PASS, FAIL (and why) or 'not yet'.

Each lesson loads this file by its path (so it works from any working folder) and binds its own
tolerance: lesson 1 compares float64 results to 1e-12, the others to 1e-9, and an exercise whose
reference is itself noisy (a frequency of random draws) passes its own `atol`.

This file is not a lesson: lessons/build.py takes only files named NN_name.py.
"""
import numpy as np


def check(name, answer, reference, strict=False, atol=1e-9):
    """Prints PASS, FAIL (and why) or 'not yet'. Raises only when strict (the solutions use that).
    rtol 1e-6: float64 rounding is far below it, a wrong formula far above it."""
    reference = np.asarray(reference, dtype=float)
    answer = None if answer is None else np.asarray(answer, dtype=float)
    if answer is None:
        verdict = "not yet (the stub still returns None)"
    elif answer.shape != reference.shape:
        verdict = f"FAIL, shape {answer.shape} but the reference has shape {reference.shape}"
    elif not np.allclose(answer, reference, rtol=1e-6, atol=atol):
        verdict = f"FAIL, largest difference {np.abs(answer - reference).max():.3g}"
    else:
        verdict = "PASS"
    print(f"{name}: {verdict}")
    assert verdict == "PASS" or not strict, f"{name} did not pass"
