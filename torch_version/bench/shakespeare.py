"""Benchmark: the full Shakespeare config on a GPU: speed, MFU, and diffusion vs its AR twin.

What it measures, for the 10.7M-parameter config of train.py --dataset shakespeare:
1. training throughput, eager and compiled side by side: milliseconds per step and tokens
   (characters) per second over --timing-iters steady steps (300 by default) after a warm-up,
   in the precision the device policy gives (devices.py: bf16 autocast where the GPU has bf16
   tensor cores), for the diffusion model and the AR twin. Compilation is timed on its own
   (torch.compile plus the first compiled step) and is not part of the steady figures;
2. MFU, model FLOPs utilisation: achieved FLOP/s / the GPU's dense peak in that precision (bf16
   tensor cores, or TF32 for float32), looked up by the GPU's name. FLOPs per token are the
   standard estimate 6N + 12 * n_layer * n_embd * T (PaLM appendix B, nanoGPT): 6N for the forward
   and backward matrix products of the N weights, and the attention scores and mixing (T keys
   per query, no causal halving counted);
3. held-out loss after the same number of training tokens (same steps, batch and window): the
   diffusion NELBO (one-pass L / k form, many draws) beside the AR twin's exact NLL, on the same
   256-character validation windows, each at its best checkpoint.

    python3 torch_version/bench/shakespeare.py                    # H100 / H200: a few minutes
    python3 torch_version/bench/shakespeare.py --peak-tflops 312  # a GPU not in PEAK_TFLOPS
    python3 torch_version/bench/shakespeare.py --device cpu --no-compile --max-iters 3 \\
        --timing-iters 2 --final-draws 1                          # a smoke test of the whole path

Changes from bench/names.py: a GPU job; it adds the speed figures (tokens/s, MFU) and keeps
train.py's Shakespeare preset (flags such as --max-iters or --batch-size override it).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `torch_version` imports from any folder
from data.fetch import DatasetError  # noqa: E402
from torch_version.engine.checkpoints import CheckpointError  # noqa: E402
from common import cli  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version import train as T  # noqa: E402

# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets: (bf16, TF32).
# Names are matched in this order, so the more specific come first: "NVIDIA H200 NVL" is the
# 600 W PCIe card, "NVIDIA H200" the SXM module, "NVIDIA H100 80GB HBM3" the H100 SXM.
# GPUs without bf16 tensor cores train in float32 (devices.py); their peak is the float32 one.
PEAK_TFLOPS = {
    "H200 NVL": (835.5, 417.8), "H200": (989.4, 494.7),
    "H100 NVL": (835.5, 417.8), "H100 PCIe": (756.0, 378.0), "H100": (989.4, 494.7),
    "A100": (312.0, 156.0), "L40S": (362.1, 181.0), "L4": (121.0, 60.0), "A10G": (70.0, 35.0),
    "A10": (125.0, 62.5), "RTX 4090": (165.2, 82.6), "RTX 3090": (71.0, 35.6),
    "T4": (None, 8.1), "V100": (None, 15.7),  # no bf16, no TF32: plain float32 peaks
}
WARMUP_STEPS = 10      # steps before the timer starts: allocator and autotuning warm-up
TIMING_ITERS = 300     # steps timed for throughput (an H200 runs 100 of them in well under a second)


def peak_flops(device_name, precision, override_tflops=None):
    """Peak FLOP/s of the GPU named `device_name` in `precision`: the flag, else the table, else None."""
    if override_tflops:
        return override_tflops * 1e12
    for key, (bf16, tf32) in PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            tflops = bf16 if precision == "bfloat16" else tf32
            return tflops * 1e12 if tflops else None
    return None


def flops_per_token(model):
    """6N + 12 * n_layer * n_embd * T: N counts the weights used in matrix products (the token
    embedding is a table lookup, so it is left out)."""
    c = model.config
    tables = model.wte.weight.numel() + (model.wpe.weight.numel() if model.wpe is not None else 0)
    n_matmul = model.num_params() - tables
    return 6 * n_matmul + 12 * c.n_layer * c.n_embd * c.block_size


def throughput(args, data, ar, compiled):
    """(seconds per steady training step, seconds spent compiling or None, the model): the step of
    train.py (batch, loss, backward, clip, optimizer), eager or through train.compile_or_eager
    (which falls back to eager, with one line, where compiling fails)."""
    model, optimizer = T.build(args, data, ar)
    autocast, generator = T.make_autocast(args), torch.Generator().manual_seed(args.seed)
    mask_id, pad_id = len(data["itos"]) - 1, None
    compile_seconds, train_model = None, model
    if compiled:
        start = time.time()
        train_model = T.compile_or_eager(model, data, ar, args, autocast, mask_id, pad_id)  # compiles, one step
        devices.sync(args.device)
        compile_seconds = time.time() - start
    for i in range(WARMUP_STEPS + args.timing_iters):
        if i == WARMUP_STEPS:
            devices.sync(args.device)
            start = time.time()
        x0 = T.get_batch(data, args.batch_size, generator)
        with autocast:
            loss = T.batch_loss(train_model, x0, ar, generator, args, mask_id, pad_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), T.GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    devices.sync(args.device)
    return (time.time() - start) / args.timing_iters, compile_seconds, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak-tflops", type=cli.positive, help="the device's peak bf16 dense TFLOP/s, for MFU "
                        "(default: looked up by GPU name)")
    parser.add_argument("--timing-iters", type=cli.count(1, 100_000), default=TIMING_ITERS, help="steps timed for throughput")
    parser.add_argument("--no-compile", action="store_true", help="time and train without torch.compile")
    parser.add_argument("--skip-training", action="store_true", help="speed figures only")
    ours, rest = parser.parse_known_args(argv)
    args = T.parse_args(["--dataset", "shakespeare", "--quiet"] + rest)  # train.py's flags and preset
    if ours.no_compile:
        args.compile = False
    args.timing_iters = ours.timing_iters
    devices.setup(args.device, args.deterministic)
    try:
        data = T.load_dataset(args.dataset, args.data_dir, args.device, args.block_size)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    name = devices.describe(args.device)
    peak = peak_flops(name, args.precision, ours.peak_tflops)
    print(f"Shakespeare, {name}: batch {args.batch_size} x {data['block_size']} characters, {args.precision}; "
          f"peak {f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown (MFU needs --peak-tflops)'}; "
          f"{args.timing_iters} timed steps after {WARMUP_STEPS} of warm-up")

    print(f"\n{'speed':<22}{'parameters':>12}{'FLOPs/token':>13}{'ms/step':>9}{'tokens/s':>13}{'MFU':>7}"
          f"{'compile s':>11}")
    for ar in (False, True):
        for compiled in ([False, True] if args.compile else [False]):
            seconds, compile_seconds, model = throughput(args, data, ar, compiled)
            tokens_per_s = args.batch_size * data["block_size"] / seconds
            flops = flops_per_token(model)
            mfu = f"{tokens_per_s * flops / peak:.1%}" if peak else "n/a"
            label = f"{'AR twin' if ar else 'diffusion'}, {'compiled' if compiled else 'eager'}"
            print(f"{label:<22}{model.num_params():>12,}{flops / 1e6:>12.1f}M{seconds * 1e3:>9.2f}"
                  f"{tokens_per_s:>13,.0f}{mfu:>7}{f'{compile_seconds:.1f}' if compiled else '-':>11}", flush=True)
            del model
    if ours.skip_training:
        return

    results = []
    for ar in (False, True):
        try:
            result = T.train(args, data, ar, say=lambda *a: None)
            result["nats"], result["se"], result["draw_se"] = T.final_evaluation(result, data, args)
        except (CheckpointError, T.TrainingError) as err:  # a run reports only its own figures, or nothing
            sys.exit(f"error: {err}")
        results.append(result)
    tokens = results[0]["tokens"]
    print(f"\nheld-out after {tokens / 1e6:.1f}M training tokens ({args.max_iters} steps), "
          f"{len(data['held'])} validation windows of {data['block_size']}:")
    print(f"{'':<12}{'nats/char':>11}{'+- se':>9}{'bits/char':>11}{'best step':>11}{'train s':>9}{'tokens/s':>12}")
    for r in results:
        run_speed = r["tokens"] / (r["seconds"] - r["eval_seconds"])  # the whole run: compile time included
        print(f"{r['name']:<12}{r['nats']:>11.4f}{r['se']:>9.4f}{r['nats'] / math.log(2):>11.4f}"
              f"{r['best_step']:>11}{r['seconds']:>9.1f}{run_speed:>12,.0f}")
    print(f"ratio diffusion NELBO / AR NLL: {results[0]['nats'] / results[1]['nats']:.4f}")


if __name__ == "__main__":
    cli.run(main)
