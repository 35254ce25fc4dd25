"""Train the torch tier: a transformer denoiser, or its autoregressive twin, on names or text.

What it teaches: the diffusion loop of docs/algorithm.md (diffusion.py) inside the engineering
of a real training codebase: a device picked for you (engine/devices.py), bf16 autocast where the
GPU has it, torch.compile, Muon or AdamW with warm-up and cosine decay, gradient clipping, a
held-out NELBO with its standard error at intervals, the best checkpoint kept (atomically) and an
exact --resume. The same
backbone with causal attention and next-character loss (--ar) is the baseline that the
diffusion NELBO is measured against, on the same held-out characters.

    python3 torch_version/train.py                          # names, 4 layers, CPU, about 5 minutes
    python3 torch_version/train.py --ar                     # the AR twin, same budget
    python3 torch_version/train.py --both                   # both, then their losses side by side
    python3 torch_version/train.py --dataset shakespeare    # 6 layers, 10.7M parameters: a GPU job
    python3 torch_version/train.py --device mps             # names on an Apple GPU (default: the CPU)
    python3 torch_version/train.py --dataset my_lines.txt   # any UTF-8 file (one item per line, or prose)
    python3 torch_version/train.py --resume                 # continue out/<dataset>/ckpt.pt exactly
    python3 torch_version/train.py --noise uniform          # random letters for noise (processes/uniform.py), or
    python3 torch_version/train.py --noise gaussian         # Gaussian noise on embeddings (processes/gaussian.py)

Checkpoints: out/<dataset>/ckpt.pt (diffusion; ckpt_uniform.pt and ckpt_gaussian.pt for the other
two kinds of noise) and ckpt_ar.pt (AR twin), written whenever the
held-out loss improves: weights, optimizer, configs, vocabulary, step, best loss and the random
generators' states. sample.py reads them; --resume (same flags) continues from the last one
and ends exactly where an uninterrupted run would have. A text file's MASK is '_' unless the
text uses it (then a spare symbol, see diffusion.build_vocab); text has no PAD.

Changes from pure: the denoiser is a transformer (model.py) trained by autograd, not hand-written
backprop, and by Muon (engine/muon.py; AdamW for Shakespeare) instead of Adam; the loss is the
discrete (k-masked) form of the same NELBO by default (lower variance, see diffusion.py; --objective time
for the continuous one);
held-out evaluation batches the L mask sizes; checkpoints, resume, devices, mixed precision,
compilation, a second dataset (Shakespeare, or any text file) and the AR twin are new. The
process (masked, or --noise uniform / gaussian) is a file with diffusion.py's interface, picked
once (PROCESSES): the loop itself never asks which.
"""
import argparse
import contextlib
import copy
import hashlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `data` and `torch_version` import from any folder
from common import cli  # noqa: E402
from common.files import output_problem  # noqa: E402
from data.fetch import DatasetError, load_names, load_text, read_text, split_names, split_text  # noqa: E402
from data.prepared import held_out_windows, open_prepared, windows  # noqa: E402
from torch_version import diffusion  # noqa: E402
from torch_version.engine import devices, distributed  # noqa: E402
from torch_version.engine.checkpoints import CheckpointError, CheckpointWriter, read_checkpoint  # noqa: E402
from torch_version.engine.muon import MuonAdamW  # noqa: E402
from torch_version.model import ModelConfig, Transformer  # noqa: E402
from torch_version.processes import block, gaussian, uniform  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"  # checkpoints go to out/<dataset>/
# The processes (--noise, and --block for block diffusion): each file has diffusion.py's interface
# (OPTIONS, model_args, corrupt_batch, batch_loss, estimate_nelbo, sample_ancestral), so the loop
# below never asks which.
PROCESSES = {"masked": diffusion, "uniform": uniform, "gaussian": gaussian, "block": block}
# names (the default): sized for about 5 minutes on a 2-core CPU. The transformer learns at
# about the same pace per training name whatever its width (widths 32, 64 and 128 and 4 or 8
# heads were within about 0.02 nats/char of each other after the same names), so the narrowest one,
# which sees the most names in 5 minutes, ends best. On a CPU a small model's cost is the many
# small operations of each step: torch.compile fuses them (1.8x here), and a large batch with a
# large learning rate keeps both cores busy. Measured with bench/names.py; see docs/results.md.
N_LAYER = 4            # transformer blocks
N_HEAD = 4             # attention heads (8 dimensions each)
N_EMBD = 32            # residual stream width: 52k parameters
DROPOUT = 0.0          # the denoiser's held-out NELBO still improves at its last step: no dropout
BATCH_SIZE = 512       # names per step
MAX_ITERS = 3500       # optimizer steps (about 70 ms each, compiled, on 2 cores)
OPTIMIZER = "muon"     # Muon for the blocks' matrices, AdamW for the rest (muon.py); "adamw": AdamW for all
LEARNING_RATE = 1.5e-2 # peak step size of both rules, after warm-up (Muon at 1e-2, 2e-2, 4e-2: 2.069, 2.068, 2.095)
WEIGHT_DECAY = 0.1     # decoupled decay of the weight matrices (not of norms); 0 and 0.3 did worse
EVAL_INTERVAL = 500    # steps between held-out evaluations
EVAL_DRAWS = 4         # one-pass draws per held-out name at each evaluation (SPEC 4's L / k form)
FINAL_DRAWS = 16       # mask sets per (name, k) for the final figure, the full discrete form: one set
#                        moves the figure by about 0.008 nats/char from seed to seed, 16 by about 0.002
COMPILE = True         # torch.compile the training step (falls back to uncompiled where it fails)
# Randomness: batches, times and masks come from one CPU generator seeded with --seed, on every
# device (devices.py), so a run on a GPU sees the same names and masks as on the CPU.
# --dataset shakespeare: nanoGPT's shakespeare-char size, a GPU job
SHAKESPEARE = dict(
    n_layer=6, n_head=6, n_embd=384,   # about 10.7M parameters
    block_size=256,                    # characters per window
    dropout=0.2,                       # 1M characters: still small enough to overfit
    batch_size=64, max_iters=5000,
    optimizer="adamw", lr=1e-3,        # nanoGPT's recipe; Muon is not measured on this config yet
    eval_interval=250,
    eval_draws=4, final_draws=64,      # one-pass form over the 435 validation windows
    compile=None,                      # None: on with CUDA (about half the time per step), else off
)
# --dataset shakespeare --size small: Shakespeare on a 2-core CPU, about 7 minutes a model. The
# backbone is nanoGPT's "I only have a macbook" config (its AR twin, trained as nanoGPT does, 2,000
# steps of 12 x 64 with AdamW, reaches 1.875 nats/char here in 79 s: nanoGPT's 1.88). Diffusion
# needs far more: at 2,000 steps of 32, Muon gave a held-out NELBO of 2.089 against AdamW's 2.489
# (lr 1e-3), so Muon, and 4,000 steps of 32 windows to fill the minutes. Width, at those 2,000
# steps: 64 -> 2.095, 128 -> 2.089, 192 -> 2.118, so 128; 64 costs about half as much per step and
# may do better at equal wall time (not measured yet). The k-form loss integrates time out, so
# there is no noise schedule to choose. Measured with bench/shakespeare.py --size small; see docs/shakespeare.md.
SHAKESPEARE_SMALL = dict(
    n_layer=4, n_head=4, n_embd=128,   # about 0.8M parameters
    block_size=64,                     # characters per window (and per held-out window)
    dropout=0.0,                       # both models are best at their last step: no overfitting to fight
    batch_size=32, max_iters=4000,
    optimizer="muon", lr=1.5e-2,       # the names default's rule and rate
    eval_interval=500,
    eval_draws=1, final_draws=16,      # one-pass form over the 1,742 validation windows
    compile=True,
)
# --dataset shakespeare --size laptop: Shakespeare that reads, trained in about 25 minutes on a 2-core
# CPU: the small preset's backbone on windows of 256 characters, by block diffusion with blocks of 2,
# the block size bench/block_sizes.py measured best at the twin's wall time short of b = 1, which is
# the AR factorisation at twice the twin's cost (docs/block_diffusion.md). Sampled with
# sample.py --dataset shakespeare_laptop.
SHAKESPEARE_LAPTOP = dict(
    n_layer=4, n_head=4, n_embd=128,   # about 0.8M parameters, as the small preset
    block_size=256,                    # characters per window: a paragraph
    block=2,                           # block diffusion, blocks of 2 characters (processes/block.py)
    dropout=0.0,
    batch_size=16, max_iters=3000,     # 490 ms per compiled step here: 3,000 steps in about 25 minutes
    optimizer="muon", lr=1.5e-2,
    eval_interval=500,
    eval_draws=1, final_draws=8,       # one-pass form over the 435 validation windows
    compile=True,
)
SIZES = {"full": SHAKESPEARE, "small": SHAKESPEARE_SMALL, "laptop": SHAKESPEARE_LAPTOP}  # --size
TEXT_BLOCK_SIZE = 256  # window of a free-running text file (--dataset PATH)
MAX_PARAMS = 1e9       # larger models are refused up front instead of failing in an allocation
MAX_ITEM_LEN = 64      # a PATH whose lines are all non-empty and at most this long is a list of items
MAX_HELD_OUT = 2000    # held-out windows of a prepared text (data/prepare.py), evenly spaced: a 500 MB
#                        text holds some 200,000 windows of 256, too many to score at every evaluation
GRAD_ACCUM = 1         # micro-batches per step (--grad-accum): the same step, in less memory
WARMUP_ITERS = 100     # linear warm-up of the learning rate
MIN_LR_RATIO = 0.1     # the cosine decay ends at this fraction of the peak
GRAD_CLIP = 1.0        # clip the gradient norm: rare large-w(t) batches cannot derail training
EMA = 0.0              # decay of an exponential moving average of the weights (0: none); see --ema
EVAL_SEED = 1234       # every evaluation uses the same masks, so changes between checkpoints are not noise
SAMPLES = 20           # names sampled at the end of a run


