"""Benchmark: block diffusion from the AR twin to the masked denoiser: the held-out bound against the block size.

What it measures: block diffusion (processes/block.py, train.py --block B) at every B of BLOCKS,
beside the AR twin and the masked denoiser, one backbone for all, each scored by train.py's final
figure at its best checkpoint on the same held-out characters:
- names at the default budget: train.py's steps, batch, optimizer and seed for every model;
- the small Shakespeare preset at the AR twin's wall time: before the runs, each model's training
  step is timed here (TIMING_ITERS steps, compiled as it trains) and it gets the twin's steps times
  the twin's time per step over its own, so a model whose step costs twice as much (block
  diffusion reads 2L positions) trains half as many steps; and then SAMPLE_TEXTS texts of
  SAMPLE_CHARS characters from each model, their network evaluations, AR-judge perplexity and
  entropy beside the twin's own samples and the validation text (bench/sampling.py's scoring).
The figures go to docs/block_sizes.json (resumable by run: rerun the same command to go on) and
the curve to docs/block_sizes.png.

    python3 torch_version/bench/block_sizes.py                      # both parts: about 2 hours on 2 CPU cores
    python3 torch_version/bench/block_sizes.py --part names         # names only (about 50 minutes)
    python3 torch_version/bench/block_sizes.py --report             # the table and plot from the file, no training
    python3 torch_version/bench/block_sizes.py --short              # the machinery on tiny budgets, a few minutes

Changes from bench/names.py and bench/shakespeare.py: a sweep over --block, the wall-time budget
set from timed steps, the samples, a resumable figure file and the plot.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from common.files import atomic_write, output_problem  # noqa: E402
from data.fetch import DatasetError  # noqa: E402
from torch_version import train as T  # noqa: E402
from torch_version.bench import sampling  # noqa: E402
from torch_version.bench.shakespeare import throughput  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version.engine.checkpoints import CheckpointError, load_checkpoint  # noqa: E402
from torch_version.sample import BLOCK_STEPS, generate_ar, make_denoiser, sample_text, samplers_for  # noqa: E402

PARTS = {  # part: (train.py flags, block sizes; the last one is the window: one block, the masked model's bound)
    "names": (["--dataset", "names"], [1, 2, 4, 8, 16]),
    "shakespeare_small": (["--dataset", "shakespeare", "--size", "small"], [1, 2, 4, 8, 16, 64]),
}
TIMING_ITERS = 40      # timed training steps per model (after bench/shakespeare.py's warm-up) to set its budget
SAMPLE_CHARS = 2000    # characters per sample text, as bench/sampling.py writes them
SAMPLE_TEXTS = 2       # texts per model, one seed each
FILE = Path(__file__).resolve().parents[2] / "docs" / "block_sizes.json"
PLOT = FILE.with_suffix(".png")
SHORT = dict(flags=["--max-iters", "8", "--eval-interval", "4", "--batch-size", "8", "--n-layer", "1", "--n-head", "2",
                    "--n-embd", "16", "--eval-draws", "1", "--final-draws", "2"],
             blocks={"names": [1, 4, 16], "shakespeare_small": [1, 64]}, timing_iters=2, sample_chars=40)


def models(part, blocks):
    """(label, extra train.py flags, ar) for every model of a part: the twin, the masked model, each block size."""
    return ([("AR twin", [], True), ("masked", [], False)]
            + [(f"block {b}", ["--block", str(b)], False) for b in blocks])


def load(path):
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def save(path, results):
    atomic_write(path, lambda f: f.write(json.dumps(results, indent=1).encode("utf-8")))


def timed_budgets(part, flags, data, blocks, results, say):
    """Each model's steps for the twin's wall time, from timed steps; kept in results[part]['timing']."""
    timing = results[part].setdefault("timing", {})
    for label, extra, ar in models(part, blocks):
        if label not in timing:
            args = T.parse_args(flags + extra)
            args.timing_iters = results["timing_iters"]
            devices.setup(args.device, args.deterministic)  # as the training runs will be
            seconds, _, model = throughput(args, data, ar, args.compile)
            timing[label] = seconds
            say(f"{part}, {label}: {seconds * 1e3:.1f} ms per training step")
            del model
    twin_steps = T.parse_args(flags).max_iters
    interval = T.parse_args(flags).eval_interval
    return {label: max(interval, round(twin_steps * timing["AR twin"] / timing[label] / interval) * interval)
            for label in timing}


def train_one(flags, data, ar):
    """One model, trained and scored as train.py does: a dict of its figures."""
    args = T.parse_args(flags + ["--quiet", "--samples", "0"])
    start = time.time()
    result = T.train(args, data, ar, say=lambda *a: None)
    nats, se, draw_se = T.final_evaluation(result, data, args)
    return dict(nats=nats, se=se, draw_se=draw_se, steps=args.max_iters, best_step=result["best_step"],
                train_seconds=result["seconds"] - result["eval_seconds"], seconds=time.time() - start,
                checkpoint=str(result["path"]))


def text_samples(part, results, data, chars, seed, device, say):
    """SAMPLE_TEXTS texts of `chars` characters from every model of a text part, scored by its AR twin
    as bench/sampling.py scores them, beside the validation text scored the same way."""
    runs, itos = results[part]["runs"], data["itos"]
    twin, ckpt_ar = load_checkpoint(runs["AR twin"]["checkpoint"], device)
    bos_id = ckpt_ar["config"].get("bos_id", len(itos) - 1)
    judge = lambda ids: sampling.judge_nll(twin, ids, bos_id, device)  # noqa: E731
    table = results[part].setdefault("samples", {})
    val = data["held"].flatten()[:chars * SAMPLE_TEXTS].cpu()
    nll = torch.cat([judge(val[s:s + chars]) for s in range(0, len(val), chars)])
    table["validation text"] = dict(nfe=None, judge_ppl=math.exp(nll.mean()),
                                    entropy_bits=sampling.unigram_entropy(val, len(itos)))
    for label, run in runs.items():
        if label not in table:
            row = sampling.measure(label, writer(run, chars, bos_id, device), judge, len(itos), SAMPLE_TEXTS, seed,
                                   device, keep_first=True)
            row["text"] = "".join(itos[i] for i in row.pop("first_ids"))  # the seed's text, for the report
            table[label] = row
            say(f"{part} samples, {label}: {row['nfe']:.0f} NFE, judge perplexity {row['judge_ppl']:.2f}, "
                f"entropy {row['entropy_bits']:.3f} bits")


def writer(run, chars, bos_id, device):
    """generator -> (ids (chars,), NFE) for one model: the AR twin with its KV cache; a diffusion model
    by the ancestral sampler with sample.py's BLOCK_STEPS steps per character of a block (b for block diffusion,
    half a window of new characters for the masked model). The network is called only after a step
    unmasked something, so a block of b costs at most b calls, and with this many steps two characters
    rarely share a step (where they do, they are drawn independently): the samples are close to the
    model's own distribution, which is what this table compares."""
    model, _ = load_checkpoint(run["checkpoint"], device)
    if model.config.causal:
        def write(generator):
            ids, nfe = generate_ar(model, torch.empty((1, 0), dtype=torch.long), chars, generator, bos_id, device=device)
            return ids[0], nfe
        return write
    per = model.config.block_len or model.config.block_size // 2
    denoise, sampler = make_denoiser(model, device), samplers_for(model)["ancestral"]

    def write(generator):
        ids, nfe, _ = sample_text(denoise, sampler, 1, chars, model.config.block_size, model.config.n_out,
                                  generator, steps=BLOCK_STEPS * per)
        return ids[0], nfe
    return write


