"""bench/crossover.py's machinery on a tiny budget (the long benchmark is not run in CI): the curve
file holds the log-grid checkpoints it claims, in the final figure's form; the long runs take the
sweep's best settings; an interrupted benchmark continues to the same file; the best run and
checkpoint are the minimum; another benchmark's file is not continued."""
import contextlib
import io
import json

import pytest

from tests.conftest import write_names_like
from torch_version.bench import crossover as X

TINY = ["--n-layer", "1", "--n-head", "2", "--batch-size", "20", "--no-compile", "--device", "cpu",
        "--final-draws", str(X.CURVE_DRAWS)]  # the curve's draws: its best point is then the final figure


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    return write_names_like(tmp_path_factory.mktemp("data") / "items.txt")  # 180 training names: 9 steps an epoch


@pytest.fixture(scope="module")
def whole(names, tmp_path_factory):
    """One uninterrupted short benchmark, and what it printed."""
    out, printed = tmp_path_factory.mktemp("whole"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        curves = bench(names, out)
    return curves, out, printed.getvalue()


def bench(names, out, *extra):
    X.main(["--short", "--epochs", "4", "--widths", "8", "--out", str(out), "--dataset", str(names)] + TINY + list(extra))
    return json.loads((out / "curves.json").read_text())


def without_times(curves):
    return {key: {k: v for k, v in run.items() if k != "seconds"} for key, run in curves["runs"].items()}


def test_the_log_grid_has_every_power_of_two_and_the_last_epoch():
    assert X.log_grid(1) == [1] and X.log_grid(8) == [1, 2, 4, 8] and X.log_grid(200) == [1, 2, 4, 8, 16, 32, 64, 128, 200]
    assert len(X.log_grid(X.EPOCHS)) >= 8  # the floor: 8 checkpoints per model and size


def test_the_curve_file_holds_the_checkpoints_it_claims(whole):
    curves, out, printed = whole
    assert len(curves["runs"]) == 3 + 2 and curves["settings"]["epochs"] == 4  # the sweep, then a long run per model
    for run in curves["runs"].values():
        assert [epoch for epoch, *_ in run["curve"]] == X.log_grid(run["epochs"])
        assert all(value > 0 and se > 0 for _, value, se, _ in run["curve"])
        draws = [draw_se for *_, draw_se in run["curve"]]
        assert all(d > 0 for d in draws) if run["model"] == "diffusion" else all(d == 0 for d in draws)
    assert sorted(run["epochs"] for run in curves["runs"].values()) == [4, 4, 4, 8, 8]
    assert (out / "crossover.png").stat().st_size > 0
    assert "diffusion / AR at their best" in printed


def test_the_curve_is_the_final_figures_form_at_its_checkpoints(whole):
    """--eval-full: the denoiser's curve is its full discrete form, so with the final figure's
    draws its best point is the final figure itself (the one-pass form would differ)."""
    for run in whole[0]["runs"].values():
        if run["model"] == "diffusion":
            assert min(value for _, value, *_ in run["curve"]) == pytest.approx(run["nats"], abs=1e-12)


def test_the_long_runs_take_the_sweeps_best_setting_at_the_widest_width():
    sweeps = {"diffusion": [[], ["--dropout", "0.1"]], "AR twin": [[], ["--weight-decay", "1"]]}
    runs = {}
    for width, model, flags, epochs in X.plan(runs, [8, 16], sweeps, 10, 3):
        runs[X.run_key(width, model, flags, epochs)] = dict(width=width, model=model, flags=flags, epochs=epochs,
                                                             nats=3.0 - len(flags) / 10 * (model == "AR twin"))
    assert len(runs) == 8  # the long runs are planned only once the sweep is done
    long = X.plan(runs, [8, 16], sweeps, 10, 3)[8:]
    assert long == [(16, "diffusion", [], 30), (16, "AR twin", ["--weight-decay", "1"], 30)]
    assert X.plan(runs, [8, 16], sweeps, 10, 0) == X.plan(runs, [8, 16], sweeps, 10, 3)[:8]


def test_an_interrupted_benchmark_continues_to_the_same_file(names, whole, tmp_path, capsys):
    first = bench(names, tmp_path / "parts", "--budget-minutes", "1e-9")  # stops after its first run
    assert len(first["runs"]) == 1
    assert "rerun the same command to go on" in capsys.readouterr().out
    assert len(bench(names, tmp_path / "parts", "--budget-minutes", "1e-9")["runs"]) == 2
    again = bench(names, tmp_path / "parts")
    assert without_times(again) == without_times(whole[0])


def test_the_best_run_and_checkpoint_are_the_minimum():
    runs = [dict(width=8, model="AR twin", flags=[], nats=2.0), dict(width=8, model="AR twin", flags=["--dropout", "0.1"], nats=1.9),
            dict(width=8, model="diffusion", flags=[], nats=2.1), dict(width=16, model="AR twin", flags=[], nats=1.8)]
    best = X.best_runs(runs)
    assert best[(8, "AR twin")]["flags"] == ["--dropout", "0.1"] and best[(16, "AR twin")]["nats"] == 1.8
    assert best[(8, "diffusion")]["nats"] == 2.1


def test_the_best_checkpoint_of_a_run_is_its_lowest_held_out_point(whole):
    for run in whole[0]["runs"].values():
        epochs, values, *_ = zip(*run["curve"])
        assert run["best_epoch"] == epochs[values.index(min(values))]


def test_a_file_of_another_benchmark_is_not_continued(names, tmp_path):
    bench(names, tmp_path, "--budget-minutes", "1e-9")
    with pytest.raises(SystemExit, match="another setting"):
        X.main(["--short", "--epochs", "2", "--widths", "8", "--out", str(tmp_path), "--dataset", str(names)] + TINY)
