"""Benchmark: a text larger than memory wants: prepared once, then trained on from its files.

What it measures: the peak resident memory (Linux's VmHWM) of `python3 data/prepare.py` on a
generated text of --megabytes MB (random words, with multi-byte characters throughout), and of
train.py training on the prepared folder, beside the same training on a small prepared text (Tiny
Shakespeare): what the big text costs beyond the model, optimizer and torch's own. Each runs in a
fresh process, so nothing of this one counts.

    python3 torch_version/bench/big_text.py                    # 500 MB: a few minutes on 2 CPU cores
    python3 torch_version/bench/big_text.py --megabytes 50     # quicker

Changes from bench/names.py: it trains on a prepared folder (data/prepare.py, data/prepared.py)
and measures memory, not likelihood.
"""
import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # so `common` and `data` import from any folder
from common import cli  # noqa: E402
from common.files import output_problem  # noqa: E402

OUT = ROOT / "torch_version" / "out" / "big_text"
MEGABYTES = 500
STEPS = 300            # training steps on each prepared text, small preset's model and batch
LINE = "naïve café, 日本語, 🙂\n"  # after every MB of ASCII words: multi-byte characters throughout
PEAK = "\nfrom data.prepare import peak_mb\nprint('peak MB', peak_mb())\n"  # appended to each child's code


def write_words(path, megabytes, seed=0):
    """Random lower-case words in lines, written 1 MB at a time (never whole in memory)."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     \n", dtype=np.uint8)  # words of about 5 letters
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(letters[rng.integers(0, len(letters), 2 ** 20)].tobytes())
            f.write(LINE.encode("utf-8"))


def child(code):
    """Run `code` in a fresh Python from the project root; (its stdout, its peak memory in MB, seconds)."""
    start = time.time()
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + code + PEAK],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"error: a measured run failed: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout, float(re.findall(r"peak MB ([0-9.]+)", done.stdout)[-1]), time.time() - start


def train_code(folder, steps, out):
    """train.py on a prepared folder: the small Shakespeare preset's model and batch, on the CPU."""
    flags = ["--dataset", str(folder), "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
             "--batch-size", "32", "--max-iters", str(steps), "--eval-interval", str(steps), "--eval-draws", "1",
             "--final-draws", "1", "--samples", "0", "--quiet", "--device", "cpu", "--out", str(out / Path(folder).name)]
    return f"from torch_version import train\ntrain.main({flags!r})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=cli.count(1, 100_000), default=MEGABYTES, help="size of the generated text")
    parser.add_argument("--steps", type=cli.count(1, 1_000_000), default=STEPS, help="training steps on each text")
    parser.add_argument("--out", default=str(OUT), help="folder for the text, the prepared folders and checkpoints")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if problem := output_problem(out):
        sys.exit(f"error: {problem}")
    out.mkdir(parents=True, exist_ok=True)
    text = out / f"words_{args.megabytes}mb.txt"
    if not text.is_file() or text.stat().st_size < args.megabytes * 2 ** 20:
        write_words(text, args.megabytes)
    print(f"{text}: {text.stat().st_size / 1e6:,.0f} MB")
    rows = []
    for name, source in (("tiny_shakespeare.txt", ROOT / "data" / "tiny_shakespeare.txt"), (text.name, text)):
        folder = out / f"prepared_{Path(name).stem}"
        _, prep_peak, prep_s = child(f"from data import prepare\nprepare.main([{str(source)!r}, '--out', {str(folder)!r}])")
        _, train_peak, train_s = child(train_code(folder, args.steps, out))
        rows.append((name, prep_peak, prep_s, train_peak, train_s))
    print(f"\n{'text':<28}{'prepare: peak MB':>17}{'s':>7}{'train: peak MB':>16}{'s':>7}")
    for name, prep_peak, prep_s, train_peak, train_s in rows:
        print(f"{name:<28}{prep_peak:>17.0f}{prep_s:>7.1f}{train_peak:>16.0f}{train_s:>7.1f}")
    (small, *_), (big, *_) = rows[0][3:], rows[1][3:]
    print(f"training on the {args.megabytes} MB text took {big - small:+.0f} MB beyond the same run on Tiny "
          f"Shakespeare ({args.steps} steps, 0.8M parameters, batch 32 x 256)")


if __name__ == "__main__":
    cli.run(main)
