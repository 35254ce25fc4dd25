"""Benchmark: when data runs out, does diffusion win? The denoiser and the AR twin over many epochs.

What it measures: on names (28,829 training names, about 200K characters) the AR twin reaches its
best held-out loss early and then overfits, while the denoiser is still improving at the end of
the default budget. Trained for many passes over the same names, does the denoiser's held-out
NELBO ever go below the AR twin's best NLL? For each model width and each model (diffusion, AR),
every regularisation setting of a small sweep (dropout) is trained for EPOCHS passes (one cosine schedule
over the whole run), and scored on a log grid of epochs (1, 2, 4, ..., EPOCHS): the denoiser by
its one-pass estimate with CURVE_DRAWS draws, the AR twin by its exact NLL, each with its standard
error over the held-out names. Each model and width is then compared at its best setting and
checkpoint (SPEC 5), measured again there as train.py's final figure (the full discrete form,
16 draws).

    python3 torch_version/bench_crossover.py --short           # the machinery, in a few minutes
    python3 torch_version/bench_crossover.py                   # the whole grid: hours on 2 CPU cores
    python3 torch_version/bench_crossover.py --budget-minutes 60   # stop after an hour; rerun to go on

Resumable by run: every finished run is added to out/crossover/curves.json (written atomically),
and a rerun with the same flags skips the runs already there; an interrupted run starts again
from its first step, with its own seed, so the file ends the same either way. --budget-minutes
starts no new run after that many minutes (each call finishes at least one). `--plot` redraws docs/crossover.png from the file.

Changes from bench_names.py: many epochs instead of the default budget, a log grid of
evaluations, a regularisation sweep per model, several widths, and a curve file that survives.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from common.files import atomic_write, output_problem  # noqa: E402
from data.fetch import DatasetError  # noqa: E402
from torch_version.model import CheckpointError  # noqa: E402
from torch_version import devices, train as T  # noqa: E402

EPOCHS = 100         # passes over the training names per run (the default budget is about 62)
WIDTHS = [16, 32]    # model widths (4 layers, 4 heads each)
CURVE_DRAWS = 16     # one-pass draws per held-out name at each checkpoint of the curve
SWEEPS = {           # regularisation settings per model: train.py flags; each model is compared at its best
    "diffusion": [[], ["--dropout", "0.1"]],
    "AR twin": [[], ["--dropout", "0.1"], ["--dropout", "0.2"]],
}
SHORT = dict(epochs=4, widths=[16], sweeps={"diffusion": [[]], "AR twin": [[], ["--dropout", "0.1"]]})
OUT = T.OUT_DIR / "crossover"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "crossover.png"


def log_grid(epochs):
    """1, 2, 4, ... up to epochs, and epochs itself: the checkpoints of a run, in epochs."""
    grid = [2 ** i for i in range(int(math.log2(epochs)) + 1)]
    return grid + ([epochs] if grid[-1] != epochs else [])


def run_key(width, model, flags):
    return f"width {width}, {model}, {' '.join(flags) or 'default regularisation'}"


def train_run(width, model, flags, epochs, data, common, steps_per_epoch):
    """One run: its curve [(epoch, nats, se)], its best checkpoint's final figure and its wall time."""
    grid = log_grid(epochs)
    args = T.parse_args(common + ["--n-embd", str(width), "--max-iters", str(epochs * steps_per_epoch),
                                  "--eval-at", ",".join(str(e * steps_per_epoch) for e in grid),
                                  "--eval-draws", str(CURVE_DRAWS), "--quiet", "--samples", "0"] + flags)
    start = time.time()
    result = T.train(args, data, model == "AR twin", say=lambda *a: None)
    nats, se, draw_se = T.final_evaluation(result, data, args)
    curve = [(step / steps_per_epoch, val, val_se) for step, _, val, val_se in result["history"]]
    return dict(width=width, model=model, flags=flags, curve=curve, best_epoch=result["best_step"] / steps_per_epoch,
                nats=nats, se=se, draw_se=draw_se, seconds=time.time() - start)


def best_runs(runs):
    """For each (width, model): the run whose best checkpoint is lowest (its own best regularisation)."""
    best = {}
    for r in runs:
        key = (r["width"], r["model"])
        if key not in best or r["nats"] < best[key]["nats"]:
            best[key] = r
    return best


def report(runs):
    """The table of best settings, and the finding per width, in words."""
    best = best_runs(runs)
    print(f"\n{'width':>5} {'model':<10} {'best setting':<22}{'best epoch':>11}{'nats/char':>10}{'+- items':>9}{'+- draws':>9}")
    for (width, model), r in sorted(best.items()):
        print(f"{width:>5} {model:<10} {' '.join(r['flags']) or 'default':<22}{r['best_epoch']:>11.0f}"
              f"{r['nats']:>10.4f}{r['se']:>9.4f}{r['draw_se']:>9.4f}")
    for width in sorted({w for w, _ in best}):
        if (width, "diffusion") in best and (width, "AR twin") in best:
            diff, ar = best[(width, "diffusion")], best[(width, "AR twin")]
            below = [e for e, v, _ in diff["curve"] if v < ar["nats"]]
            when = f"first below it at epoch {below[0]:.0f}" if below else "never below it in this budget"
            print(f"width {width}: diffusion / AR at their best {diff['nats'] / ar['nats']:.4f}; the denoiser's curve is {when}")


