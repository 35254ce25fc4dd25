"""Copy a run's checkpoints as weights-only files for weights/, the checkpoints a clone samples from.

A training checkpoint holds the optimizer's moments and the random generators' states so that
--resume can continue exactly; to sample, evaluate or animate, only the weights, the model's
config, the vocabulary and the training config are needed, at a third of the size. These files
load like any checkpoint (torch_version/engine/checkpoints.load_checkpoint) but cannot be resumed.

    python3 tools/export_weights.py torch_version/out/names weights/names
    python3 tools/export_weights.py torch_version/out/shakespeare_small weights/shakespeare_small
    python3 tools/export_weights.py torch_version/out/bench_names weights/names --files ckpt_uniform.pt ckpt_gaussian.pt
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `torch_version` imports from any folder
from torch_version.engine.checkpoints import CheckpointError, read_checkpoint, save_checkpoint  # noqa: E402

KEPT = ("model", "model_args", "config", "itos", "step", "best_val_loss")


OPTIONAL = ("ckpt_uniform.pt", "ckpt_gaussian.pt")  # train.py --noise uniform / gaussian, when the run has them


def export(src, dst, files=None):
    """ckpt.pt and ckpt_ar.pt of folder src (and ckpt_uniform.pt, ckpt_gaussian.pt where src has
    them), or only the named `files`, -> weights-only copies in folder dst; their paths."""
    written = []
    files = files or ("ckpt.pt", "ckpt_ar.pt") + tuple(n for n in OPTIONAL if (Path(src) / n).is_file())
    for name in files:
        ckpt = read_checkpoint(Path(src) / name)
        save_checkpoint(Path(dst) / name, optimizer={}, weights_only_copy=True, **{k: ckpt[k] for k in KEPT})
        written.append(Path(dst) / name)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="a run's folder, holding ckpt.pt and ckpt_ar.pt")
    parser.add_argument("dst", help="the folder to write the weights-only copies to")
    parser.add_argument("--files", nargs="+", help="only these checkpoints of src (e.g. ckpt_uniform.pt)")
    args = parser.parse_args(argv)
    try:
        for path in export(args.src, args.dst, args.files):
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    except CheckpointError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
