"""Benchmark: the full Shakespeare config on a GPU: speed, MFU, and diffusion vs its AR twin.

What it measures, for the 10.7M-parameter config of train.py --dataset shakespeare:
1. training throughput in tokens (characters) per second, bf16 autocast and torch.compile on,
   timed over steady steps after a compile warm-up, for the diffusion model and the AR twin;
2. MFU, model FLOPs utilisation: achieved FLOP/s / the GPU's peak bf16 dense FLOP/s. FLOPs per
   token are the standard estimate 6N + 12 * n_layer * n_embd * T (PaLM appendix B, nanoGPT):
   6N for the forward and backward matrix products of the N weights, and the attention
   scores and mixing (T keys per query, no causal halving counted);
3. held-out loss after the same number of training tokens (same steps, batch and window): the
   diffusion NELBO (one-pass L / k form, many draws) beside the AR twin's exact NLL, on the same
   256-character validation windows, each at its best checkpoint.

    python3 torch_version/bench_shakespeare.py                    # H100 / H200: a few minutes
    python3 torch_version/bench_shakespeare.py --peak-tflops 312  # a GPU not in PEAK_TFLOPS (here A100)
    python3 torch_version/bench_shakespeare.py --device cpu --no-compile --max-iters 3 \\
        --timing-iters 2 --final-draws 1                          # a smoke test of the whole path

Changes from bench_names.py: a GPU job; it adds the speed figures (tokens/s, MFU) and keeps
train.py's Shakespeare preset (flags such as --max-iters or --batch-size override it).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `torch_version` imports from any folder
from data.fetch import DatasetError  # noqa: E402
from torch_version import train as T  # noqa: E402

PEAK_TFLOPS = {  # dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (no sparsity)
    "H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4,
    "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.2, "RTX 3090": 71.0,
}
WARMUP_STEPS = 10      # steps before the timer starts: compilation and allocator warm-up
TIMING_ITERS = 100     # steps timed for throughput


def peak_flops(device, override_tflops=None):
    """Peak bf16 FLOP/s of the device: the flag, else looked up by the GPU's name, else None."""
    if override_tflops:
        return override_tflops * 1e12
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():  # more specific names come first in the table
        if key.lower() in name.lower():
            return tflops * 1e12
    return None


def flops_per_token(model):
    """6N + 12 * n_layer * n_embd * T: N counts the weights used in matrix products (the token
    embedding is a table lookup, so it is left out)."""
    c = model.config
    tables = model.wte.weight.numel() + (model.wpe.weight.numel() if model.wpe is not None else 0)
    n_matmul = model.num_params() - tables
    return 6 * n_matmul + 12 * c.n_layer * c.n_embd * c.block_size


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def throughput(args, data, ar):
    """Tokens per second of steady training steps (same step as train.py: batch, loss, backward,
    clip, AdamW), after WARMUP_STEPS; and the model, for its FLOP count."""
    model, optimizer = T.build(args, data, ar)
    train_model = torch.compile(model) if args.compile else model
    autocast, generator = T.make_autocast(args), torch.Generator(args.device).manual_seed(args.seed)
    mask_id, pad_id = len(data["itos"]) - 1, None
    for i in range(WARMUP_STEPS + args.timing_iters):
        if i == WARMUP_STEPS:
            sync(args.device)
            start = time.time()
        x0 = T.get_batch(data, args.batch_size, generator)
        with autocast:
            loss = T.batch_loss(train_model, x0, ar, generator, args, mask_id, pad_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), T.GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(args.device)
    seconds = time.time() - start
    return args.timing_iters * args.batch_size * data["block_size"] / seconds, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak-tflops", type=float, help="the device's peak bf16 dense TFLOP/s, for MFU "
                        "(default: looked up by GPU name)")
    parser.add_argument("--timing-iters", type=int, default=TIMING_ITERS, help="steps timed for throughput")
    parser.add_argument("--no-compile", action="store_true", help="time and train without torch.compile")
    parser.add_argument("--skip-training", action="store_true", help="speed figures only")
    ours, rest = parser.parse_known_args(argv)
    if ours.timing_iters < 1:
        parser.error("--timing-iters must be at least 1")
    args = T.parse_args(["--dataset", "shakespeare", "--quiet"] + rest)  # train.py's flags and preset
    args.compile, args.timing_iters = not ours.no_compile, ours.timing_iters
    try:
        T.check_device(args.device)
        data = T.load_dataset(args.dataset, args.data_dir)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    for key in ("train", "held"):
        data[key] = data[key].to(args.device)
    peak = peak_flops(args.device, ours.peak_tflops)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
    print(f"Shakespeare, {device_name}: batch {args.batch_size} x {data['block_size']} characters, "
          f"{'bf16' if isinstance(T.make_autocast(args), torch.autocast) else 'float32'}"
          f"{', compiled' if args.compile else ''}; peak "
          f"{f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown (MFU needs --peak-tflops)'}")

    print(f"\n{'speed':<12}{'parameters':>12}{'FLOPs/token':>14}{'tokens/s':>14}{'MFU':>8}")
    for ar in (False, True):
        tokens_per_s, model = throughput(args, data, ar)
        flops = flops_per_token(model)
        mfu = f"{tokens_per_s * flops / peak:.1%}" if peak else "n/a"
        print(f"{'AR twin' if ar else 'diffusion':<12}{model.num_params():>12,}{flops / 1e6:>13.1f}M"
              f"{tokens_per_s:>14,.0f}{mfu:>8}")
        del model
    if ours.skip_training:
        return

    results = []
    for ar in (False, True):
        result = T.train(args, data, ar, say=lambda *a: None)
        result["nats"], result["se"] = T.final_evaluation(result, data, args)
        results.append(result)
    tokens = results[0]["tokens"]
    print(f"\nheld-out after {tokens / 1e6:.1f}M training tokens ({args.max_iters} steps), "
          f"{len(data['held'])} validation windows of {data['block_size']}:")
    print(f"{'':<12}{'nats/char':>11}{'+- se':>9}{'bits/char':>11}{'best step':>11}{'train s':>9}{'tokens/s':>12}")
    for r in results:
        run_speed = r["tokens"] / (r["seconds"] - r["eval_seconds"])  # whole run, compilation included
        print(f"{r['name']:<12}{r['nats']:>11.4f}{r['se']:>9.4f}{r['nats'] / math.log(2):>11.4f}"
              f"{r['best_step']:>11}{r['seconds']:>9.1f}{run_speed:>12,.0f}")
    print(f"ratio diffusion NELBO / AR NLL: {results[0]['nats'] / results[1]['nats']:.4f}")


if __name__ == "__main__":
    main()
