"""bench_crossover.py's machinery on a tiny budget (the long benchmark is not run in CI): the curve
file holds the log-grid checkpoints it claims, an interrupted benchmark continues to the same
file, the best run and checkpoint are the minimum, and another benchmark's file is not continued."""
import json

import pytest

from tests.conftest import write_names_like
from torch_version import bench_crossover as X

TINY = ["--n-layer", "1", "--n-head", "2", "--batch-size", "20", "--no-compile", "--device", "cpu", "--final-draws", "2"]


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    return write_names_like(tmp_path_factory.mktemp("data") / "items.txt")  # 180 training names: 9 steps an epoch


def bench(names, out, *extra):
    X.main(["--short", "--epochs", "4", "--widths", "8", "--out", str(out), "--dataset", str(names)] + TINY + list(extra))
    return json.loads((out / "curves.json").read_text())


def without_times(curves):
    return {key: {k: v for k, v in run.items() if k != "seconds"} for key, run in curves["runs"].items()}


def test_the_log_grid_has_every_power_of_two_and_the_last_epoch():
    assert X.log_grid(1) == [1] and X.log_grid(8) == [1, 2, 4, 8] and X.log_grid(200) == [1, 2, 4, 8, 16, 32, 64, 128, 200]
    assert len(X.log_grid(X.EPOCHS)) >= 8  # the floor: 8 checkpoints per model and size


def test_the_curve_file_holds_the_checkpoints_it_claims(names, tmp_path, capsys):
    curves = bench(names, tmp_path)
    assert len(curves["runs"]) == 3 and curves["settings"]["epochs"] == 4
    for run in curves["runs"].values():
        assert [epoch for epoch, _, _ in run["curve"]] == [1, 2, 4]
        assert all(value > 0 and se > 0 for _, value, se in run["curve"])
    assert (tmp_path / "crossover.png").stat().st_size > 0
    assert "diffusion / AR at their best" in capsys.readouterr().out


def test_an_interrupted_benchmark_continues_to_the_same_file(names, tmp_path, capsys):
    whole = bench(names, tmp_path / "whole")
    first = bench(names, tmp_path / "parts", "--budget-minutes", "1e-9")  # stops after its first run
    assert len(first["runs"]) == 1
    assert "rerun the same command to go on" in capsys.readouterr().out
    again = bench(names, tmp_path / "parts")
    assert without_times(again) == without_times(whole)


def test_the_best_run_and_checkpoint_are_the_minimum():
    runs = [dict(width=8, model="AR twin", flags=[], nats=2.0), dict(width=8, model="AR twin", flags=["--dropout", "0.1"], nats=1.9),
            dict(width=8, model="diffusion", flags=[], nats=2.1), dict(width=16, model="AR twin", flags=[], nats=1.8)]
    best = X.best_runs(runs)
    assert best[(8, "AR twin")]["flags"] == ["--dropout", "0.1"] and best[(16, "AR twin")]["nats"] == 1.8
    assert best[(8, "diffusion")]["nats"] == 2.1


def test_the_best_checkpoint_of_a_run_is_its_lowest_held_out_point(names, tmp_path):
    for run in bench(names, tmp_path)["runs"].values():
        epochs, values, _ = zip(*run["curve"])
        assert run["best_epoch"] == epochs[values.index(min(values))]


def test_a_file_of_another_benchmark_is_not_continued(names, tmp_path):
    bench(names, tmp_path, "--budget-minutes", "1e-9")
    with pytest.raises(SystemExit, match="another setting"):
        X.main(["--short", "--epochs", "2", "--widths", "8", "--out", str(tmp_path), "--dataset", str(names)] + TINY)
