"""Shared test helpers. The datasets ship with the code (names.txt, data/tiny_shakespeare.txt), so
the tests read them from the clone itself: no variable, no network, no folder beside the project."""


def write_names_like(path, n=200, seed=0):
    """A small names-like dataset at `path`: n lowercase 'names' of 2-7 letters from a-h, one per line."""
    import numpy as np
    rng = np.random.default_rng(seed)
    path.write_text("\n".join("".join(rng.choice(list("abcdefgh"), rng.integers(2, 8))) for _ in range(n)) + "\n")
    return path