# ---------------------------------------------------------------- the report
def report(results):
    """Every part's table: the bound, its ratio to the twin's loss, steps and time; then the samples."""
    for part in PARTS:
        if part not in results or not results[part].get("runs"):
            continue
        runs = results[part]["runs"]
        twin = runs.get("AR twin")
        print(f"\n{part}: held-out nats/char (+- over items, +- over draws), x the AR twin's loss")
        print(f"{'model':<12}{'nats/char':>10}{'+- items':>9}{'+- draws':>9}{'x AR':>8}{'steps':>7}{'best':>7}"
              f"{'train s':>9}")
        for label, r in runs.items():
            ratio = f"{r['nats'] / twin['nats']:>8.4f}" if twin else f"{'-':>8}"
            print(f"{label:<12}{r['nats']:>10.4f}{r['se']:>9.4f}{r['draw_se']:>9.4f}{ratio}{r['steps']:>7}"
                  f"{r['best_step']:>7}{r['train_seconds']:>9.1f}")
        samples = results[part].get("samples", {})
        if samples:
            print(f"{'samples':<18}{'NFE':>8}{'judge ppl':>11}{'x AR':>7}{'entropy':>9}")
            ar_ppl = samples.get("AR twin", {}).get("judge_ppl")
            for label, row in samples.items():
                nfe = f"{row['nfe']:>8.0f}" if row["nfe"] is not None else f"{'-':>8}"
                ratio = f"{row['judge_ppl'] / ar_ppl:>7.2f}" if ar_ppl else f"{'-':>7}"
                print(f"{label:<18}{nfe}{row['judge_ppl']:>11.2f}{ratio}{row['entropy_bits']:>9.3f}")


