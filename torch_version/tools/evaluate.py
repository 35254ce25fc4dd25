"""How good is a trained model, and what does a good sample cost? One report that says.

What it teaches: a diffusion model has two numbers that matter and they are measured apart.
The held-out NELBO (SPEC 4-5) says how well the model knows the data; it bounds -log p and sits
beside the AR twin's loss. The samples say what the sampler makes of that knowledge, at a price
in network evaluations (NFE): each sampler and step count on a grid is scored by the AR twin as a
judge (its NLL per character and perplexity exp(NLL)), by the unigram entropy of the samples beside
the data's (low perplexity with low entropy is collapse, not quality), and for names by the shares
that are valid, copied from the training set or new, and by the distance between the generated and
the real length distributions (SPEC 5). The AR twin's own samples and real held-out data are scored
the same way, as references.

    python3 torch_version/tools/evaluate.py                                  # out/names/ckpt.pt, ~1 minute on CPU
    python3 torch_version/tools/evaluate.py torch_version/out/names/ckpt.pt --samples 2000
    python3 torch_version/tools/evaluate.py CKPT --grid ancestral:4,16,64 threshold:0.5,0.9
    python3 torch_version/tools/evaluate.py torch_version/out/shakespeare/ckpt.pt --device cuda

It prints the report and writes report.json, report.md and quality_vs_nfe.png to --out (default:
the checkpoint's folder). How invalid names count: they are shown as the 'valid' share and are
NOT scored by the judge (the twin was never trained on text after an end-of-name, so any number
it gave them would mean nothing); the judge's perplexity and the entropy are over the valid
names only, each name as its letters plus one end-of-name, as in the held-out AR loss.

Changes from pure: pure prints its sample metrics after training; here any torch checkpoint gets
the full protocol of SPEC 5: error bars, the AR judge, entropies and a grid of samplers by cost.
The sample metrics themselves are common/metrics.py's, the ones pure prints.
"""
import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `torch_version` and `common` import from any folder
from data.fetch import DatasetError  # noqa: E402
from common.metrics import sample_metrics, unigram_entropy  # noqa: E402
from torch_version import diffusion  # noqa: E402
from common import cli  # noqa: E402
from common.files import atomic_write, output_problem  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version.processes import block  # noqa: E402
from torch_version.sample import (SAMPLERS, WEIGHTS_DIR, checkpoint_precision, default_checkpoint,  # noqa: E402
                                  generate_ar, load_or_exit, make_denoiser, samplers_for)
from torch_version.train import FINAL_DRAWS, SHAKESPEARE, evaluate, load_dataset  # noqa: E402

OUT_DIR = Path(__file__).resolve().parents[1] / "out"  # checkpoints: out/<dataset>/ckpt.pt and ckpt_ar.pt
SAMPLES = 500          # names per grid cell: a share's standard error is at most 0.5/sqrt(500) = 2.2%
TEXT_SAMPLES = 4       # text: windows per grid cell (each one block_size characters)
NAMES_GRID = ("ancestral:2,4,8,16", "confidence:2,4,8,16", "threshold:0.3,0.6,0.9")
TEXT_GRID = ("ancestral:16,64,256", "confidence:16,64,256", "threshold:0.5,0.9")  # per 256-char window


# ---------------------------------------------------------------- the metrics
def valid_rows(ids, pad_id, mask_id):
    """(n,) bool: letters followed only by PADs, at least one letter, no MASK (SPEC 1);
    the same rule as common.metrics.sample_metrics, per row, so the judge knows which rows to score."""
    is_pad = ids == pad_id
    after_first_pad = is_pad.long().cumsum(1) > 0
    return ~is_pad[:, 0] & ~(after_first_pad & ~is_pad).any(1) & ~(ids == mask_id).any(1)


def scored_tokens(ids, pad_id):
    """The tokens the judge predicts, flattened: a name's letters and its end-of-name (the first
    PAD), as in the held-out AR loss; text: every character."""
    return ids[diffusion.ar_targets(ids, pad_id) >= 0]