def plot(runs, path):
    """Held-out nats/char against epochs (log axis), the best setting of each model at each width,
    each model's best checkpoint starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for ((width, model), r), colour in zip(sorted(best_runs(runs).items()), plt.cm.tab10.colors):
        epochs, nats, se = zip(*r["curve"])
        ax.errorbar(epochs, nats, yerr=se, marker="o", ms=3, capsize=2, color=colour,
                    label=f"{model}, width {width} ({' '.join(r['flags']) or 'default'})")
        ax.plot(r["best_epoch"], r["nats"], "*", ms=13, color=colour)
    ax.set(xscale="log", xlabel="epochs (passes over the training names)", ylabel="held-out nats per character",
           title="Diffusion NELBO and AR NLL on names, by epochs (stars: best checkpoints)")
    ax.grid(alpha=0.3), ax.legend(fontsize=8)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=cli.count(1, 100_000), help=f"passes over the training names (default {EPOCHS})")
    parser.add_argument("--widths", type=cli.list_of(cli.count(4, 4096)), help=f"model widths (default {WIDTHS})")
    parser.add_argument("--short", action="store_true", help="a few minutes: width 16, 4 epochs, the smallest sweep")
    parser.add_argument("--budget-minutes", type=cli.number(lo=0, lo_open=True), help="start no run after this many "
                        "minutes (each call finishes at least one); rerun to go on")
    parser.add_argument("--out", default=str(OUT), help="folder of the curve file and the runs' checkpoints")
    parser.add_argument("--plot", help=f"where to draw the plot (default {PLOT.relative_to(PLOT.parents[1])}; "
                        f"with --short, crossover.png in --out)")
    ours, rest = parser.parse_known_args(argv)  # the rest: train.py flags shared by every run, e.g. --seed
    preset = SHORT if ours.short else dict(epochs=EPOCHS, widths=WIDTHS, sweeps=SWEEPS)
    epochs, widths = ours.epochs or preset["epochs"], ours.widths or preset["widths"]
    ours.plot = ours.plot or str(Path(ours.out) / "crossover.png" if ours.short else PLOT)
    for folder in (ours.out, str(Path(ours.plot).parent)):
        if problem := output_problem(folder):
            sys.exit(f"error: {problem}")
    common = ["--out", ours.out] + rest
    args = T.parse_args(common)
    devices.setup(args.device, args.deterministic)
    try:
        data = T.load_dataset(args.dataset, args.data_dir, args.device)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    if data["kind"] != "names":
        sys.exit("error: the crossover benchmark counts epochs over a list of names; give it --dataset names or a list file.")
    steps_per_epoch = math.ceil(data["n_train"] / args.batch_size)
    curves = Path(ours.out) / "curves.json"
    done = json.loads(curves.read_text()) if curves.is_file() else {}
    todo = [(w, m, f) for w in widths for m, sweep in preset["sweeps"].items() for f in sweep]
    settings = dict(epochs=epochs, flags=rest)  # a curve file is continued only by the same benchmark
    if done and done.get("settings") != settings:
        sys.exit(f"error: {curves} holds runs of another setting ({done.get('settings')}); give another --out.")
    done.setdefault("settings", settings)
    done.setdefault("runs", {})
    start, ran = time.time(), 0  # every call finishes at least one run, so a rerun always gets on
    try:
        for i, (width, model, flags) in enumerate(todo, 1):
            key = run_key(width, model, flags)
            if key in done["runs"]:
                continue
            if ran and ours.budget_minutes and time.time() - start > 60 * ours.budget_minutes:
                print(f"budget of {ours.budget_minutes:g} minutes spent; rerun the same command to go on")
                break
            print(f"run {i}/{len(todo)}: {key}, {epochs} epochs", flush=True)
            done["runs"][key] = train_run(width, model, flags, epochs, data, common, steps_per_epoch)
            atomic_write(curves, lambda f: f.write(json.dumps(done, indent=1).encode()))
            ran += 1
    except (CheckpointError, T.TrainingError) as err:
        sys.exit(f"error: {err}")
    runs = list(done["runs"].values())
    print(f"{len(runs)} of {len(todo)} runs in {curves}")
    report(runs)
    plot(runs, Path(ours.plot))
    print(f"wrote {ours.plot}")


if __name__ == "__main__":
    cli.run(main)