def block_of(label, runs):
    """The block size a run's label names; the masked model's is the window (one block)."""
    return int(label.split()[1]) if label.startswith("block") else None


def plot(results, path):
    """The bound against the block size, a panel per part, the twin's loss and the masked model's bound as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    parts = [p for p in PARTS if results.get(p, {}).get("runs")]
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts):
        runs = results[part]["runs"]
        blocks = sorted((block_of(k, runs), r) for k, r in runs.items() if block_of(k, runs))
        ax.errorbar([b for b, _ in blocks], [r["nats"] for _, r in blocks], yerr=[r["se"] for _, r in blocks],
                    marker="o", capsize=3, label="block diffusion (bound)")
        for label, color, style in (("AR twin", "black", "--"), ("masked", "tab:orange", ":")):
            if label in runs:
                ax.axhline(runs[label]["nats"], color=color, linestyle=style,
                           label=f"{label} ({'exact NLL' if label == 'AR twin' else 'bound'})")
        ax.set_xscale("log", base=2)
        ax.set_xticks([b for b, _ in blocks], [str(b) for b, _ in blocks])
        ax.set_xlabel("block size b (characters)")
        ax.set_ylabel("held-out nats per character")
        budget = "default budget" if part == "names" else "the AR twin's wall time"
        ax.set_title(f"{part.replace('_', ' ')}: {budget}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- putting it together
def run_part(part, results, rest, short, file, say):
    """Train and score every model of a part that the file does not hold yet; save after each."""
    flags, blocks = PARTS[part]
    flags = flags + (SHORT["flags"] if short else []) + rest
    blocks = SHORT["blocks"][part] if short else blocks
    args = T.parse_args(flags)
    flags += ["--out", str(T.OUT_DIR / "block_sizes" / part)]
    data = T.load_dataset(args.dataset, args.data_dir, args.device, args.block_size)
    results.setdefault(part, {}).setdefault("runs", {})
    steps = timed_budgets(part, flags, data, blocks, results, say) if data["kind"] == "text" else {}
    save(file, results)
    for label, extra, ar in models(part, blocks):
        if label in results[part]["runs"]:
            continue
        budget = ["--max-iters", str(steps[label])] if label in steps else []
        say(f"{part}, {label}: training{f' {steps[label]} steps' if budget else ''} ...")
        results[part]["runs"][label] = train_one(flags + extra + budget, data, ar)
        r = results[part]["runs"][label]
        say(f"{part}, {label}: {r['nats']:.4f} +- {r['se']:.4f} +- {r['draw_se']:.4f} nats/char, "
            f"{r['train_seconds']:.0f} s of training")
        save(file, results)
    if data["kind"] == "text":
        text_samples(part, results, data, SHORT["sample_chars"] if short else SAMPLE_CHARS, args.seed, args.device, say)
        save(file, results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all"] + list(PARTS), default="all", help="names, the small Shakespeare preset, or both")
    parser.add_argument("--short", action="store_true", help="tiny budgets and two or three block sizes: the machinery only")
    parser.add_argument("--report", action="store_true", help="print the table and draw the plot from the file, train nothing")
    parser.add_argument("--file", help=f"the figure file (default {FILE.relative_to(FILE.parents[1])}; --short: "
                        f"out/block_sizes/short.json)")
    parser.add_argument("--plot", help=f"the plot (default {PLOT.relative_to(PLOT.parents[1])}, beside the file with --short)")
    ours, rest = parser.parse_known_args(argv)
    file = Path(ours.file) if ours.file else (T.OUT_DIR / "block_sizes" / "short.json" if ours.short else FILE)
    plot_path = Path(ours.plot) if ours.plot else (file.with_suffix(".png") if ours.short else PLOT)
    for folder in {file.parent, plot_path.parent}:
        if problem := output_problem(folder):
            sys.exit(f"error: {problem}")
    results = load(file)
    results.setdefault("timing_iters", SHORT["timing_iters"] if ours.short else TIMING_ITERS)
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    if not ours.report:
        for part in (PARTS if ours.part == "all" else [ours.part]):
            try:
                run_part(part, results, rest, ours.short, file, say)
            except (DatasetError, CheckpointError, T.TrainingError) as err:
                sys.exit(f"error: {err}")
    report(results)
    plot(results, plot_path)
    print(f"wrote {file} and {plot_path}")


if __name__ == "__main__":
    cli.run(main)