def score(ids, judge, bos_id, itos, pad_id=None, train_words=None, real_words=None):
    """The metrics of one set of samples ids (n, L) (SPEC 5) as a dict. judge: ids (n, L) ->
    logits (n, L, V-1), the AR twin. Names are scored only where valid (see the module docstring)."""
    mask_id = len(itos) - 1
    keep = valid_rows(ids, pad_id, mask_id) if pad_id is not None else torch.ones(len(ids), dtype=torch.bool)
    out = {"n": len(ids), "n_scored": int(keep.sum())}
    if keep.any():
        kept = ids[keep]
        nll = diffusion.ar_nll(kept, judge, bos_id, pad_id)  # (n_scored,) nats per sequence
        n_chars = (diffusion.ar_targets(kept, pad_id) >= 0).sum(1)
        if len(kept) > 1:
            nats, se = diffusion.per_char(nll, n_chars)
        else:  # one sequence: no standard error
            nats, se = (nll.sum() / n_chars.sum()).item(), None
        out.update(judge_nll=nats, judge_nll_se=se, judge_ppl=math.exp(nats),
                   judge_ppl_se=None if se is None else math.exp(nats) * se,  # delta method: d exp(x) = exp(x) dx
                   entropy_bits=unigram_entropy(scored_tokens(kept, pad_id)))
    else:
        out.update(judge_nll=None, judge_nll_se=None, judge_ppl=None, judge_ppl_se=None, entropy_bits=None)
    if pad_id is not None:
        texts = ["".join(itos[i] for i in row) for row in ids.tolist()]
        out.update({k: float(v) for k, v in sample_metrics(texts, train_words, real_words).items()})
    return out


def nfe_per_sample(trajectory, commits=0):
    """(n,) network evaluations each sample would cost on its own: the steps in which its row
    changed. Every sampler calls the network once per step that changes a row (ancestral reuses
    its cached logits after a step that changes nothing), so a batch costs at least the most of these.
    commits: the passes that put each finished block into a block-diffusion model's KV cache."""
    steps = torch.stack(trajectory)  # (S + 1, n, L)
    return (steps[1:] != steps[:-1]).any(-1).sum(0) + commits


# ---------------------------------------------------------------- the grid
def parse_grid(specs):
    """['ancestral:4,8', 'threshold:0.5'] -> [('ancestral', 4), ('ancestral', 8), ('threshold', 0.5)]."""
    cells = []
    for spec in specs:
        name, _, values = spec.partition(":")
        if name not in SAMPLERS or not values:
            raise ValueError(f"a grid entry looks like ancestral:4,8,16 (samplers: {', '.join(sorted(SAMPLERS))}), "
                             f"not {spec!r}")
        for v in values.split(","):
            try:
                value = float(v) if name == "threshold" else int(v)
            except ValueError:
                what = "tau in (0, 1]" if name == "threshold" else "step count"
                raise ValueError(f"{v!r} in {spec!r} is not a {what}") from None
            if (name == "threshold" and not 0 < value <= 1) or (name != "threshold" and value < 1):
                raise ValueError(f"{v!r} in {spec!r}: tau must be in (0, 1] and step counts at least 1")
            cells.append((name, value))
    return cells


