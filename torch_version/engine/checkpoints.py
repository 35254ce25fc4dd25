"""Checkpoints of the torch tier: written whole in the background, read back safely.

    save_checkpoint(path, **fields)       atomically (a temporary file, then a rename)
    CheckpointWriter().save(path, ...)    the same in a background thread; training does not wait
    read_checkpoint(path)                 torch.load(..., weights_only=True), every field checked
    load_checkpoint(path, device)         (model in eval mode on the device, checkpoint dict)
Every problem is a CheckpointError whose message is one sentence that says what to do.

A checkpoint is one dict, as in nanoGPT: model (weights), optimizer, model_args (ModelConfig),
config (the run's settings: dataset and its checksum, process, device, seed, ...), itos, step,
best_val_loss, and the random generators' states (rng) that make --resume exact.
"""
import threading
from pathlib import Path

import torch

from common.files import atomic_write, read_problem
from torch_version.model import ModelConfig, Transformer


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one sentence that says what to do."""


def save_checkpoint(path, **fields):
    """torch.save(fields) atomically (common/files.py: a temporary file, then a rename, so a run
    killed mid-write leaves the previous checkpoint whole). Fields hold only plain types and
    tensors, so torch.load(..., weights_only=True) reads them back."""
    atomic_write(path, lambda f: torch.save(fields, f))


def to_host(fields):
    """A copy of `fields` (dicts, lists, tensors, plain values) with every tensor copied to the CPU:
    the snapshot a checkpoint holds, independent of the training that goes on."""
    if isinstance(fields, torch.Tensor):
        return fields.detach().to("cpu", copy=True)
    if isinstance(fields, dict):
        return {key: to_host(value) for key, value in fields.items()}
    if isinstance(fields, (list, tuple)):
        return type(fields)(to_host(value) for value in fields)
    return fields


class CheckpointWriter:
    """save_checkpoint in a background thread, so that training does not wait for the disk (the
    Shakespeare config's checkpoint is 129 MB). save() takes the snapshot first (to_host), so the
    file holds the weights of that step; one write at a time; wait() returns when the last one is
    on disk, and raises its error, if any. The thread is not a daemon: a run stopped by Ctrl-C
    still finishes the write it started. As a context manager (`with CheckpointWriter() as w:`),
    leaving the block waits for the last write."""

    def __init__(self):
        self.thread, self.error = None, None

    def save(self, path, **fields):
        self.wait()
        snapshot = to_host(fields)
        self.thread = threading.Thread(target=self._write, args=(path, snapshot), name="checkpoint")
        self.thread.start()

    def _write(self, path, fields):
        try:
            save_checkpoint(path, **fields)
        except OSError as err:
            self.error = CheckpointError(f"cannot write the checkpoint {path} ({err.strerror or err}); "
                                         f"free some space or pick another --out.")

    def wait(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        """Leaving the block, by its end or by an error (Ctrl-C), the last write is finished first:
        whoever reads the checkpoint next reads it whole. A write's own error is raised only when
        nothing else is already on its way."""
        if kind is None:
            self.wait()
        elif self.thread is not None:
            self.thread.join()
        return False


CHECKPOINT_FIELDS = dict(model=dict, optimizer=dict, model_args=dict, config=dict, itos=list, step=int,
                         best_val_loss=(float, int))  # what every reader relies on, and its type


def read_checkpoint(path, device="cpu"):
    """The checkpoint dict, loaded with weights_only=True (no pickled code runs), or CheckpointError.
    Its tensors are mapped to `device`; the default, the CPU, lets a caller move only what it needs."""
    path = Path(path)
    if not path.is_file():
        how = ("torch_version/train.py --ar (the AR twin; --both trains it after the diffusion model)"
               if path.name == "ckpt_ar.pt" else "torch_version/train.py")
        raise CheckpointError(f"no checkpoint at {path}; train one first with {how}.")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except OSError as err:  # permissions, a folder: not the file's fault
        raise CheckpointError(read_problem(err, path)) from None
    except Exception as err:  # truncated, not a torch file, or holding objects weights_only refuses
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}); "
                              f"delete it and train again.") from None
    wrong = [k for k, kind in CHECKPOINT_FIELDS.items() if not isinstance(ckpt, dict) or not isinstance(ckpt.get(k), kind)]
    if not wrong and not all(isinstance(c, str) for c in ckpt["itos"]):
        wrong = ["itos"]
    if wrong:
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing or malformed: {', '.join(wrong)}); "
                              f"train it again.")
    return ckpt


def load_checkpoint(path, device="cpu"):
    """(model in eval mode on `device`, checkpoint dict on the CPU): only the weights move to the
    device; the optimizer's moments, twice their size, stay on the host."""
    ckpt = read_checkpoint(path)
    try:
        model = Transformer(ModelConfig(**ckpt["model_args"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, AssertionError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not fit this version of model.py ({first_line}); "
                              f"train it again.") from None
    return model.to(device).eval(), ckpt
