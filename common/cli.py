"""Argument types shared by every command line of the project (the tiers, the tools, data/fetch.py).

Each is an argparse `type=`: it turns the text into a number or refuses it in one sentence, which
argparse prints after the usage line before it exits with status 2. One set of rules for every
flag of a kind, so that no script accepts what another refuses:

- counts are integers in a range (a 0 never stands for "the default");
- numbers are finite ("inf" and "nan" parse as floats, and pass a plain `x > 0`), in a range;
- seeds are integers from 0 to 2^63 - 1, what both NumPy and torch accept.
"""
import argparse
import math
import sys

SEED_MAX = 2**63 - 1
MANY = 10**9  # an upper end for counts that have no natural one: large, but still allocatable


def count(lo=1, hi=MANY):
    """An integer from lo to hi."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        if not lo <= value <= hi:
            span = f"of at least {lo:,}" if hi == MANY else f"from {lo:,} to {hi:,}"
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, not {text!r}")
        return value
    return parse


def number(lo=None, hi=None, lo_open=False, hi_open=False):
    """A finite float in [lo, hi]; lo_open / hi_open exclude that end (None: no bound)."""
    left, right = "(" if lo_open or lo is None else "[", ")" if hi_open or hi is None else "]"
    where = f"in {left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"must be a finite number {where}, not {text!r}")
        return value
    return parse


seed = count(0, SEED_MAX)
positive = number(0, lo_open=True)                    # learning rates, peaks: finite and above 0
fraction = number(0, 1, hi_open=True)                 # dropout, EMA decay: [0, 1)
probability = number(0, 1, lo_open=True)              # thresholds, top-p: (0, 1]
temperature = number(1e-3, 1e3)                       # below 1e-3, logits / T overflow float64's range


def list_of(item):
    """A comma-separated list, each entry parsed (and checked) by `item`, e.g. list_of(count(1))."""
    def parse(text):
        values = [item(v.strip()) for v in text.split(",") if v.strip()]  # an entry's own sentence if it is bad
        if not values:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list, not {text!r}")
        return values
    return parse


def run(main):
    """Run a script's main(); Ctrl-C gets one line, not a traceback, and the shell's exit status 130.
    (Scripts whose work can be resumed catch it themselves first and say how.)"""
    try:
        main()
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C); nothing was left half-written.", file=sys.stderr)
        sys.exit(130)