def run_grid(cells, denoise, n, L, mask_id, generator, schedule, temperature, scorer, say=print, block_len=0):
    """Sample n sequences with every (sampler, steps or tau) and score them. A list of row dicts.
    block_len: a block-diffusion model's blocks (its steps are per block)."""
    rows, samplers = [], samplers_for(denoise.model)
    for name, value in cells:
        if name == "confidence" and value > (block_len or L):
            raise ValueError(f"the confidence sampler unmasks at least one position per step: {value} steps "
                             f"are more than the {block_len or L} positions")
        kw = dict(tau=value) if name == "threshold" else dict(steps=value, schedule=schedule)
        start = time.time()
        result = samplers[name](denoise, n, L, mask_id, generator, temperature=temperature, **kw)
        seconds = time.time() - start
        nfe = nfe_per_sample(result.trajectory, L // block_len - 1 if block_len else 0).double()
        row = dict(sampler=name, setting=f"tau={value:g}" if name == "threshold" else f"{value} steps",
                   nfe=nfe.mean().item(), batch_nfe=result.nfe, seconds=seconds, **scorer(result.samples))
        rows.append(row)
        say(table_line(row, "names" if "valid" in row else "text"))
    return rows


# ---------------------------------------------------------------- the report
COLUMNS = [  # (header, key, format, width): one table for the terminal and the Markdown file
    ("sampler", "sampler", "{}", 10), ("setting", "setting", "{}", 10), ("NFE/sample", "nfe", "{:.1f}", 10),
    ("wall s", "seconds", "{:.2f}", 7), ("judge ppl", "judge_ppl", "{:.2f}", 9), ("+-", "judge_ppl_se", "{:.2f}", 5),
    ("entropy bits", "entropy_bits", "{:.3f}", 12), ("valid", "valid", "{:.1%}", 7),
    ("copied", "copied", "{:.1%}", 7), ("new", "new", "{:.1%}", 7), ("length TV", "tv_length", "{:.3f}", 9),
]


def columns(kind):
    """Names get the validity columns; text has no PAD, so every sample is valid."""
    return COLUMNS if kind == "names" else COLUMNS[:7]


def cell(row, key, fmt):
    value = row.get(key)
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def table_line(row, kind):
    return " ".join(cell(row, k, f).rjust(w) for _, k, f, w in columns(kind))


def table_header(kind):
    return " ".join(h.rjust(w) for h, _, _, w in columns(kind))


def markdown(report):
    cols = columns(report["kind"])
    held, judge = report["held_out"], report["judge"]
    draw_noise = f"; the mask draws move it by ± {held['draw_se']:.4f}" if held.get("draws", 1) > 1 else ""
    lines = [f"# Evaluation of `{report['checkpoint']}`", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}  ",
             f"Model: {report['params']:,} parameters, trained {report['step']} steps; "
             f"judge: `{report['judge_checkpoint']}`",
             "",
             f"Held-out NELBO: **{held['nats']:.4f} ± {held['se']:.4f} nats/char** "
             f"({held['nats'] / math.log(2):.4f} bits/char; {held['draws']} draw{'s' * (held['draws'] != 1)}, {held['sequences']:,} "
             f"held-out {'names' if report['kind'] == 'names' else 'windows'}, ± one standard error over them{draw_noise}). "
             f"The AR twin (judge) on the same characters: {judge['held_out_nats']:.4f} ± {judge['held_out_se']:.4f}.",
             "",
             f"Samples: {report['samples']} per row, temperature {report['temperature']:g}, seed {report['seed']}. "
             f"NFE/sample: network evaluations one sample needs on its own (a batch shares its calls: "
             f"`batch_nfe` in the JSON). Wall s: seconds to sample all {report['samples']} in one batch. "
             f"Judge ppl: exp(NLL per character) under the AR twin, ± one standard error. "
             f"Entropy: unigram entropy of the samples' characters "
             f"in bits (data, training set: {report['data_entropy_bits']:.3f})."
             + (" Names are scored as letters plus one end-of-name; invalid names are not scored by the judge "
                "nor counted in the entropy, they show in the 'valid' column. Length TV: total-variation distance "
                "between the lengths of the valid samples and of the held-out names." if report["kind"] == "names"
                else ""),
             "",
             "| " + " | ".join(h.replace("+-", "±") for h, _, _, _ in cols) + " |",
             "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in report["rows"]:
        lines.append("| " + " | ".join(cell(row, k, f) for _, k, f, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Quality against cost: judge perplexity and unigram entropy against NFE per sample, one line
    per sampler; the AR twin and the data as references."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report["kind"] == "names"
    fig, axes = plt.subplots(1, 3 if names else 2, figsize=(15 if names else 10, 4.2))
    panels = [("judge_ppl", "AR-judge perplexity (lower: likelier)"), ("entropy_bits", "unigram entropy, bits")]
    if names:
        panels.append(("new", "share of samples that are valid and new"))
    by_sampler = {}
    for row in report["rows"]:
        by_sampler.setdefault(row["sampler"], []).append(row)
    for ax, (key, label) in zip(axes, panels):
        for name, rows in by_sampler.items():
            if name in ("AR twin", "data"):
                continue
            pts = sorted((r["nfe"], r[key]) for r in rows if r.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), "o-", label=name)
        for r in by_sampler.get("AR twin", []):
            if r.get(key) is not None:
                ax.plot(r["nfe"], r[key], "k*", markersize=12, label="AR twin")
        for r in by_sampler.get("data", []):
            if r.get(key) is not None:
                ax.axhline(r[key], color="grey", linestyle="--", label="held-out data")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network evaluations per sample (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(report['checkpoint']).name}: sample quality against cost "
                 f"({report['samples']} samples per point)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_atomic(path, text):
    """Write a text file whole or not at all (common/files.py)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ---------------------------------------------------------------- putting it together
def build_parser():
    """The flags of this script (--help is the reference)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(default_checkpoint("names")),
                        help="diffusion checkpoint (default torch_version/out/names/ckpt.pt, or the committed "
                        "weights/names/ckpt.pt before you have trained one)")
    parser.add_argument("--judge", help="the AR twin that scores samples (default ckpt_ar.pt beside the checkpoint)")
    parser.add_argument("--grid", nargs="+", help=f"samplers and step counts (threshold: tau values), e.g. "
                        f"{' '.join(NAMES_GRID)} (the names default; text: {' '.join(TEXT_GRID)})")
    parser.add_argument("--samples", type=cli.count(2, 100_000), help=f"samples per grid cell (names {SAMPLES}, text {TEXT_SAMPLES} "
                        f"windows)")
    parser.add_argument("--draws", type=cli.count(1, 10_000), help=f"mask sets per held-out sequence in the NELBO (default: those of the "
                        f"training run's final figure; for older checkpoints names {FINAL_DRAWS}, text "
                        f"{SHAKESPEARE['final_draws']})")
    parser.add_argument("--temperature", type=cli.temperature, default=1.0, help="sampling temperature")
    parser.add_argument("--out", help="folder for report.json, report.md and quality_vs_nfe.png "
                        "(default: the checkpoint's folder)")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed for every random draw")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu for names, else the best found)")
    parser.add_argument("--data-dir", help="folder holding names.txt / tiny_shakespeare.txt")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)

    path = Path(args.checkpoint)
    committed = path.resolve().parent.parent == WEIGHTS_DIR.resolve()  # the report goes to out/, not into weights/
    out = Path(args.out) if args.out else (OUT_DIR / path.parent.name if committed else path.parent)
    if problem := output_problem(out):  # before any work
        sys.exit(f"error: {problem}")
    judge_path = Path(args.judge) if args.judge else path.with_name("ckpt_ar.pt")
    model, ckpt, args.device = load_or_exit(path, args.device, False, "give the diffusion checkpoint there")
    judge_model, judge_ckpt, _ = load_or_exit(judge_path, args.device, True, "give the AR twin with --judge")
    if judge_ckpt["itos"] != ckpt["itos"]:
        sys.exit(f"error: the judge {judge_path} was trained on another vocabulary than {path}; "
                 f"train the AR twin on the same dataset (train.py --ar).")
    try:
        cells = parse_grid(args.grid or (NAMES_GRID if ckpt["config"].get("kind") == "names" else TEXT_GRID))
    except ValueError as err:
        parser.error(str(err))
    if "dataset" not in ckpt["config"]:
        sys.exit(f"error: {path} does not say which dataset trained it; train it again with torch_version/train.py.")
    try:
        data = load_dataset(ckpt["config"]["dataset"], args.data_dir, args.device, model.config.block_size)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    if data["itos"] != ckpt["itos"]:
        sys.exit(f"error: {path} was trained on another vocabulary than {ckpt['config']['dataset']} has now.")
    if ckpt["config"].get("data_sha256", data["sha256"]) != data["sha256"]:
        sys.exit(f"error: {ckpt['config']['dataset']} has changed since {path} was trained on it (its checksum "
                 f"differs), so its held-out split is not the one trained around; score it on the original file.")
    args.draws = args.draws or ckpt["config"].get("final_draws")  # the training run's own, where it recorded them
    try:
        report = run(args, model, judge_model, data, cells, ckpt["config"].get("schedule", "linear"),
                     checkpoint_precision(ckpt, args.device))
    except ValueError as err:
        sys.exit(f"error: {err}")
    report.update(checkpoint=str(path), judge_checkpoint=str(judge_path), step=ckpt["step"],
                  command=" ".join(["python3", "torch_version/tools/evaluate.py"] + [shlex.quote(a) for a in argv]),
                  machine=machine(args.device))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_atomic(out / "report.md", markdown(report))
    plot(report, out / "quality_vs_nfe.png")
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {out / 'quality_vs_nfe.png'}")
    return report


