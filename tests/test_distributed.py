"""Past one device: gradient accumulation, and two processes under torchrun (gloo, on this CPU).

Every process draws the whole batch and its noise from the one CPU generator and trains on its
slice; micro-batches are slices too. So N processes, or N micro-batches, take the step one process
takes on the whole batch, the gradients summed in another order: the same run to float rounding.
These tests measure how close: the held-out figure to the fourth decimal, the weights to float32
rounding grown over the steps, the random generators' states exactly."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import write_names_like
from torch_version.engine.checkpoints import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "torch_version" / "train.py")
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--batch-size", "32", "--eval-interval", "10",
        "--eval-draws", "1", "--final-draws", "2", "--samples", "0", "--no-compile", "--threads", "1"]


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    return write_names_like(tmp_path_factory.mktemp("dist") / "names.txt", n=400)


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def run(argv, nproc=1, timeout=300):
    """train.py in one process, or under torchrun with nproc processes (gloo). -> its stdout."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    done = subprocess.run(launcher + [TRAIN] + argv, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def figure(out):
    """The final held-out figure a run printed: (nats, +- items)."""
    line = next(line for line in out.splitlines() if "steps at best" in line)
    nats, se = re.search(r": ([0-9.]+) \+- ([0-9.]+) \(items\)", line).groups()
    return float(nats), float(se)


def assert_same_run(a, b, checkpoint_a, checkpoint_b):
    (nats_a, se_a), (nats_b, se_b) = figure(a), figure(b)
    assert abs(nats_a - nats_b) < 1e-4 and abs(se_a - se_b) < 1e-4, (nats_a, nats_b)
    ca, cb = read_checkpoint(checkpoint_a), read_checkpoint(checkpoint_b)
    assert ca["step"] == cb["step"] and torch.equal(ca["rng"]["batches"], cb["rng"]["batches"])
    for name, weight in ca["model"].items():  # 20 steps of float32 rounding, summed in another order
        assert torch.allclose(weight, cb["model"][name], rtol=1e-3, atol=1e-5), name


@pytest.mark.parametrize("model", [[], ["--ar"], ["--block", "2"]], ids=["masked", "AR twin", "block"])
def test_gradient_accumulation_takes_the_same_step_as_the_whole_batch(names, tmp_path, model):
    flags = ["--dataset", str(names), "--max-iters", "20"] + TINY + model
    one = run(flags + ["--out", str(tmp_path / "one")])
    four = run(flags + ["--out", str(tmp_path / "four"), "--grad-accum", "4"])
    name = "ckpt_ar.pt" if model == ["--ar"] else "ckpt_block2.pt" if model else "ckpt.pt"
    assert_same_run(one, four, tmp_path / "one" / name, tmp_path / "four" / name)


def test_two_processes_repeat_one_process_run(names, tmp_path):
    flags = ["--dataset", str(names), "--max-iters", "20"] + TINY
    one = run(flags + ["--out", str(tmp_path / "one")])
    two = run(flags + ["--out", str(tmp_path / "two")], nproc=2)
    assert two.count("steps at best") == 1 and two.count("step 10:") == 1, "only process 0 reports"
    assert_same_run(one, two, tmp_path / "one" / "ckpt.pt", tmp_path / "two" / "ckpt.pt")


@pytest.mark.parametrize("first, then", [(1, 2), (2, 1)], ids=["one then two", "two then one"])
def test_a_run_resumes_across_the_number_of_processes(names, tmp_path, first, then):
    flags = ["--dataset", str(names)] + TINY
    whole = run(flags + ["--max-iters", "20", "--out", str(tmp_path / "whole")])
    run(flags + ["--max-iters", "10", "--out", str(tmp_path / "split")], nproc=first)
    resumed = run(flags + ["--max-iters", "20", "--out", str(tmp_path / "split"), "--resume"], nproc=then)
    assert_same_run(whole, resumed, tmp_path / "whole" / "ckpt.pt", tmp_path / "split" / "ckpt.pt")


def test_a_killed_process_leaves_the_last_checkpoint_whole_and_resumable(names, tmp_path):
    flags = ["--dataset", str(names)] + TINY + ["--eval-interval", "2", "--out", str(tmp_path)]
    torchrun = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 TRAIN, "--max-iters", "100000"] + flags, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env(), cwd=ROOT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "ckpt.pt").is_file() and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # a few more checkpoints: one may be half-written when the process dies
        workers = [int(p) for p in Path(f"/proc/{torchrun.pid}/task/{torchrun.pid}/children").read_text().split()]
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun stops the other
        assert torchrun.wait(timeout=120) != 0
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
    step = read_checkpoint(tmp_path / "ckpt.pt")["step"]  # whole: it loads
    out = run(flags + ["--max-iters", str(step + 4), "--resume"])
    assert f"resumed {tmp_path / 'ckpt.pt'} at step {step}" in out or figure(out)


def test_a_micro_batch_without_rows_is_refused(names, tmp_path):
    done = subprocess.run([sys.executable, TRAIN, "--dataset", str(names), "--batch-size", "4", "--grad-accum", "8",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env(), cwd=ROOT)
    assert done.returncode == 2 and "--grad-accum 8" in done.stderr and "Traceback" not in done.stderr


def test_the_gpu_check_is_a_valid_script_whose_commands_name_existing_files_and_flags():
    """tools/gpu_check.sh runs only where a GPU is lent; here, what can be checked without one: its
    syntax, the files it runs, and train.py's flags in it."""
    script = ROOT / "tools" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for path in re.findall(r"(torch_version/[\w/]+\.py|tests/\w+\.py)", text):
        assert (ROOT / path).is_file(), path
    from torch_version import train as T
    short = re.search(r'SHORT="([^"]+)"', text).group(1).split()
    T.parse_args(short + ["--out", "x"])  # parses, or exits with the flag's error
    T.parse_args(["--dataset", "shakespeare", "--block", "16", "--max-iters", "500", "--eval-interval", "250"])
