"""Benchmark: 2,000 characters of Shakespeare from every sampler, judged by the AR twin.

What it measures (SPEC 5 and 6): for each sampler setting, the network evaluations (NFE) and
the wall time to write --chars characters, the AR twin's perplexity on them (generative
perplexity, exp of the judge's NLL per character) and their unigram entropy beside the data's.
Low perplexity with low entropy is collapse, not quality, so read the two together. The AR
twin's own samples are the reference row; the validation text, judged the same way, is the
floor a perfect sampler of the data would reach.

The figure to check: some diffusion setting uses <= 500 NFE with a judge perplexity <= 1.2x
that of the AR twin's own samples. The script says whether it holds and writes a plot
(perplexity against NFE) and the table as JSON beside the checkpoints.

    python3 torch_version/bench/sampling.py                           # a GPU run, ~minutes on an H200
    python3 torch_version/bench/sampling.py --chars 300 --samples 1 --steps 8 --taus 0.9 \\
        --ckpt A.pt --ckpt-ar B.pt --device cpu                       # a quick check of the pipeline

Changes from sample.py: nothing in the algorithm; this file sweeps the samplers of sample.py,
times them and scores their text.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `data` and `torch_version` import from any folder
from data.fetch import DatasetError, load_text, split_text  # noqa: E402
from common import cli  # noqa: E402
from common.files import atomic_write, output_problem  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version.diffusion import ar_inputs, encode, host_nll  # noqa: E402
from torch_version.engine.checkpoints import CheckpointError, load_checkpoint  # noqa: E402
from torch_version.sample import (SAMPLERS, checkpoint_precision, generate_ar, make_denoiser,  # noqa: E402
                                  sample_text, samplers_for)

OUT_DIR = Path(__file__).resolve().parents[1] / "out"
CHARS = 2000                      # characters per sample, as the figure asks
SAMPLES = 4                       # independent texts per setting (different seeds), run one at a time
STEPS = (8, 16, 24, 32, 64, 128)  # ancestral and confidence: steps per block of new characters
TAUS = (0.5, 0.7, 0.9, 0.95)      # threshold sampler
NFE_BUDGET, PPL_RATIO = 500, 1.2  # the figure: <= 500 NFE at <= 1.2x the AR twin's perplexity


# ---------------------------------------------------------------- scoring
@torch.no_grad()
def judge_nll(model, ids, bos_id, device, dtype="float32"):
    """-log p(character | the text before it) under the AR twin, for every character of ids (N,),
    float64 (N,). Windows of block_size overlap by half, and each character is scored once, in the
    first window that holds it after its predecessors: from the second window on, every character
    sees at least half a window of context."""
    L, N = model.config.block_size, len(ids)
    starts = [0] if N <= L else list(range(0, N - L, L // 2)) + [N - L]
    x0 = torch.stack([ids[s:s + L] for s in starts])  # (W, L)
    with devices.autocast(device, dtype):
        logits = model(ar_inputs(x0, bos_id).to(device))  # (W, L, V-1)
    nll = host_nll(logits, x0)  # (W, L), float64 on the host
    out, done = torch.empty(N, dtype=torch.float64), 0
    for w, s in enumerate(starts):
        out[done:s + L] = nll[w, done - s:]
        done = s + L
    return out


def unigram_entropy(ids, vocab_size):
    """Entropy of the characters' frequencies, in bits."""
    p = torch.bincount(ids.flatten(), minlength=vocab_size).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


# ---------------------------------------------------------------- the settings
def settings(args, samplers=SAMPLERS, block_chars=None):
    """(label, sampler name, its parameter as text, sampler, keyword arguments) for every diffusion
    setting. samplers: sample.samplers_for(the model), block by block for block diffusion. The
    confidence sampler unmasks at least one character per step: it skips steps above block_chars."""
    kw = dict(temperature=args.temperature)
    out = []
    for steps in args.steps:
        out.append((f"ancestral, {steps} steps/block", "ancestral", f"{steps}", samplers["ancestral"],
                    dict(kw, steps=steps)))
    for steps in [s for s in args.steps if block_chars is None or s <= block_chars]:
        out.append((f"confidence, {steps} steps/block", "confidence", f"{steps}", samplers["confidence"],
                    dict(kw, steps=steps)))
    for tau in args.taus:
        out.append((f"threshold, tau {tau:g}", "threshold", f"{tau:g}", samplers["threshold"], dict(kw, tau=tau)))
    return out


def measure(label, write, judge, vocab_size, samples, seed, device="cpu", keep_first=False):
    """Run write(generator) -> (ids (N,), nfe) for `samples` seeds; score the texts together.
    keep_first: the first text's ids too (first_ids), to quote it."""
    nfe, seconds, nll, texts = [], 0.0, [], []
    for i in range(samples):
        generator = torch.Generator().manual_seed(seed + i)
        start = time.time()
        ids, n = write(generator)
        devices.sync(device)
        seconds += time.time() - start
        nfe.append(n)
        nll.append(judge(ids))
        texts.append(ids)
    nll, ids = torch.cat(nll), torch.cat(texts)
    return dict(setting=label, nfe=sum(nfe) / samples, seconds=seconds / samples,
                chars_per_s=len(ids) / max(seconds, 1e-9), judge_nll=float(nll.mean()),
                judge_ppl=math.exp(nll.mean()), entropy_bits=unigram_entropy(ids, vocab_size),
                **(dict(first_ids=texts[0].tolist()) if keep_first else {}))