def words_of(ids, itos):
    """Padded name ids (N, L) -> the names, PAD stripped (PAD never occurs inside the data)."""
    return ["".join(itos[i] for i in row).rstrip(itos[0]) for row in ids.tolist()]


def run(args, model, judge_model, data, cells, schedule="linear", dtype="float32"):
    """The held-out NELBO, then the grid, the AR twin and real data, all scored alike. The report as a dict."""
    itos, kind, L = data["itos"], data["kind"], data["block_size"]
    mask_id, pad_id, names = len(itos) - 1, (0 if kind == "names" else None), kind == "names"
    n = args.samples or (SAMPLES if names else TEXT_SAMPLES)
    draws = args.draws or (FINAL_DRAWS if names else SHAKESPEARE["final_draws"])
    autocast = devices.autocast(args.device, dtype)  # the training run's precision: the same figure
    print(f"diffusion model: {model.num_params():,} parameters; judge: {judge_model.num_params():,}")

    start = time.time()  # train.py's evaluate, so the figure is the one training reports
    one_pass = not names  # as train.py's final figure: names get all L mask sizes, windows one k per draw
    b = model.config.block_len  # block diffusion: its own estimator, block by block
    nats, se, draw_se = evaluate(model, data, ar=False, draws=draws, one_pass=one_pass, autocast=autocast,
                                 mask_id=mask_id, pad_id=pad_id, process=block if b else diffusion,
                                 options=dict(block=b) if b else {})
    ar_nats, ar_se, _ = evaluate(judge_model, data, ar=True, draws=1, one_pass=False, autocast=autocast,
                              mask_id=mask_id, pad_id=pad_id)
    model.eval(), judge_model.eval()  # evaluate() leaves them in training mode: dropout would be on
    draws_text = f", +- {draw_se:.4f} from the draws" if draws > 1 else ""
    print(f"held-out NELBO: {nats:.4f} nats/char ({nats / math.log(2):.4f} bits/char) +- {se:.4f} "
          f"(standard error over {len(data['held']):,} {'names' if names else 'windows'}{draws_text}; "
          f"{'one-pass L/k form' if one_pass else 'full discrete form'}{f' of each block of {b}' if b else ''}, "
          f"{draws} mask draw{'s' * (draws != 1)}, "
          f"{time.time() - start:.1f} s); the AR twin on the same characters: {ar_nats:.4f} +- {ar_se:.4f}")

    held = data["held"].cpu()
    if names:
        if itos[0] != diffusion.PAD or itos[-1] != diffusion.MASK:
            raise ValueError(f"common.metrics reads PAD as {diffusion.PAD!r} and MASK as "
                             f"{diffusion.MASK!r}, but this "
                             f"dataset uses those characters itself")
        train_words, real_words = words_of(data["train"].cpu(), itos), words_of(held, itos)
        data_entropy = unigram_entropy(scored_tokens(data["train"].cpu(), pad_id))
    else:
        train_words = real_words = None
        data_entropy = unigram_entropy(data["train"].cpu())
    judge = make_denoiser(judge_model, args.device, dtype)
    scorer = lambda ids: score(ids, judge, mask_id, itos, pad_id, train_words, real_words)  # noqa: E731
    print(f"{n} samples per row; unigram entropy of the training data: {data_entropy:.3f} bits")
    print(table_header(kind))
    generator = torch.Generator().manual_seed(args.seed)
    rows = run_grid(cells, make_denoiser(model, args.device, dtype), n, L, mask_id, generator,
                    schedule, args.temperature, scorer, block_len=b)

    start = time.time()  # the AR twin, one network call per character (a name stops at its end)
    ids, _ = generate_ar(judge_model, torch.empty((n, 0), dtype=torch.long), L, generator, mask_id,
                         temperature=args.temperature, stop_id=pad_id, device=args.device, dtype=dtype)
    seconds = time.time() - start
    nfe = (diffusion.ar_targets(ids, pad_id) >= 0).sum(1).double()  # names: letters + end; text: L
    rows.append(dict(sampler="AR twin", setting="KV cache", nfe=nfe.mean().item(), batch_nfe=int(nfe.max()),
                     seconds=seconds, **scorer(ids)))
    print(table_line(rows[-1], kind))
    pick = torch.randperm(len(held), generator=generator)[:n]  # real data, scored the same way
    rows.append(dict(sampler="data", setting="held-out", nfe=None, batch_nfe=None, seconds=None, **scorer(held[pick])))
    print(table_line(rows[-1], kind))
    return dict(kind=kind, params=model.num_params(), samples=n, temperature=args.temperature, seed=args.seed,
                held_out=dict(nats=nats, se=se, draw_se=draw_se, bits=nats / math.log(2), draws=draws,
                              sequences=len(held)),
                judge=dict(held_out_nats=ar_nats, held_out_se=ar_se), data_entropy_bits=data_entropy, rows=rows)


def machine(device):
    if devices.kind(device) == "cuda":
        where = devices.describe(device)
    else:
        where = f"{os.cpu_count()}-core {platform.machine()} CPU"
    return f"{where}, torch {torch.__version__}"


if __name__ == "__main__":
    cli.run(main)
