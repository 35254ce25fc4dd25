"""Benchmark: names on a CPU: the diffusion NELBO beside the AR twin's loss, same budget.

What it measures: train.py's default names config trained twice, as the diffusion denoiser and
as the autoregressive twin (same backbone, causal attention, next-character loss), with the
same steps, batch, optimizer and regularisation. Each is scored at its best held-out checkpoint
on the same 3,204 held-out names, in nats per character counting one end-of-name per name
(SPEC 5): the diffusion model by its NELBO (an upper bound on its NLL, discrete form over all
16 mask sizes of every name), the AR twin by its exact NLL.

With --ablations it also trains the diffusion model with one choice changed at a time (the
positions, the activation, the training objective, dropout, the optimizer) and prints each
one's NELBO: the measured reasons behind the defaults (about 5 minutes each).

    python3 torch_version/bench_names.py                 # about 10 minutes on 2 CPU cores
    python3 torch_version/bench_names.py --ablations     # and 6 more diffusion runs
    python3 torch_version/bench_names.py --max-iters 500 # a shorter budget for both

Changes from train.py --both: its own checkpoint folder (out/bench_names/), so the default
checkpoints are left alone, the wall time of each run, and the ablations.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from common.files import output_problem  # noqa: E402
from data.fetch import DatasetError  # noqa: E402
from torch_version.model import CheckpointError  # noqa: E402
from torch_version import devices, train as T  # noqa: E402

ABLATIONS = {  # one change at a time from the default diffusion config
    "rotary positions only": ["--positions", "rope"],
    "learned positions only": ["--positions", "learned"],
    "ReLU squared": ["--activation", "relu2"],
    "continuous-time loss": ["--objective", "time"],
    "dropout 0.1": ["--dropout", "0.1"],
    "AdamW only (no Muon)": ["--optimizer", "adamw"],
}


def run(flags, data, ar, label):
    """Train one model with train.py's flags; its held-out figure at the best checkpoint and its wall time."""
    args = T.parse_args(flags + ["--quiet", "--samples", "0"])
    start = time.time()
    result = T.train(args, data, ar, say=lambda *a: None)
    nats, se = T.final_evaluation(result, data, args)
    seconds = time.time() - start
    print(f"{label:<26}{nats:>10.4f}{se:>9.4f}{nats / math.log(2):>11.4f}{result['best_step']:>11}"
          f"{result['seconds'] - result['eval_seconds']:>9.1f}{seconds:>9.1f}", flush=True)
    return nats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablations", action="store_true", help="also train the diffusion variants in ABLATIONS")
    ours, rest = parser.parse_known_args(argv)
    flags = ["--out", str(T.OUT_DIR / "bench_names")] + rest  # any train.py flag, e.g. --max-iters, --seed
    args = T.parse_args(flags)
    if args.threads:
        torch.set_num_threads(args.threads)
    if problem := output_problem(args.out):
        sys.exit(f"error: {problem}")
    devices.setup(args.device, args.deterministic)
    try:
        data = T.load_dataset(args.dataset, args.data_dir, args.device)  # on the device the models train on
    except DatasetError as err:
        sys.exit(f"error: {err}")
    try:
        compare(ours, flags, data)
    except (CheckpointError, T.TrainingError) as err:  # a run reports only its own figures, or nothing
        sys.exit(f"error: {err}")


def compare(ours, flags, data):
    """The two models' table and ratio, then the ablations if asked for."""
    args = T.parse_args(flags)
    print(f"{args.dataset}: {data['n_train']:,} training names, {len(data['held']):,} held out; "
          f"{args.n_layer} layers, n_embd {args.n_embd}, {args.max_iters} steps of {args.batch_size}, on {args.device}")
    print(f"{'held-out, nats/char':<26}{'value':>10}{'+- se':>9}{'bits/char':>11}{'best step':>11}"
          f"{'train s':>9}{'total s':>9}")
    diffusion = run(flags, data, False, "diffusion NELBO")
    ar = run(flags, data, True, "AR twin NLL")
    print(f"ratio diffusion / AR: {diffusion / ar:.4f}")
    if ours.ablations:
        print("\ndiffusion, one change at a time:")
        for label, extra in ABLATIONS.items():
            nats = run(flags + extra, data, False, label)
            print(f"{'':<26}{nats / diffusion:>10.4f} x the default's NELBO")


if __name__ == "__main__":
    cli.run(main)
