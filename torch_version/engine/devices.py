"""Where the torch tier runs, and in what precision: one device policy for every entry point.

What it teaches: moving a model to a GPU is one line; keeping a run correct, reproducible and
fast there is a policy. Every script of this tier (train, sample, evaluate, visualize, the
benchmarks, lesson 03) takes its device and precision from here, and docs/devices.md says the
same in prose.

- Default device: names train on the CPU (a 52k-parameter model, whose README figures repeat
  bit for bit there); anything larger takes the best accelerator found: CUDA, then Apple's MPS,
  then the CPU. --device overrides it everywhere (cpu, cuda, cuda:1, mps).
- Precision: bf16 autocast only where the hardware has bf16 tensor cores (CUDA compute
  capability 8.0 and up: A100, H100, H200, L4, RTX 30xx/40xx). Everywhere else (a T4 or V100, MPS,
  the CPU) float32; on CUDA its matrix products use TF32 where the GPU has it.
- Randomness: every draw of the diffusion loop (batches, times, masks) comes from one CPU
  generator, so data and masks are the same on every device; float64 lives only in host-side
  code (MPS has none). Dropout uses the device's own generator, saved per device index.
- Determinism: torch's deterministic mode on the CPU and CUDA (cuBLAS needs its workspace
  setting before CUDA starts, set below); same seed, same machine, same thread count: same
  numbers. MPS makes no such promise.
"""
import os
from contextlib import nullcontext

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read when CUDA starts

import torch  # noqa: E402

PRECISIONS = ("auto", "float32", "bfloat16")


CPU_SIZED = ("names", "shakespeare-small", "shakespeare-laptop")  # small models whose README figures are CPU figures


def default_device(dataset="names"):
    """cpu for the CPU-sized presets (see the module docstring); else cuda, mps or cpu, the first found."""
    if dataset in CPU_SIZED:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def device_problem(device):
    """None if tensors can live on `device`, else one sentence saying why not."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as err:  # no such device, or a torch built without it
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        return f"cannot use --device {device!r} here ({first}); try --device cpu."
    return None


def kind(device):
    """'cuda', 'mps', 'cpu' (or 'meta', the tests' stand-in accelerator)."""
    return torch.device(device).type


def has_bf16(device):
    """bf16 tensor cores: CUDA compute capability 8.0 or more. (torch.cuda.is_bf16_supported() is
    also true on a T4 or V100, where bf16 is emulated and slower than float32.)"""
    return kind(device) == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def precision(device, dtype="auto"):
    """'bfloat16' or 'float32' for a run on `device` (--dtype auto, float32 or bfloat16);
    ValueError, one sentence, for bfloat16 where the hardware would only emulate it.
    The CPU accepts bfloat16 when asked (autocast supports it; it is rarely faster)."""
    if dtype not in PRECISIONS:
        raise ValueError(f"--dtype must be one of {', '.join(PRECISIONS)}, not {dtype!r}.")
    if dtype == "auto":
        return "bfloat16" if has_bf16(device) else "float32"
    if dtype == "bfloat16" and kind(device) in ("cuda", "mps") and not has_bf16(device):
        raise ValueError(f"{device} has no bf16 tensor cores (it would emulate bf16, slowly); use --dtype float32.")
    return dtype


def autocast(device, dtype):
    """bf16 autocast of the matrix products when `dtype` is 'bfloat16', else a context that does nothing."""
    if dtype == "bfloat16":
        return torch.autocast(kind(device), dtype=torch.bfloat16)
    return nullcontext()


def torch_dtype(dtype):
    """The activations' dtype under `dtype` (for caches that should match them)."""
    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


def setup(device, deterministic=True):
    """Once per process, before any work on `device`: make it the current CUDA device (so
    cuda:1 gets the kernels and the random state), let float32 matrix products use TF32 on CUDA,
    and turn on deterministic algorithms (CPU and CUDA) unless asked not to."""
    if kind(device) == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls on tensor cores (Ampere and up)
        torch.backends.cudnn.allow_tf32 = True
    if kind(device) in ("cpu", "cuda"):
        torch.use_deterministic_algorithms(deterministic)


def rng_state(device):
    """The random states a run uses besides its CPU generator: torch's CPU state and, on an
    accelerator, that device's own (dropout draws from it)."""
    state = dict(torch=torch.get_rng_state())
    if kind(device) == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif kind(device) == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"].cpu())
    if kind(device) == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    elif kind(device) == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"].cpu())


def fork_rng(device):
    """A block whose random draws leave every generator of the run as it found it."""
    devices = [torch.device(device).index or 0] if kind(device) == "cuda" else []
    return torch.random.fork_rng(devices=devices, device_type="cuda")


def sync(device):
    """Wait for the device's queued work: timings must include it."""
    if kind(device) == "cuda":
        torch.cuda.synchronize(device)
    elif kind(device) == "mps":
        torch.mps.synchronize()


def describe(device):
    """The device in words, for logs and reports: the GPU's name, or 'cpu' / 'mps'."""
    return torch.cuda.get_device_name(device) if kind(device) == "cuda" else kind(device)
