"""Benchmark: when data runs out, does diffusion win? The denoiser and the AR twin over many epochs.

What it measures: on names (28,829 training names, about 200K characters) the AR twin reaches its
best held-out loss early and then overfits, while the denoiser is still improving at the end of
the default budget. Trained for many passes over the same names, does the denoiser's held-out
NELBO ever go below the AR twin's best NLL? For each model width and each model (diffusion, AR),
every regularisation setting of a small sweep (dropout; the AR twin also weight decay) is trained
for EPOCHS passes, with one cosine schedule over the whole run, and scored on a log grid of
epochs (1, 2, 4, ..., EPOCHS): the denoiser by the full discrete form of its NELBO (CURVE_DRAWS
mask sets per name and mask size), the AR twin by its exact NLL, each with its standard error
over the held-out names (and the denoiser's from its draws). Then each model's best setting at
the widest width is trained LONG times as long. Each model and width is compared at its best
setting and checkpoint (SPEC 5), measured again there as train.py's final figure (16 draws).

    python3 torch_version/bench/crossover.py --short           # the machinery, in 2-3 minutes
    python3 torch_version/bench/crossover.py                   # the whole benchmark: about 2 hours on 2 CPU cores
    python3 torch_version/bench/crossover.py --budget-minutes 30   # stop after half an hour; rerun to go on

Resumable by run: every finished run is added to out/crossover/curves.json (written atomically),
and a rerun with the same flags skips the runs already there; an interrupted run starts again
from its first step, with its own seed, so the file ends the same either way. --budget-minutes
starts no new run after that many minutes (each call finishes at least one). A rerun after the
last run only prints the table and redraws the plot (docs/crossover.png, or --plot).

Changes from bench/names.py: many epochs instead of the default budget, a log grid of
evaluations, a regularisation sweep per model, several widths, and a curve file that survives.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from common.files import atomic_write, output_problem  # noqa: E402
from data.fetch import DatasetError  # noqa: E402
from torch_version.engine.checkpoints import CheckpointError  # noqa: E402
from torch_version.engine import devices  # noqa: E402
from torch_version import train as T  # noqa: E402

EPOCHS = 100         # passes over the training names per run of the sweep (the default budget is about 62)
WIDTHS = [16, 32]    # model widths (4 layers, 4 heads each)
LONG = 4             # then each model's best setting at the widest width, trained LONG times as many epochs
CURVE_DRAWS = 2      # mask sets per (name, k) at each checkpoint: the full discrete form, as the final figure
SWEEPS = {           # regularisation settings per model: train.py flags; each model is compared at its best
    "diffusion": [[], ["--dropout", "0.1"]],
    "AR twin": [[], ["--dropout", "0.1"], ["--dropout", "0.2"], ["--weight-decay", "0.3"], ["--weight-decay", "1"]],
}
SHORT = dict(epochs=4, widths=[16], long=2, sweeps={"diffusion": [[]], "AR twin": [[], ["--dropout", "0.1"]]})
OUT = T.OUT_DIR / "crossover"
PLOT = Path(__file__).resolve().parents[2] / "docs" / "crossover.png"


def log_grid(epochs):
    """1, 2, 4, ... up to epochs, and epochs itself: the checkpoints of a run, in epochs."""
    grid = [2 ** i for i in range(int(math.log2(epochs)) + 1)]
    return grid + ([epochs] if grid[-1] != epochs else [])


def run_key(width, model, flags, epochs):
    return f"width {width}, {model}, {' '.join(flags) or 'default regularisation'}, {epochs} epochs"


def plan(runs, widths, sweeps, epochs, long):
    """The runs of the benchmark: the sweep at every width, then (once the sweep is done) each model's
    best setting at the widest width for `long` times the epochs. -> [(width, model, flags, epochs)]"""
    sweep = [(w, m, f, epochs) for w in widths for m, settings in sweeps.items() for f in settings]
    if long <= 1 or any(run_key(*r) not in runs for r in sweep):
        return sweep
    best = best_runs([runs[run_key(*r)] for r in sweep])
    return sweep + [(max(widths), m, best[(max(widths), m)]["flags"], long * epochs) for m in sweeps]


def train_run(width, model, flags, epochs, data, common, steps_per_epoch):
    """One run: its curve [(epoch, nats, se over names, se from the draws)], its best checkpoint's
    final figure and its wall time."""
    grid = log_grid(epochs)
    args = T.parse_args(common + ["--n-embd", str(width), "--max-iters", str(epochs * steps_per_epoch),
                                  "--eval-at", ",".join(str(e * steps_per_epoch) for e in grid), "--eval-full",
                                  "--eval-draws", str(CURVE_DRAWS), "--samples", "0"] + flags)
    start = time.time()
    result = T.train(args, data, model == "AR twin", say=lambda *a: None)
    nats, se, draw_se = T.final_evaluation(result, data, args)
    curve = [(step / steps_per_epoch, val, val_se, d) for (step, _, val, val_se), d
             in zip(result["history"], result["history_draw_se"])]
    return dict(width=width, model=model, flags=flags, epochs=epochs, curve=curve,
                best_epoch=result["best_step"] / steps_per_epoch, nats=nats, se=se, draw_se=draw_se,
                seconds=time.time() - start)


def best_runs(runs):
    """For each (width, model): the run whose best checkpoint is lowest (its own best regularisation)."""
    best = {}
    for r in runs:
        key = (r["width"], r["model"])
        if key not in best or r["nats"] < best[key]["nats"]:
            best[key] = r
    return best


def report(runs):
    """Every run's best checkpoint (* the best of its model and width), and the finding per width, in words."""
    best = best_runs(runs)
    print(f"\n{'width':>5} {'model':<10} {'setting':<20}{'epochs':>7}{'best at':>8}{'nats/char':>10}"
          f"{'+- items':>9}{'+- draws':>9}")
    for r in sorted(runs, key=lambda r: (r["width"], r["model"], r["epochs"], r["nats"])):
        star = "*" if best[(r["width"], r["model"])] is r else " "
        print(f"{r['width']:>5} {r['model']:<10} {' '.join(r['flags']) or 'default':<20}{r['epochs']:>7}"
              f"{r['best_epoch']:>8.0f}{r['nats']:>10.4f}{r['se']:>9.4f}{r['draw_se']:>9.4f} {star}")
    print(f"(default: train.py's dropout {T.DROPOUT:g} and weight decay {T.WEIGHT_DECAY:g}; best at: the epoch of the "
          f"best checkpoint, re-measured there as train.py's final figure; * the best of each model and width)")
    for width in sorted({w for w, _ in best}):
        if (width, "diffusion") not in best or (width, "AR twin") not in best:
            continue
        diff, ar = best[(width, "diffusion")], best[(width, "AR twin")]
        below = sorted(e for r in runs if r["width"] == width and r["model"] == "diffusion"
                       for e, v, *_ in r["curve"] if v < ar["nats"])
        when = f"first below it at epoch {below[0]:.0f}" if below else "never below it"
        print(f"width {width}: diffusion / AR at their best {diff['nats'] / ar['nats']:.4f} "
              f"(+- {diff['draw_se'] / ar['nats']:.4f} draws); the denoiser's curves are {when}")
        for epochs in sorted({r["epochs"] for r in runs if r["width"] == width}):
            pair = [min((r for r in runs if (r["width"], r["model"], r["epochs"]) == (width, model, epochs)),
                        key=lambda r: r["nats"], default=None) for model in ("diffusion", "AR twin")]
            if None not in pair:  # the gap epoch by epoch, each model at its best setting of this budget
                gaps = [f"{d / a:.3f} ({e:g})" for (e, d, *_), (_, a, *_) in zip(pair[0]["curve"], pair[1]["curve"])]
                print(f"  {epochs} epochs, diffusion / AR at each checkpoint (epoch): {', '.join(gaps)}")