# ---------------------------------------------------------------- data
def load_dataset(name, data_dir=None, device="cpu", block_size=None):
    """names, shakespeare or a PATH -> dict with the vocabulary, training data, held-out
    sequences (N, L) and their character counts (len + 1 for names, L for text windows). The
    training data and the held-out sequences are put on `device`, where the model will be. Text is
    cut into windows of `block_size` (default: the full Shakespeare preset's, or TEXT_BLOCK_SIZE)."""
    if name not in ("names", "shakespeare") and Path(name).is_dir():  # a text prepared by data/prepare.py: token files, mapped, never read whole
        if not any((Path(name) / f).exists() for f in ("meta.json", "train.bin")):
            raise DatasetError(f"{name} is a folder, not a text file, and data/prepare.py did not write it; name a "
                               f"UTF-8 text file, or a folder that `python3 data/prepare.py TEXT` wrote.")
        return load_prepared(name, device, block_size)
    why_text = ""  # for a PATH read as running text: the line that made it so
    if name == "names":
        kind, items = "names", load_names(data_dir)
    elif name == "shakespeare":
        kind, items = "text", load_text(data_dir)
    else:
        text = read_text(name)
        lines = text.splitlines()
        odd = next((i for i, line in enumerate(lines) if not 0 < len(line.strip()) <= MAX_ITEM_LEN), None)
        if len(lines) >= 10 and odd is None:
            kind, items = "names", [line.strip() for line in lines]  # one item per line, like names.txt
        else:
            kind, items = "text", text
            if odd is not None and len(lines) >= 10:
                why_text = (f" (it is read as running text, not one item per line, because its line {odd + 1} "
                            f"{'is empty' if not lines[odd].strip() else f'has more than {MAX_ITEM_LEN} characters'})")
    digest = hashlib.sha256((items if kind == "text" else "\n".join(items)).encode("utf-8")).hexdigest()
    if kind == "names":
        block_size = max(map(len, items)) + 1  # at least one PAD: the model learns where a name ends
        stoi, itos = diffusion.build_vocab(items, pad=True)
        train_items, held_items = split_names(items)
        if len(held_items) < 2:
            raise DatasetError(f"{name} is too small: every 10th item is held out, and a standard error needs "
                               f"at least 2 of them (11 items or more).")
        held = diffusion.encode(held_items, stoi, block_size)
        n_chars = torch.tensor([len(w) + 1 for w in held_items])  # letters + one end-of-name (SPEC 5)
        train = diffusion.encode(train_items, stoi, block_size)  # (N, L)
    else:
        block_size = block_size or (SHAKESPEARE["block_size"] if name == "shakespeare" else TEXT_BLOCK_SIZE)
        stoi, itos = diffusion.build_vocab([items], pad=False)
        train_text, val_text = split_text(items)
        if len(val_text) < 2 * block_size:
            raise DatasetError(f"{name} is too short{why_text}: its last 10% must hold two {block_size}-character "
                               f"windows, for a standard error.")
        train = diffusion.encode(train_text, stoi)  # (n_chars,) one stream
        val = diffusion.encode(val_text, stoi)
        held = val[: len(val) // block_size * block_size].view(-1, block_size)  # non-overlapping windows
        n_chars = torch.full((len(held),), block_size)
    return dict(kind=kind, stoi=stoi, itos=itos, block_size=block_size, train=train.to(device),
                held=held.to(device), n_chars=n_chars, n_train=len(train_items) if kind == "names" else len(train),
                sha256=digest)  # of the items as read: a checkpoint is only resumed or scored on the same data


def load_prepared(folder, device="cpu", block_size=None):
    """A folder written by data/prepare.py, as load_dataset returns a text: the training ids stay in
    their file (a memory map; get_batch reads the windows a batch needs), the held-out windows, at
    most MAX_HELD_OUT of them, are read now. The vocabulary, split and checksum are those of the
    same text read whole, so a run on the prepared folder is the run on the file."""
    prepared = open_prepared(folder)
    block_size = block_size or TEXT_BLOCK_SIZE
    held = torch.from_numpy(held_out_windows(prepared["val"], block_size, MAX_HELD_OUT))
    return dict(kind="text", stoi=prepared["stoi"], itos=prepared["itos"], block_size=block_size,
                train=prepared["train"], held=held.to(device), n_chars=torch.full((len(held),), block_size),
                n_train=prepared["n_train"], sha256=prepared["sha256"], device=device)


def get_batch(data, batch_size, generator):
    """x0 (B, L) on the data's device: random training names, or random windows of the training
    text. The indices are drawn on the host (a CPU generator) and moved to the data; a prepared text
    is read from its file, the B windows only (data/prepared.windows)."""
    train, L = data["train"], data["block_size"]
    if data["kind"] == "names":
        return train[torch.randint(len(train), (batch_size,), generator=generator).to(train.device)]
    start = torch.randint(len(train) - L + 1, (batch_size,), generator=generator)
    if not isinstance(train, torch.Tensor):  # a memory-mapped prepared text
        return torch.from_numpy(windows(train, start.numpy(), L)).to(data["device"])
    start = start.to(train.device)
    return train[start[:, None] + torch.arange(L, device=train.device)]


# ---------------------------------------------------------------- the process and the two losses
def process_of(args, ar=False):
    """The process file a run trains (the AR twin is scored like the masked model) and its settings:
    the flags it reads (its OPTIONS), as keyword arguments for every function of its interface."""
    process = diffusion if ar else PROCESSES[process_name(args)]
    return process, {name: getattr(args, name) for name in process.OPTIONS}


def process_name(args):
    """The key of PROCESSES that the flags name: --block B is block diffusion, else --noise."""
    return "block" if args.block else args.noise


def ar_loss(model, x0, bos_id, pad_id, n_targets=None):
    """AR twin: mean next-character NLL over the predicted characters (per char, SPEC 5). n_targets:
    the characters to divide by, when x0 is a slice of a batch (default: x0's own)."""
    logits = model(diffusion.ar_inputs(x0, bos_id))  # (B, L, n_out): position l sees x0[:l] only
    targets = diffusion.ar_targets(x0, pad_id)
    n_targets = (targets >= 0).sum() if n_targets is None else n_targets
    return diffusion.token_nll(logits, targets).sum() / n_targets  # ignored targets give 0


def batch_loss(model, x0, ar, generator, args, mask_id, pad_id):
    """The training loss of one batch: the NELBO per token on a fresh corruption of x0 (SPEC 4), by
    the run's process, or the AR twin's NLL per character."""
    if ar:
        return ar_loss(model, x0, mask_id, pad_id)
    process, options = process_of(args)
    noisy = process.corrupt_batch(x0, mask_id, generator, **options)  # MASK's id is the number of real tokens
    return process.batch_loss(model, x0, noisy, **options)


@torch.no_grad()
def evaluate(model, data, ar, draws, one_pass, autocast, mask_id, pad_id, process=diffusion, options=None):
    """Held-out loss in nats per character: the process's NELBO (the masked discrete form, or its
    one-pass L / k form; uniform and Gaussian noise: L stratified times per sequence, or one in the
    one-pass form: the same number of network calls), averaged over `draws`, or the AR twin's exact
    NLL, on the same characters.
    -> (value, standard error over the held-out items, standard error from the draws). The last is
    the spread of the per-draw figures / sqrt(draws): how far another EVAL_SEED could move the value
    (0 for the AR twin, which draws nothing; nan from a single draw)."""
    was_training = model.training
    model.eval()
    rows = max(1, 2 ** 17 // data["block_size"])  # sequences per forward pass: 2^17 tokens
    generator = torch.Generator().manual_seed(EVAL_SEED)  # host: the same masks (and noise) on every device
    with autocast:
        if ar:
            totals = [diffusion.ar_nll(data["held"], model, mask_id, pad_id, batch_size=rows)]
        else:  # one draw at a time: the same masks as draws=draws, and their spread
            totals = [process.estimate_nelbo(data["held"], model, mask_id, generator, one_pass=one_pass,
                                             batch_size=rows, **(options or {})) for _ in range(draws)]
    model.train(was_training)
    value, se = diffusion.per_char(torch.stack(totals).mean(0), data["n_chars"])
    each = torch.tensor([diffusion.per_char(total, data["n_chars"])[0] for total in totals], dtype=torch.float64)
    draw_se = 0.0 if ar else (each.std().item() / math.sqrt(draws) if draws > 1 else float("nan"))
    return value, se, draw_se


def lr_at(step, args):
    """Linear warm-up to args.lr, then cosine decay to MIN_LR_RATIO * args.lr at max_iters."""
    if step < WARMUP_ITERS:
        return args.lr * (step + 1) / WARMUP_ITERS
    progress = min(1.0, (step - WARMUP_ITERS) / max(1, args.max_iters - WARMUP_ITERS))
    return args.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------- training
def build(args, data, ar):
    """The model (its config from the flags, the data and what the process needs) on args.device,
    and its optimizer: AdamW, or Muon for the matrices inside the blocks and AdamW for embeddings,
    head and gains (muon.py)."""
    process, options = process_of(args, ar)
    K = len(data["itos"]) - 1  # real tokens; MASK is the last id, read only by the masked denoiser and the AR twin
    config = ModelConfig(**process.model_args(K, **options), n_out=K, block_size=data["block_size"],
                         n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout,
                         causal=ar, positions=args.positions, activation=args.activation)
    torch.manual_seed(args.seed)  # the initial weights and dropout
    model = Transformer(config).to(args.device)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # weight matrices and embeddings decay; norms do not
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99),
                                      fused=devices.kind(args.device) == "cuda")
        return model, optimizer
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]  # attention and MLP weights
    others = [p for name, p in model.named_parameters() if p.dim() >= 2 and not name.startswith("blocks.")]
    optimizer = MuonAdamW([dict(params=matrices, muon=True, weight_decay=args.weight_decay),
                           dict(params=others, weight_decay=args.weight_decay),
                           dict(params=no_decay, weight_decay=0.0)], lr=args.lr, betas=(0.9, 0.99))
    return model, optimizer


