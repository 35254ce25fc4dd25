"""A pretend accelerator for test machines without one: torch's "meta" device, watched.

A meta tensor has a shape, a dtype and a device, but no values. Like a CUDA or MPS tensor, it
cannot meet a host tensor in one operation (0-dim host tensors aside), so code that forgets to
move its data fails here as it would on a GPU. Under `pretend_accelerator()` three more rules hold:

- a float64 tensor made on the device fails at once: MPS has no float64, so float64 belongs to
  host-side code only;
- indexing a host tensor with device indices fails (CUDA refuses it; meta alone would not);
- copies from the device to the host, and .item(), give stand-in values (ones, or zeros for
  integers and booleans), so that the host code after them runs too: samplers, metrics, checkpoints.

So an entry point run with `--device meta` goes through every line that a GPU run goes through,
and the tests catch the two bug classes that only show on a GPU (a device mismatch, float64 on a
device without it) on a CPU-only machine. The figures such a run prints are meaningless.
"""
import traceback
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

DEVICE = "meta"
aten = torch.ops.aten


class Float64OnDevice(AssertionError):
    """A float64 tensor was made on the pretend accelerator."""


class DeviceMismatch(AssertionError):
    """Host data was indexed with device indices."""


def _on_device(x):
    return isinstance(x, torch.Tensor) and x.device.type == DEVICE


def _where():
    """The innermost frames of the project's own code: where the offending op was written."""
    frames = [f for f in traceback.extract_stack() if "/torch_version/" in f.filename or "/lessons/" in f.filename]
    return "; ".join(f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.line}"
                     for f in frames[-2:]) or "outside the project's code"


def _stand_in(host):
    """Fill a host tensor with the values a copy from the device stands for: 1 (floats), 0 (others)."""
    return host.fill_(1 if host.is_floating_point() else 0)


class PretendAccelerator(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        if func is aten._to_copy.default and _on_device(args[0]) and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cpu":  # device -> host: stand-in values
            return _stand_in(torch.empty(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype))
        if func is aten.copy_.default and not _on_device(args[0]) and _on_device(args[1]):
            return _stand_in(args[0])
        if func is aten._local_scalar_dense.default and _on_device(args[0]):
            return _stand_in(torch.empty((), dtype=args[0].dtype)).item()
        if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and not _on_device(args[0]) \
                and any(_on_device(x) for x in tensors[1:]):
            raise DeviceMismatch(f"host tensor indexed with device indices ({func}) at {_where()}")
        out = func(*args, **kwargs)
        for x in tree_flatten(out)[0]:
            if _on_device(x) and x.dtype == torch.float64:
                raise Float64OnDevice(f"float64 made on the device by {func} at {_where()}")
        return out


@contextmanager
def pretend_accelerator():
    """Every torch op inside runs under the rules of the module docstring."""
    with PretendAccelerator():
        yield DEVICE