def plot(runs, path):
    """Held-out nats/char against epochs (log axis), a panel per width: each model's best setting at
    each budget of epochs (dashed: the long budget), each model's best checkpoint starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    widths, sweep_epochs = sorted({r["width"] for r in runs}), min(r["epochs"] for r in runs)
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * len(widths), 4), sharey=True, squeeze=False)
    best = best_runs(runs)
    for ax, width in zip(axes[0], widths):
        for model, colour in (("diffusion", "tab:blue"), ("AR twin", "tab:orange")):
            mine = [r for r in runs if r["width"] == width and r["model"] == model]
            for epochs in sorted({r["epochs"] for r in mine}):
                r = min((r for r in mine if r["epochs"] == epochs), key=lambda r: r["nats"])
                e, nats, se, draw_se = zip(*r["curve"])
                ax.errorbar(e, nats, yerr=[math.hypot(*both) for both in zip(se, draw_se)], marker="o", ms=3,
                            capsize=2, color=colour, ls="--" if epochs > sweep_epochs else "-",
                            label=f"{model}, {epochs} epochs ({' '.join(r['flags']) or 'default'})")
            plain = [r for r in mine if r["epochs"] == sweep_epochs and not r["flags"]]
            if plain and plain[0]["flags"] != best[(width, model)]["flags"]:  # what the best setting fixed
                e, nats, *_ = zip(*plain[0]["curve"])
                ax.plot(e, nats, color=colour, alpha=0.4, lw=1, label=f"{model}, {sweep_epochs} epochs (default)")
            if (width, model) in best:
                ax.plot(best[(width, model)]["best_epoch"], best[(width, model)]["nats"], "*", ms=14, color=colour,
                        mec="black")
        if (width, "AR twin") in best:
            ax.axhline(best[(width, "AR twin")]["nats"], color="tab:orange", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="epochs (passes over the training names)", title=f"width {width}")
        ends = {r["epochs"] for r in runs if r["width"] == width}  # and the powers of two not crowding them
        ticks = sorted(ends | {e for r in runs if r["width"] == width for e, *_ in r["curve"]
                               if all(not 1 < max(e, end) / min(e, end) < 1.3 for end in ends)})
        ax.set_xticks(ticks, [f"{e:g}" for e in ticks], fontsize=7)
        ax.minorticks_off()
        ax.grid(alpha=0.3), ax.legend(fontsize=7)
    axes[0][0].set_ylabel("held-out nats per character")
    fig.suptitle("Diffusion NELBO and AR NLL on names by epochs (stars: best checkpoints; dotted: the AR best)",
                 fontsize=10)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def build_parser():
    """The flags of this script (--help is the reference)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=cli.count(1, 100_000), help=f"passes over the training names (default {EPOCHS})")
    parser.add_argument("--widths", type=cli.list_of(cli.count(4, 4096)), help=f"model widths (default {WIDTHS})")
    parser.add_argument("--long", type=cli.count(0, 1000), help=f"then each model's best setting at the widest width "
                        f"for this many times the epochs (default {LONG}; 0: none)")
    parser.add_argument("--short", action="store_true", help="2-3 minutes: width 16, 4 epochs (8 for the long stage), the smallest sweep")
    parser.add_argument("--budget-minutes", type=cli.number(lo=0, lo_open=True), help="start no run after this many "
                        "minutes (each call finishes at least one); rerun to go on")
    parser.add_argument("--out", default=str(OUT), help="folder of the curve file and the runs' checkpoints")
    parser.add_argument("--plot", help=f"where to draw the plot (default {PLOT.relative_to(PLOT.parents[1])}; "
                        f"with --short, crossover.png in --out)")
    return parser