def make_autocast(args):
    """bf16 autocast where the device has bf16 (devices.precision), else a context that does nothing."""
    return devices.autocast(args.device, args.precision)


def compile_or_eager(model, data, ar, args, autocast, mask_id, pad_id):
    """torch.compile(model), tried on one training batch; the model itself when compiling fails
    here (on a CPU, inductor needs a C++ compiler), with one line saying so. The trial draws its
    batch from its own generator and restores every random state, so the run's numbers are the
    same whether or not it happened. When the same step fails uncompiled too, the fault is not
    the compiler's: its error is raised as it is.

    Deterministic mode (devices.setup) matters here: with more than one CPU thread, inductor's
    kernels otherwise add up some gradients in an order that changes from run to run (measured:
    two 200-step runs, same seed, 2.4364 and 2.4226 nats/char); with it they repeat to the last digit."""
    # One process may train many models (the benchmarks): each compiles afresh, or dynamo would stop at its
    # limit of recompilations of forward (8) and quietly run the rest uncompiled.
    torch._dynamo.reset()
    compiled = torch.compile(model)

    def trial_step(candidate):
        with devices.fork_rng(args.device):  # dropout in the trial must not move the run's RNG
            trial = torch.Generator().manual_seed(0)
            x0 = get_batch(data, args.batch_size, trial)
            with autocast:
                batch_loss(candidate, x0, ar, trial, args, mask_id, pad_id).backward()
        model.zero_grad(set_to_none=True)

    try:
        trial_step(compiled)
    except Exception as err:  # noqa: BLE001 -- dynamo and inductor raise many kinds; any of them means "not here"
        model.zero_grad(set_to_none=True)
        trial_step(model)  # an error here is the step's own, not the compiler's
        first_line = (str(err).strip() or "?").splitlines()[0][:120]
        print(f"torch.compile does not work here ({type(err).__name__}: {first_line}); training without it "
              f"(--no-compile skips the attempt)", file=sys.stderr)
        compiled = model
    return compiled


