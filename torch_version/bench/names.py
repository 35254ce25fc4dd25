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

With --noise all it also trains the same backbone, with the same budget, on the two other forward
processes (uniform.py: random letters for noise; gaussian.py: Gaussian noise on one-hot
embeddings; docs/noise_processes.md), each scored on its own NELBO, and then samples 1,000
names from each model (ancestral samplers, 64 steps; the AR twin with its KV cache) and scores
them as evaluate.py does: valid, copied, new, length distance, AR-judge perplexity, entropy.

    python3 torch_version/bench/names.py                 # about 10 minutes on 2 CPU cores
    python3 torch_version/bench/names.py --ablations     # and 6 more diffusion runs
    python3 torch_version/bench/names.py --noise all     # masked, uniform and Gaussian noise, and the AR twin
    python3 torch_version/bench/names.py --max-iters 500 # a shorter budget for both

Changes from train.py --both: its own checkpoint folder (out/bench_names/), so the default
checkpoints are left alone, the wall time of each run, the ablations and the other noises.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from common.files import output_problem  # noqa: E402
from data.fetch import DatasetError  # noqa: E402
from torch_version.engine.checkpoints import CheckpointError  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version import diffusion, train as T  # noqa: E402

ABLATIONS = {  # one change at a time from the default diffusion config
    "rotary positions only": ["--positions", "rope"],
    "learned positions only": ["--positions", "learned"],
    "ReLU squared": ["--activation", "relu2"],
    "continuous-time loss": ["--objective", "time"],
    "dropout 0.1": ["--dropout", "0.1"],
    "AdamW only (no Muon)": ["--optimizer", "adamw"],
}


NOISES = {"uniform diffusion NELBO": "uniform", "Gaussian diffusion NELBO": "gaussian"}
SAMPLES = 1000  # names per model in the sample table
SAMPLE_STEPS = 64  # reverse steps of every diffusion sampler in it


def run(flags, data, ar, label):
    """Train one model with train.py's flags; its held-out figure at the best checkpoint and its
    wall time. -> the train result, with nats, se, draw_se and args added."""
    args = T.parse_args(flags + ["--quiet", "--samples", "0"])
    start = time.time()
    result = T.train(args, data, ar, say=lambda *a: None)
    nats, se, draw_se = T.final_evaluation(result, data, args)
    seconds = time.time() - start
    print(f"{label:<26}{nats:>10.4f}{se:>9.4f}{draw_se:>9.4f}{nats / math.log(2):>11.4f}{result['best_step']:>11}"
          f"{result['seconds'] - result['eval_seconds']:>9.1f}{seconds:>9.1f}", flush=True)
    result.update(nats=nats, se=se, draw_se=draw_se, args=args, label=label)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablations", action="store_true", help="also train the diffusion variants in ABLATIONS")
    parser.add_argument("--noise", choices=["masked", "all"], default="masked", help="all: also train uniform-"
                        "and Gaussian-noise diffusion with the same backbone and budget, and score samples of all four")
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
    print(f"{'held-out, nats/char':<26}{'value':>10}{'+- items':>9}{'+- draws':>9}{'bits/char':>11}{'best step':>11}"
          f"{'train s':>9}{'total s':>9}")
    masked = run(flags, data, False, "diffusion NELBO")
    ar = run(flags, data, True, "AR twin NLL")
    print(T.ratio_text(masked, ar))
    if ours.noise == "all":
        others = [run(flags + ["--noise", noise], data, False, label) for label, noise in NOISES.items()]
        for r in others:
            print(f"{r['label'].split(' NELBO')[0]} / AR: {r['nats'] / ar['nats']:.4f} +- "
                  f"{r['draw_se'] / ar['nats']:.4f} (draws)")
        sample_table([masked] + others, ar, data)
    if ours.ablations:
        print("\ndiffusion, one change at a time:")
        for label, extra in ABLATIONS.items():
            nats = run(flags + extra, data, False, label)["nats"]
            print(f"{'':<26}{nats / masked['nats']:>10.4f} x the default's NELBO")


def sample_table(models, ar, data, n=SAMPLES, steps=SAMPLE_STEPS):
    """n names from each diffusion model and from the AR twin, and held-out names, scored alike
    (evaluate.py's score: the AR twin is the judge; invalid names are counted, not judged)."""
    from torch_version.tools import evaluate as E  # its scoring, as evaluate.py reports it
    from torch_version.sample import generate_ar, make_denoiser, sample_ancestral
    itos, L, device = data["itos"], data["block_size"], ar["args"].device
    mask_id, pad_id = len(itos) - 1, 0
    train_words, real_words = E.words_of(data["train"].cpu(), itos), E.words_of(data["held"].cpu(), itos)
    judge = make_denoiser(ar["model"].eval(), device, ar["args"].precision)
    scorer = lambda ids: E.score(ids, judge, mask_id, itos, pad_id, train_words, real_words)  # noqa: E731
    print(f"\n{n} samples per model ({steps} steps per diffusion sampler); judge: the AR twin; unigram entropy "
          f"of the training names: {E.unigram_entropy(E.scored_tokens(data['train'].cpu(), pad_id)):.3f} bits")
    print(f"{'model':<10}" + E.table_header("names"))
    rows = []
    for r in models + [ar, None]:
        generator = torch.Generator().manual_seed(r["args"].seed if r else 1337)
        start = time.time()
        if r is None:  # real held-out names, scored the same way
            ids, nfe, name = data["held"].cpu()[torch.randperm(len(data["held"]), generator=generator)[:n]], None, "data"
        elif r is ar:
            ids, _ = generate_ar(r["model"].eval(), torch.empty((n, 0), dtype=torch.long), L, generator, mask_id,
                                 stop_id=pad_id, device=device, dtype=r["args"].precision)
            nfe, name = (diffusion.ar_targets(ids, pad_id) >= 0).sum(1).double().mean().item(), "AR twin"
        elif r["noise"] == "masked":
            out = sample_ancestral(make_denoiser(r["model"].eval(), device, r["args"].precision), n, L, mask_id,
                                   generator, steps)
            ids, nfe, name = out.samples, E.nfe_per_sample(out.trajectory).double().mean().item(), "masked"
        else:
            ids, _ = T.sample_noise(r["model"], r["noise"], n, L, generator, device, r["args"].precision, steps)
            nfe, name = float(steps), r["noise"]
        row = dict(sampler=name, setting="-" if r is None else "KV cache" if r is ar else f"{steps} steps", nfe=nfe,
                   seconds=None if r is None else time.time() - start, **scorer(ids.cpu()))
        rows.append(row)
        print(f"{'':<10}" + E.table_line(row, "names"), flush=True)
    return rows


if __name__ == "__main__":
    cli.run(main)