def main(argv=None):
    parser = build_parser()
    ours, rest = parser.parse_known_args(argv)  # the rest: train.py flags shared by every run, e.g. --seed
    preset = SHORT if ours.short else dict(epochs=EPOCHS, widths=WIDTHS, long=LONG, sweeps=SWEEPS)
    epochs, widths = ours.epochs or preset["epochs"], ours.widths or preset["widths"]
    long = preset["long"] if ours.long is None else ours.long
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
    settings = dict(epochs=epochs, long=long, curve=f"full discrete form, {CURVE_DRAWS} draws", flags=rest)
    if done and done.get("settings") != settings:  # a curve file is continued only by the same benchmark
        sys.exit(f"error: {curves} holds runs of another setting ({done.get('settings')}); give another --out.")
    done.setdefault("settings", settings)
    done.setdefault("runs", {})
    n_runs = len(widths) * sum(map(len, preset["sweeps"].values())) + (len(preset["sweeps"]) if long > 1 else 0)
    start, ran = time.time(), 0  # every call finishes at least one run, so a rerun always gets on
    try:
        while True:
            planned = plan(done["runs"], widths, preset["sweeps"], epochs, long)
            todo = [r for r in planned if run_key(*r) not in done["runs"]]
            if not todo:
                break
            if ran and ours.budget_minutes and time.time() - start > 60 * ours.budget_minutes:
                print(f"budget of {ours.budget_minutes:g} minutes spent; rerun the same command to go on")
                break
            print(f"run {len(planned) - len(todo) + 1}/{n_runs}: {run_key(*todo[0])} "
                  f"({(time.time() - start) / 60:.0f} min so far)", flush=True)
            done["runs"][run_key(*todo[0])] = train_run(*todo[0], data, common, steps_per_epoch)
            atomic_write(curves, lambda f: f.write(json.dumps(done, indent=1).encode()))
            ran += 1
    except (CheckpointError, T.TrainingError) as err:
        sys.exit(f"error: {err}")
    runs = list(done["runs"].values())
    left = n_runs - (len(planned) - len(todo))
    print(f"{len(runs)} runs in {curves}{f', {left} still to run' if todo else ''}")
    report(runs)
    plot(runs, Path(ours.plot))
    print(f"wrote {ours.plot}")


if __name__ == "__main__":
    cli.run(main)