class TrainingError(Exception):
    """A run that cannot report a figure (it diverged, or wrote no checkpoint); one sentence."""


# Flags that may change when a run is resumed. Every other flag that shapes the training must be as
# it was: the model's, the data's, and these (flag for each key of the checkpoint's config).
RESUME_MAY_CHANGE = ("--max-iters, --eval-interval, --eval-at, --eval-draws, --eval-full, --final-draws, --samples, "
                     "--compile, --threads, --quiet, --grad-accum and the number of processes (the same step to "
                     "float rounding)")
FIXED_ON_RESUME = dict(noise="--noise", block="--block", objective="--objective", schedule="--schedule", batch_size="--batch-size",
                       optimizer="--optimizer", lr="--lr", weight_decay="--weight-decay", ema="--ema",
                       seed="--seed", dtype="--dtype", deterministic="--deterministic")


def check_resumable(path, ckpt, config, itos, train_config):
    """CheckpointError, in one sentence, unless `ckpt` continues the run these flags describe."""
    trained_on = ckpt["config"].get("device", "cpu")
    if trained_on != train_config["device"]:
        raise CheckpointError(f"{path} was trained on {trained_on}; resume it with --device {trained_on} (on "
                              f"another kind of device the run would not end where an uninterrupted one ends), "
                              f"or train afresh here with another --out.")
    if ckpt["itos"] != itos:
        raise CheckpointError(f"{path} was trained on another vocabulary; resume it on the same dataset.")
    if ckpt["config"].get("data_sha256", train_config["data_sha256"]) != train_config["data_sha256"]:
        raise CheckpointError(f"{path} was trained on another version of {train_config['dataset']} (its checksum "
                              f"differs); resume it on the data it was trained on, or train afresh with another --out.")
    rng = ckpt.get("rng")
    if not (isinstance(rng, dict) and all(isinstance(rng.get(k), torch.Tensor) for k in ("batches", "torch"))):
        raise CheckpointError(f"{path} holds no random-generator states to resume from; train afresh with another --out.")
    changed = [f"{k}={ckpt['model_args'].get(k)} (now {v})" for k, v in asdict(config).items()
               if ckpt["model_args"].get(k) != v]
    changed += [f"{flag} {ckpt['config'][key]} (now {train_config[key]})" for key, flag in FIXED_ON_RESUME.items()
                if key in ckpt["config"] and ckpt["config"][key] != train_config[key]]  # older checkpoints: not all keys
    if changed:
        raise CheckpointError(f"{path} was trained with other flags ({', '.join(changed)}); resume it with the same "
                              f"ones (only {RESUME_MAY_CHANGE} may change), or train afresh with another --out.")


def checkpoint_path(args, ar):
    """out/<dataset>/ckpt.pt, ckpt_ar.pt for the AR twin, ckpt_<noise>.pt for uniform or Gaussian noise,
    ckpt_block<B>.pt for block diffusion with blocks of B."""
    name = "ckpt_ar.pt" if ar else "ckpt.pt" if process_name(args) == "masked" else f"ckpt_{args.noise}.pt"
    return Path(args.out) / (f"ckpt_block{args.block}.pt" if args.block and not ar else name)


@dataclass
class Run:
    """One model's training as the loop sees it: what it trains, where it saves, where it stands."""
    name: str                         # "diffusion", "AR twin", "uniform diffusion", ...
    path: Path                        # its checkpoint
    model: torch.nn.Module            # the weights the optimizer moves
    ema: torch.nn.Module | None       # their moving average (--ema), or None
    optimizer: torch.optim.Optimizer
    generator: torch.Generator        # batches and masks: host-side, the same on every device
    train_config: dict                # the run's settings, saved in every checkpoint
    step: int = 0
    best: float = math.inf            # the lowest held-out loss so far
    saved_step: int | None = None     # the step of the checkpoint this run wrote, or resumed from: the only one it reports
    ddp: torch.nn.Module | None = None  # the model as DistributedDataParallel trains it, under torchrun

    @property
    def evaluated(self):
        """What is evaluated, saved and sampled: the EMA copy when there is one, else the weights."""
        return self.ema if self.ema is not None else self.model