# ---------------------------------------------------------------- report
def write_json(path, payload):
    """Whole or not at all (common/files.py)."""
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode("utf-8")))


def plot(rows, ar_row, data_row, path, chars):
    import matplotlib  # only here: the benchmark's table needs no plotting library
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, marker in (("ancestral", "o"), ("confidence", "s"), ("threshold", "^")):
        mine = [r for r in rows if r["sampler"] == name]
        ax.plot([r["nfe"] for r in mine], [r["judge_ppl"] for r in mine], marker=marker,
                label=f"diffusion, {name} ({'tau' if name == 'threshold' else 'steps per block'})")
        for r in mine:  # the sweep's parameter beside each point
            ax.annotate(r["param"], (r["nfe"], r["judge_ppl"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.plot([ar_row["nfe"]], [ar_row["judge_ppl"]], "k*", markersize=12, label="AR twin (KV cache)")
    ax.axhline(PPL_RATIO * ar_row["judge_ppl"], color="k", ls="--", lw=0.8, label=f"{PPL_RATIO}x the AR twin")
    ax.axhline(data_row["judge_ppl"], color="grey", ls=":", lw=1, label="validation text")
    ax.axvline(NFE_BUDGET, color="r", ls="--", lw=0.8, label=f"{NFE_BUDGET} NFE")
    ax.set(xscale="log", xlabel=f"network evaluations for {chars:,} characters (log scale)",
           ylabel="AR-judge perplexity (lower is better)", title=f"Sampling {chars:,} Shakespeare characters")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))  # 100, 200, 500, 1000 ...
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())     # ... written out, not 10^2
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser():
    """The flags of this script (--help is the reference)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(OUT_DIR / "shakespeare" / "ckpt.pt"), help="diffusion checkpoint")
    parser.add_argument("--ckpt-ar", default=str(OUT_DIR / "shakespeare" / "ckpt_ar.pt"),
                        help="its AR twin: the reference row and the judge")
    parser.add_argument("--chars", type=cli.count(1, 10_000_000), default=CHARS, help="characters per sample")
    parser.add_argument("--samples", type=cli.count(1, 10_000), default=SAMPLES, help="texts per setting, one seed each")
    parser.add_argument("--steps", type=cli.list_of(cli.count(1, 100_000)), default=list(STEPS), help="steps per block, e.g. 16,32,64")
    parser.add_argument("--taus", type=cli.list_of(cli.probability), default=list(TAUS), help="thresholds, e.g. 0.7,0.9")
    parser.add_argument("--block-chars", type=cli.count(1), help="new characters per block after the first "
                        "(default: half a window)")
    parser.add_argument("--temperature", type=cli.temperature, default=1.0, help="sampling temperature of every setting")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed of the first text; the others follow")
    parser.add_argument("--device", default=devices.default_device("shakespeare"),
                        help="cuda (the intended machine), cpu, mps (default: the best found)")
    parser.add_argument("--data-dir", help="folder holding tiny_shakespeare.txt")
    parser.add_argument("--out", help="folder for sampling.png and bench_sampling.json (default: the checkpoint's)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := devices.device_problem(args.device):
        parser.error(problem)

    ckpt_path, ar_path = Path(args.ckpt), Path(args.ckpt_ar)
    out_dir = Path(args.out) if args.out else ckpt_path.parent
    if problem := output_problem(out_dir):  # before any work
        sys.exit(f"error: {problem}")
    try:
        model, ckpt = load_checkpoint(ckpt_path, args.device)
        twin, ckpt_ar = load_checkpoint(ar_path, args.device)
        val = split_text(load_text(args.data_dir))[1]
    except (CheckpointError, DatasetError) as err:
        sys.exit(f"error: {err}")
    if model.config.causal or not twin.config.causal:
        sys.exit(f"error: {ckpt_path} must hold the diffusion model and {ar_path} its AR twin.")
    if ckpt["itos"] != ckpt_ar["itos"] or ckpt["config"].get("kind") != "text":
        sys.exit("error: the two checkpoints must be trained on the same text (same vocabulary, not names).")
    itos, block_size = ckpt["itos"], model.config.block_size
    mask_id, bos_id = len(itos) - 1, ckpt_ar["config"].get("bos_id", len(itos) - 1)
    block_chars = model.config.block_len or args.block_chars or block_size // 2  # block diffusion: its blocks
    if not 1 <= block_chars <= block_size or min(args.steps) > block_chars:
        parser.error(f"--block-chars must be in 1..{block_size}, and some --steps at most the characters of a block "
                     f"({block_chars}): the confidence sampler unmasks at least one character per step")
    try:
        val_ids = encode(val, {c: i for i, c in enumerate(itos)})
    except ValueError as err:
        sys.exit(f"error: the validation text does not fit the checkpoint's vocabulary ({err}).")

    dtype = checkpoint_precision(ckpt, args.device)
    denoise = make_denoiser(model, args.device, dtype)
    judge = lambda ids: judge_nll(twin, ids, bos_id, args.device, dtype)  # noqa: E731
    print(f"diffusion {model.num_params():,} parameters, AR twin {twin.num_params():,}; block size {block_size}, "
          f"{block_chars} new characters per block; {args.samples} x {args.chars:,} characters per setting "
          f"on {args.device}")
    denoise(torch.full((1, block_size), mask_id))  # warm-up: CUDA context and kernels, not timed

    header = (f"{'setting':34s} {'NFE':>7s} {'seconds':>8s} {'chars/s':>8s} {'judge ppl':>9s} {'x AR':>5s} "
              f"{'entropy':>7s}")
    print(header + "\n" + "-" * len(header))
    ar_row, data_row, rows = sweep(args, model, twin, denoise, judge, val_ids, itos, block_size, block_chars, bos_id,
                                   mask_id, dtype)
    holds = verdict(rows, ar_row, data_row)
    payload = dict(command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                   device=devices.describe(args.device), precision=dtype, chars=args.chars, samples=args.samples,
                   block_chars=block_chars, temperature=args.temperature, ar=ar_row, data=data_row, diffusion=rows,
                   figure_holds=holds)
    write_json(out_dir / "bench_sampling.json", payload)
    plot(rows, ar_row, data_row, out_dir / "sampling.png", args.chars)
    print(f"wrote {out_dir / 'bench_sampling.json'} and {out_dir / 'sampling.png'}")


def show(row, ratio_to=None):
    """One line of the table."""
    ratio = f"{row['judge_ppl'] / ratio_to:5.2f}" if ratio_to else "     "
    nfe = f"{row['nfe']:7.0f}" if row["nfe"] is not None else "      -"
    speed = f"{row['seconds']:8.2f} {row['chars_per_s']:8,.0f}" if row["seconds"] is not None else " " * 17
    print(f"{row['setting']:34s} {nfe} {speed} {row['judge_ppl']:9.3f} {ratio} {row['entropy_bits']:7.3f}",
          flush=True)


def sweep(args, model, twin, denoise, judge, val_ids, itos, block_size, block_chars, bos_id, mask_id, dtype):
    """The AR twin's texts, the validation text and every diffusion setting, each measured and shown.
    -> (AR row, data row, the diffusion rows)."""
    def write_ar(generator):
        ids, nfe = generate_ar(twin, torch.empty((1, 0), dtype=torch.long), args.chars, generator, bos_id,
                               temperature=args.temperature, device=args.device, dtype=dtype)
        return ids[0], nfe

    ar_row = measure("AR twin, KV cache", write_ar, judge, len(itos), args.samples, args.seed, args.device)
    show(ar_row, ar_row["judge_ppl"])
    n_data = min(len(val_ids), args.chars * args.samples)
    data_nll = torch.cat([judge(val_ids[s:s + args.chars]) for s in range(0, n_data, args.chars)])
    data_row = dict(setting="validation text", nfe=None, seconds=None, chars_per_s=None,
                    judge_nll=float(data_nll.mean()), judge_ppl=math.exp(data_nll.mean()),
                    entropy_bits=unigram_entropy(val_ids, len(itos)))
    show(data_row, ar_row["judge_ppl"])

    rows = []
    for label, name, param, sampler, kw in settings(args, samplers_for(model), block_chars):
        def write(generator, sampler=sampler, kw=kw):
            ids, nfe, _ = sample_text(denoise, sampler, 1, args.chars, block_size, mask_id, generator,
                                      block_chars=block_chars, **kw)
            return ids[0], nfe
        row = measure(label, write, judge, len(itos), args.samples, args.seed, args.device)
        row.update(sampler=name, param=param)
        rows.append(row)
        show(row, ar_row["judge_ppl"])
    return ar_row, data_row, rows


def verdict(rows, ar_row, data_row):
    """Whether the figure holds (some setting within the NFE budget at the perplexity ratio), said."""
    within = [r for r in rows if r["nfe"] <= NFE_BUDGET]
    holds = any(r["judge_ppl"] <= PPL_RATIO * ar_row["judge_ppl"] for r in within)
    print(f"figure ({NFE_BUDGET} NFE or fewer at {PPL_RATIO}x the AR twin's perplexity or less): "
          f"{'holds' if holds else 'does not hold'}", end="")
    if within:
        best = min(within, key=lambda r: r["judge_ppl"])
        print(f"; best within the budget: {best['setting']}, {best['nfe']:.0f} NFE, perplexity "
              f"{best['judge_ppl']:.3f} = {best['judge_ppl'] / ar_row['judge_ppl']:.2f}x the AR twin's "
              f"{ar_row['judge_ppl']:.3f}; entropy {best['entropy_bits']:.3f} bits "
              f"(the data's: {data_row['entropy_bits']:.3f})")
    else:
        print(f"; no setting stayed within {NFE_BUDGET} NFE")
    return holds


if __name__ == "__main__":
    cli.run(main)