def run_config(args, data, ar):
    """The settings a checkpoint records: what --resume must find unchanged, and what evaluate.py
    and sample.py read back."""
    mask_id = len(data["itos"]) - 1
    return dict(dataset=args.dataset, kind=data["kind"], ar=ar, noise="masked" if ar else args.noise,
                block=0 if ar else args.block, objective=args.objective, schedule=args.schedule, batch_size=args.batch_size,
                optimizer=args.optimizer, lr=args.lr, max_iters=args.max_iters, weight_decay=args.weight_decay,
                seed=args.seed, mask_id=mask_id, pad_id=0 if data["kind"] == "names" else None,
                bos_id=mask_id,  # the AR twin's start token is MASK (diffusion.ar_inputs)
                device=devices.kind(args.device), dtype=args.precision, ema=args.ema,
                deterministic=args.deterministic, data_sha256=data["sha256"],
                final_draws=args.final_draws)  # evaluate.py repeats the final figure with the same draws


def start_run(args, data, ar, say):
    """The model, its optimizer and the batch generator: new, or as the checkpoint --resume reads
    left them."""
    model, optimizer = build(args, data, ar)
    # The EMA copy averages the weights over the last ~1 / (1 - decay) steps: it smooths the noise
    # of single batches (large in diffusion, where each name gets one random mask), and it is
    # the model that gets evaluated, saved and sampled.
    ema = copy.deepcopy(model).eval().requires_grad_(False) if args.ema else None
    name = ("AR twin" if ar else f"block diffusion (blocks of {args.block})" if args.block
            else "diffusion" if args.noise == "masked" else f"{args.noise} diffusion")
    run = Run(name, checkpoint_path(args, ar), model, ema, optimizer, torch.Generator().manual_seed(args.seed),
              run_config(args, data, ar))
    resume = args.resume
    if resume and args.both and ar and not run.path.is_file():  # --both stopped before the twin's first checkpoint
        say(f"no {run.path} yet: the AR twin starts from step 0")
        resume = False
    if resume:
        ckpt = read_checkpoint(run.path)  # on the host; load_state_dict copies each tensor where it belongs
        check_resumable(run.path, ckpt, model.config, data["itos"], run.train_config)
        model.load_state_dict(ckpt["model_raw"] if ema is not None else ckpt["model"])
        if ema is not None:
            ema.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        run.step = run.saved_step = ckpt["step"]
        run.best = ckpt["best_val_loss"]
        run.generator.set_state(ckpt["rng"]["batches"])
        devices.set_rng_state(ckpt["rng"], args.device)
        say(f"resumed {run.path} at step {run.step} (best held-out loss {run.best:.4f})")
    return run


def share_of_loss(model, x0, noisy, rows, ar, args, mask_id, pad_id):
    """The loss of the batch's `rows`, weighted by their share of the batch: the shares of a
    batch's slices add up to batch_loss of the whole (the NELBO is a sum over positions / B * L; the
    AR twin's NLL divides by the whole batch's characters)."""
    if ar:
        n_targets = (diffusion.ar_targets(x0, pad_id) >= 0).sum()
        return ar_loss(model, x0[rows], mask_id, pad_id, n_targets)
    process, options = process_of(args)
    part = {key: value[rows] for key, value in noisy.items()}
    return process.batch_loss(model, x0[rows], part, **options) * (len(x0[rows]) / len(x0))


def train_step(run, train_model, data, ar, args, autocast):
    """One optimizer step on a fresh batch: this process's rows of it (all of them without torchrun,
    engine/distributed.py), in --grad-accum micro-batches whose gradients add up to the whole's.
    Every process draws the whole batch and its noise from the same generator, so the run is the
    same whatever the number of processes and micro-batches (to float rounding). Returns this
    process's share of the loss per character, a device scalar (read only at the next evaluation,
    so that no step waits for the device)."""
    mask_id, pad_id = run.train_config["mask_id"], run.train_config["pad_id"]
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.step, args)
    x0 = get_batch(data, args.batch_size, run.generator)
    noisy = None
    if not ar:  # the forward process for the whole batch, drawn on the host
        process, options = process_of(args)
        noisy = process.corrupt_batch(x0, mask_id, run.generator, **options)
    mine = distributed.rows(len(x0))  # this process's rows, cut into --grad-accum micro-batches
    cuts = [mine.start + (mine.stop - mine.start) * i // args.grad_accum for i in range(args.grad_accum + 1)]
    micro = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    loss = torch.zeros((), device=args.device)
    for i, rows in enumerate(micro):
        last = i == len(micro) - 1  # DDP sums the gradients across processes once, after the last one
        with contextlib.nullcontext() if last or run.ddp is None else run.ddp.no_sync():
            with autocast:
                share = share_of_loss(train_model, x0, noisy, rows, ar, args, mask_id, pad_id)
            (share * distributed.world()[1]).backward()  # DDP averages over processes; the shares add up
        loss += share.detach()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), GRAD_CLIP)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    if run.ema is not None:  # ema += (1 - decay) * (weights - ema); a shorter memory in the first steps
        decay = min(args.ema, (1 + run.step) / (10 + run.step))
        torch._foreach_lerp_(list(run.ema.parameters()), list(run.model.parameters()), 1 - decay)
    if data["kind"] == "names" and not ar:  # per token -> per character, as evaluated (SPEC 5)
        loss = loss * x0.numel() / ((x0 != pad_id).sum() + len(x0))
    return loss


def evaluate_and_save(run, writer, data, ar, args, autocast, train_loss):
    """The held-out loss at this step, and a checkpoint when it is the best so far (written in the
    background). -> (value, standard error over items, over draws, improved)."""
    process, options = process_of(args, ar)
    val, se, draw_se = evaluate(run.evaluated, data, ar, args.eval_draws, not args.eval_full, autocast,
                                run.train_config["mask_id"], run.train_config["pad_id"], process, options)
    if not (math.isfinite(train_loss) and math.isfinite(val)):
        raise TrainingError(f"the {run.name} diverged by step {run.step} (training loss {train_loss:g}, held-out "
                            f"{val:g}) and nothing after it was saved; try a lower --lr.")
    improved = val < run.best
    if improved:
        run.best, run.saved_step = val, run.step
        writer.save(run.path, model=run.evaluated.state_dict(), optimizer=run.optimizer.state_dict(),
                    **({"model_raw": run.model.state_dict()} if run.ema is not None else {}),
                    model_args=asdict(run.model.config), config=run.train_config, itos=data["itos"], step=run.step,
                    best_val_loss=run.best, rng=dict(batches=run.generator.get_state(), **devices.rng_state(args.device)))
    return val, se, draw_se, improved


def train(args, data, ar, say=print):
    """Train one model (diffusion, or the AR twin when ar=True) from a new or resumed run: steps,
    a held-out evaluation every eval_interval steps (or at --eval-at) and at the end, the best
    checkpoint kept. Returns a summary dict."""
    devices.setup(args.device, args.deterministic)  # idempotent: main() has usually done it already
    run = start_run(args, data, ar, say)
    config, autocast = run.model.config, make_autocast(args)
    mask_id, pad_id = run.train_config["mask_id"], run.train_config["pad_id"]
    train_model = distributed.wrap(run.model, args.device)  # under torchrun: DDP; else the model itself
    run.ddp = train_model if train_model is not run.model else None
    # evaluation runs uncompiled: its batches have other shapes, and it runs a few times only
    train_model = compile_or_eager(train_model, data, ar, args, autocast, mask_id, pad_id) if args.compile else train_model
    say(f"{run.name}: {config.n_layer} layers, {config.n_head} heads, n_embd {config.n_embd}, block size "
        f"{config.block_size}, {run.model.num_params():,} parameters; {devices.describe(args.device)}, "
        f"{args.precision}{', compiled' if args.compile else ''}")
    loss_name = "NLL" if ar else "NELBO"
    best_step, history, history_draw_se, running, n_running = run.step, [], [], torch.zeros((), device=args.device), 0
    first_step, eval_seconds, start = run.step, 0.0, time.time()
    bar = tqdm(total=args.max_iters, initial=run.step, disable=True if args.quiet or not distributed.is_main() else None,  # None: off when not a terminal
               desc=run.name, unit="step", leave=False)
    with CheckpointWriter() as writer:  # leaving it, even by Ctrl-C, finishes the last write first
        while run.step < args.max_iters:
            running += train_step(run, train_model, data, ar, args, autocast)  # summed on the device: no host sync
            n_running += 1
            bar.update(1)
            due = run.step in args.eval_at if args.eval_at else run.step % args.eval_interval == 0
            if due or run.step == args.max_iters:
                train_loss, eval_start = distributed.sum_over_ranks(running).item() / n_running, time.time()
                if distributed.is_main():  # one process evaluates and saves; under torchrun the others wait
                    val, se, draw_se, improved = evaluate_and_save(run, writer, data, ar, args, autocast, train_loss)
                    best_step = run.step if improved else best_step
                    history.append((run.step, train_loss, val, se))
                    history_draw_se.append(draw_se)
                    if not args.quiet:
                        bar.write(f"step {run.step}: train {loss_name} {train_loss:.4f}, held-out {loss_name} {val:.4f} "
                                  f"+- {se:.4f} nats/char ({estimate_label(data, args, ar, False)})"
                                  f"{', best, saved' if improved else ''}")
                distributed.barrier()
                running, n_running = torch.zeros((), device=args.device), 0
                eval_seconds += time.time() - eval_start
    bar.close()
    return dict(name=run.name, model=run.evaluated, config=config, path=run.path, best=run.best, best_step=best_step,
                seconds=time.time() - start, eval_seconds=eval_seconds,
                tokens=(run.step - first_step) * args.batch_size * config.block_size, history=history,
                history_draw_se=history_draw_se, autocast=autocast, mask_id=mask_id, pad_id=pad_id,
                saved_step=run.saved_step, noise=run.train_config["noise"])


def final_evaluation(result, data, args):
    """Reload the best checkpoint and measure it with more draws: the figure to report. Only a
    checkpoint this run wrote (or resumed from) counts: one left in --out by another run never does."""
    ckpt = read_checkpoint(result["path"]) if result["saved_step"] is not None else None
    if ckpt is None or ckpt["step"] != result["saved_step"]:
        raise TrainingError(f"this run wrote no checkpoint to {result['path']}, so it has no figure to report.")
    model = result["model"]
    model.load_state_dict(ckpt["model"])
    one_pass = data["kind"] == "text"  # names: all L mask sizes of every name; windows: one k per draw
    ar = result["config"].causal
    return evaluate(model, data, ar, args.final_draws, one_pass, result["autocast"], result["mask_id"],
                    result["pad_id"], *process_of(args, ar))


def estimate_label(data, args, ar, final, noise="masked"):
    """What a printed held-out figure is, in words: the two estimates of a run are not the same figure."""
    if ar:
        return "exact NLL"
    draws = args.final_draws if final else args.eval_draws
    plural = "s" * (draws > 1)
    if not final and not args.eval_full:
        return f"one-pass estimate, {draws} draw{plural}"
    if noise != "masked":
        return f"{data['block_size']} stratified times per sequence, {draws} draw{plural}"
    form = "one-pass L/k form" if data["kind"] == "text" else "full discrete form"
    if args.block:
        form = f"{'one-pass b/k form' if data['kind'] == 'text' else 'full discrete form'} of each block of {args.block}"
    return f"{form}, {draws} mask draw{plural}"


def ratio_text(diff, ar_twin):
    """The diffusion / AR ratio and how far the mask draws could move it (the AR twin's NLL is exact;
    both models are scored on the same held-out items, so their spread over items is shared)."""
    ratio = diff["nats"] / ar_twin["nats"]
    return f"ratio diffusion / AR: {ratio:.4f} +- {diff['draw_se'] / ar_twin['nats']:.4f} (draws)"


def figure_text(nats, se, draw_se):
    """'2.0799 +- 0.0091 (items) +- 0.0019 (draws)': both standard errors, each named."""
    draws = "" if draw_se == 0 else f" +- {draw_se:.4f} (draws)"
    return f"{nats:.4f} +- {se:.4f} (items){draws}"


NOISE_SAMPLE_STEPS = 64  # reverse steps of the uniform and Gaussian samplers (every step redraws every position)
LEGENDS = {"masked": "'{mask}' is MASK", "uniform": "every letter may still be noise",
           "gaussian": "each position shown as its nearest letter"}  # how to read a printed trajectory


def sample_process(model, process, options, n, L, generator, device, precision, steps):
    """n samples (n, L) from a trained denoiser by its process's ancestral sampler, and the trajectory
    as ids (n, L) per step (Gaussian noise: the nearest letter of each z, its argmax) with its times."""
    from torch_version.sample import make_denoiser  # sample.py never imports train.py
    denoise = make_denoiser(model.eval(), device, precision)  # host tensors in and out, run on the device
    out = process.sample_ancestral(denoise, n, L, model.config.n_out, generator, steps, **options)
    trajectory = [x.argmax(-1) if x.dim() == 3 else x for x in out.trajectory[:-1]] + [out.samples]
    return out.samples, trajectory, out.times


def sample_noise(model, noise, n, L, generator, device, precision, steps=NOISE_SAMPLE_STEPS, options=None):
    """n samples (n, L) from a uniform- or Gaussian-noise model, and its trajectory as ids."""
    samples, trajectory, _ = sample_process(model, PROCESSES[noise], options or {}, n, L, generator, device,
                                            precision, steps)
    return samples, trajectory


def print_samples(result, data, args):
    """Samples of the trained diffusion model by its process's ancestral sampler, with one trajectory."""
    itos, L = data["itos"], data["block_size"]
    process, options = process_of(args)
    n = args.samples if data["kind"] == "names" else 1
    steps = {"masked": L,  # a step per position; block diffusion: many per position of a block, one call per change
             "block": args.block * block.STEPS_PER_POSITION}.get(process_name(args), NOISE_SAMPLE_STEPS)
    samples, trajectory, times = sample_process(result["model"], process, options, n, L,
                                                torch.Generator().manual_seed(args.seed), args.device,
                                                args.precision, steps)
    if data["kind"] == "names":
        print("samples:", " ".join(diffusion.decode(s, itos).rstrip(itos[0]) for s in samples))
        if not args.quiet:
            legend = LEGENDS[result["noise"]].format(mask=itos[-1])
            print(f"denoising trajectory of the first sample ({legend}, '{itos[0]}' is PAD):")
            every = max(1, (len(trajectory) - 1) // 16)  # at most 17 lines or so
            for i in sorted(set(range(0, len(trajectory), every)) | {len(trajectory) - 1}):
                print(f"t={times[i]:.2f} {diffusion.decode(trajectory[i][0], itos)}")
    else:
        print(f"a sample ({L} characters):\n{diffusion.decode(samples[0], itos)}")


# ---------------------------------------------------------------- putting it together
def build_parser():
    """train.py's flags (--help is the reference). A flag left unset takes the dataset's preset (parse_args).
    One flag per line: a list that reads best whole, so this function stays long."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="names", help="names, shakespeare, or a PATH to a UTF-8 text file")
    parser.add_argument("--size", choices=list(SIZES), help="Shakespeare: full (10.7M parameters, 256 characters, a "
                        "GPU job; the default), small (0.8M, 64 characters, minutes on a CPU) or laptop (0.8M, 256 "
                        "characters, block diffusion, half an hour on a CPU)")
    parser.add_argument("--ar", action="store_true", help="train the autoregressive twin instead")
    parser.add_argument("--both", action="store_true", help="train diffusion, then the AR twin; compare")
    parser.add_argument("--max-iters", type=cli.count(1), help=f"optimizer steps (names: {MAX_ITERS})")
    parser.add_argument("--eval-interval", type=cli.count(1), help=f"steps between evaluations (names: {EVAL_INTERVAL})")
    parser.add_argument("--eval-at", type=cli.list_of(cli.count(1)), help="evaluate at these steps instead (comma-separated, "
                        "e.g. a log grid: bench/crossover.py), and at the last")
    parser.add_argument("--eval-draws", type=cli.count(1), help=f"mask sets per sequence per evaluation (names: {EVAL_DRAWS})")
    parser.add_argument("--eval-full", action="store_true", help="names: evaluate during training in the final "
                        "figure's full discrete form (L passes per draw) instead of the one-pass form")
    parser.add_argument("--final-draws", type=cli.count(1), help=f"... for the final figure (names: {FINAL_DRAWS})")
    parser.add_argument("--batch-size", type=cli.count(1), help=f"sequences per step (names: {BATCH_SIZE}), in all: "
                        f"under torchrun the processes share them")
    parser.add_argument("--grad-accum", type=cli.count(1, 65536), default=GRAD_ACCUM, help="micro-batches per step: "
                        "the same step as one batch (its gradient summed over them), in a fraction of the memory")
    parser.add_argument("--lr", type=cli.positive, help=f"peak learning rate (names: {LEARNING_RATE})")
    parser.add_argument("--n-layer", type=cli.count(1, 256), help=f"transformer blocks (names: {N_LAYER})")
    parser.add_argument("--n-head", type=cli.count(1, 256), help=f"attention heads (names: {N_HEAD})")
    parser.add_argument("--n-embd", type=cli.count(2, 16384), help=f"residual width (names: {N_EMBD})")
    parser.add_argument("--dropout", type=cli.fraction, help=f"dropout (names: {DROPOUT})")
    parser.add_argument("--optimizer", choices=["muon", "adamw"],
                        help=f"muon: Muon for the blocks' matrices, AdamW for the rest; adamw: AdamW for all "
                        f"(names: {OPTIMIZER})")
    parser.add_argument("--weight-decay", type=cli.number(0), default=WEIGHT_DECAY, help="decoupled weight decay")
    parser.add_argument("--ema", type=cli.fraction, default=EMA, help="evaluate an EMA of the weights with this decay "
                        "(e.g. 0.999; 0: the weights themselves)")
    parser.add_argument("--positions", choices=["rope", "learned", "both"], default="both",
                        help="rotary (relative), learned (absolute) or both")
    parser.add_argument("--activation", choices=["gelu", "relu2"], default="gelu", help="MLP nonlinearity")
    parser.add_argument("--noise", choices=["masked", "uniform", "gaussian"], default="masked",
                        help="the forward process: MASK tokens (the default, diffusion.py), random letters "
                        "(processes/uniform.py) or Gaussian noise on one-hot embeddings (processes/gaussian.py); "
                        "each trains and is scored on its own NELBO, and the AR twin is the same for all three")
    parser.add_argument("--block", type=cli.count(0, 65536),
                        help="block diffusion (processes/block.py) with blocks of this many characters, a divisor "
                        "of the window: 1 is the AR twin's factorisation, the window the masked model's (0: off)")
    parser.add_argument("--objective", choices=["k", "time"], default="k",
                        help="masked noise: train on the k-masked form of the NELBO (k) or the continuous-time form (time)")
    parser.add_argument("--schedule", choices=["linear", "cosine"], default=diffusion.SCHEDULE,
                        help="noise schedule of --objective time and of --noise uniform (Gaussian noise has its own)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu for names, else the best found: "
                        "cuda, mps, cpu; see devices.py)")
    parser.add_argument("--dtype", choices=devices.PRECISIONS, default="auto",
                        help="auto: bf16 autocast on GPUs with bf16 tensor cores (compute capability 8.0+), "
                        "float32 elsewhere (TF32 matrix products on CUDA)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help="torch.compile the training step (default: on for names and on CUDA; "
                        "falls back to uncompiled where it fails)")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                        help="torch's deterministic algorithms on CPU and CUDA, so the same seed gives the same "
                        "numbers (default: on)")
    parser.add_argument("--threads", type=cli.count(0, 1024), default=0, help="CPU threads for torch (0: torch's default, one per "
                        "core; 1 is faster when other programs keep the cores busy)")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed for weights, batches and masks")
    parser.add_argument("--out", help="checkpoint folder (default torch_version/out/<dataset>)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out, with the same "
                        f"flags; only {RESUME_MAY_CHANGE} may change (--both: a model with no checkpoint yet starts "
                        "afresh)")
    parser.add_argument("--samples", type=cli.count(0, 100_000), default=SAMPLES, help="names to sample at the end (0: none)")
    parser.add_argument("--data-dir", help="folder holding names.txt / tiny_shakespeare.txt")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, only the final figures")
    return parser


def parse_args(argv=None):
    """The flags, completed by the dataset's preset and checked: one sentence and exit 2 for a bad one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size and args.dataset != "shakespeare":
        parser.error("--size picks a Shakespeare preset; use it with --dataset shakespeare")
    preset = SIZES[args.size or "full"] if args.dataset == "shakespeare" else dict(
        n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, dropout=DROPOUT, batch_size=BATCH_SIZE, max_iters=MAX_ITERS,
        optimizer=OPTIMIZER, lr=LEARNING_RATE, eval_interval=EVAL_INTERVAL, eval_draws=EVAL_DRAWS, final_draws=FINAL_DRAWS,
        compile=COMPILE if args.dataset == "names" else False)
    preset = dict(preset, block=preset.get("block", 0) if args.noise == "masked" else 0)
    for key, value in preset.items():  # a flag wins over the dataset's preset
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.block_size = preset.get("block_size")  # text windows; names take theirs from the data
    if args.device is None:
        args.device = devices.default_device(f"shakespeare-{args.size}" if args.size else args.dataset)
    if args.compile is None:  # the Shakespeare preset: compiled where it pays and works, on CUDA
        args.compile = devices.kind(args.device) == "cuda"
    if problem := devices.device_problem(args.device):  # fail early, in one sentence
        parser.error(problem)
    try:
        args.precision = devices.precision(args.device, args.dtype)  # "bfloat16" or "float32"
    except ValueError as err:
        parser.error(str(err))
    if 12 * args.n_layer * args.n_embd ** 2 > MAX_PARAMS:  # the blocks' weights; Adam or Muon keeps 2-3x more
        parser.error(f"--n-layer {args.n_layer} and --n-embd {args.n_embd} make a model of about "
                     f"{12 * args.n_layer * args.n_embd ** 2 / 1e9:.1f}B parameters; this script trains up to "
                     f"{MAX_PARAMS / 1e9:.0f}B")
    if args.n_embd % args.n_head or (args.n_embd // args.n_head) % 2:
        parser.error("--n-embd must be a multiple of --n-head, with an even size per head (rotary positions)")
    if args.ar and args.both:
        parser.error("--both already trains the AR twin; drop --ar")
    if args.grad_accum * distributed.world()[1] > args.batch_size:
        parser.error(f"--grad-accum {args.grad_accum} across {distributed.world()[1]} process(es) leaves a micro-batch "
                     f"without rows: at most {args.batch_size // distributed.world()[1]} for a batch of {args.batch_size}")
    if args.block and (args.noise != "masked" or args.objective != "k"):
        parser.error("--block is masked diffusion cut into blocks, trained on the k-masked form: drop --noise and --objective")
    if args.out is None:
        args.out = str(OUT_DIR / (Path(args.dataset).stem + (f"_{args.size}" if args.size not in (None, "full") else "")))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if problem := output_problem(args.out):  # before any work
        sys.exit(f"error: {problem}")
    args.device = distributed.setup(args.device)  # under torchrun: join the other processes (a GPU each)
    devices.setup(args.device, args.deterministic)
    try:
        data = load_dataset(args.dataset, args.data_dir, args.device, args.block_size)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    if args.eval_full and data["kind"] != "names":
        sys.exit("error: --eval-full is for lists of names: a text window's full discrete form costs a pass per character.")
    if args.block and data["block_size"] % args.block:
        sys.exit(f"error: --block {args.block} does not divide the window of {data['block_size']} characters into "
                 f"whole blocks; pick a divisor of {data['block_size']}.")
    say = (lambda *a: None) if args.quiet or not distributed.is_main() else print
    itos = data["itos"]
    if data["kind"] == "names":
        say(f"{args.dataset}: {data['n_train'] + len(data['held']):,} items: {data['n_train']:,} train, "
            f"{len(data['held']):,} held out; vocabulary {len(itos)} ({''.join(itos)}), block size {data['block_size']}")
    else:
        say(f"{args.dataset}: {data['n_train']:,} training characters, {len(data['held'])} held-out windows of "
            f"{data['block_size']}; vocabulary {len(itos)} (MASK is {itos[-1]!r})")
    try:
        return train_and_report(args, data, say)
    except (CheckpointError, TrainingError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        if distributed.is_main():
            print(f"\nstopped; the checkpoints in {args.out} are whole: run the same command with --resume to "
                  f"continue where the last one was saved.", file=sys.stderr)
        sys.exit(130)
    finally:
        distributed.teardown()


def train_and_report(args, data, say):
    """Train the model(s) the flags ask for, then print each one's held-out figure and samples."""
    results = []
    for ar in ([False, True] if args.both else [args.ar]):
        result = train(args, data, ar, say)
        if not distributed.is_main():  # under torchrun, process 0 reports
            continue
        nats, se, draw_se = final_evaluation(result, data, args)
        result.update(nats=nats, se=se, draw_se=draw_se)
        results.append(result)
        what = "NLL" if ar else "NELBO"
        print(f"{result['name']}: {result['best_step']} steps at best, trained in {result['seconds']:.1f} s; "
              f"held-out {what} ({estimate_label(data, args, ar, True, result['noise'])}): {figure_text(nats, se, draw_se)} "
              f"nats/char ({nats / math.log(2):.4f} bits/char)")
        if not ar and args.samples:
            print_samples(result, data, args)
    if args.both and results:
        diff, ar_twin = results
        print(f"\n{'held-out, nats/char':<22}{'value':>10}{'+- items':>10}{'+- draws':>10}{'best step':>11}{'train s':>9}")
        for r in results:
            print(f"{r['name']:<22}{r['nats']:>10.4f}{r['se']:>10.4f}{r['draw_se']:>10.4f}{r['best_step']:>11}"
                  f"{r['seconds']:>9.1f}")
        print(ratio_text(diff, ar_twin))
    return results


if __name__ == "__main__":
    cli.run(main)
