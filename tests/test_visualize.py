"""The animations: the GIF has one frame per sampler step, --compare keeps both panels frame for
frame, the heat map marks already-unmasked cells, and the terminal view runs in a pseudo-terminal
and gives the terminal back on 'q' and on Ctrl-C.

The models are untrained (a tiny transformer with random weights, saved as a checkpoint): these
tests are about drawing, not about what is drawn, so no training is needed."""
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image

from torch_version.tools import visualize
from torch_version.model import ModelConfig, Transformer
from torch_version.engine.checkpoints import save_checkpoint
from torch_version.sample import load_or_exit, sample_ancestral

ROOT = Path(__file__).resolve().parents[1]
ITOS = [".", "a", "b", "e", "m", "n", "_"]  # PAD first, MASK last, as the torch tier's vocabulary
L = 6  # block size: short names keep every test fast


def tiny_checkpoint(path, causal):
    """A 1-layer model with random (not zero) weights, so its predictions are not uniform."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(ITOS), n_out=len(ITOS) - 1, block_size=L, n_layer=1, n_head=2,
                         n_embd=16, causal=causal)
    model = Transformer(config)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    save_checkpoint(path, model=model.state_dict(), optimizer={}, model_args=asdict(config),
                    config={"kind": "names", "dataset": "names", "schedule": "linear"}, itos=ITOS, step=0,
                    best_val_loss=0.0)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    tiny_checkpoint(folder / "ckpt_ar.pt", causal=True)
    return tiny_checkpoint(folder / "ckpt.pt", causal=False)


def frames_in(gif):
    with Image.open(gif) as image:
        return image.n_frames


def test_gif_has_one_frame_per_step_plus_the_start(ckpt, tmp_path):
    gif = tmp_path / "anim.gif"
    visualize.main(["--ckpt", str(ckpt), "--steps", "4", "--samples", "2", "--out", str(gif), "--device", "cpu"])
    assert frames_in(gif) == 4 + 1  # the all-MASK start, then one frame per step
    assert (tmp_path / "anim_confidence.png").stat().st_size > 0  # the heat map comes with it


def test_compare_gif_shows_both_models_frame_for_frame(ckpt, tmp_path):
    """The AR twin writes L characters in L calls; the diffusion model, in 3 steps, is held on its
    last frame so that both panels have the same L + 1 frames."""
    gif = tmp_path / "compare.gif"
    visualize.main(["--ckpt", str(ckpt), "--compare", "--steps", "3", "--samples", "2", "--out", str(gif),
                    "--device", "cpu"])
    assert frames_in(gif) == L + 1


def test_same_length_holds_the_last_frame_of_the_shorter_film():
    short = visualize.Film("a", [torch.zeros(1, 2)] * 2, ["x", "y"])
    long = visualize.Film("b", [torch.ones(1, 2)] * 5, list("pqrst"))
    visualize.same_length([short, long])
    assert len(short.frames) == len(long.frames) == 5
    assert short.labels[-1] == "y (done)"


def test_confidence_map_is_nan_exactly_where_the_position_is_already_unmasked(ckpt):
    model, _, _ = load_or_exit(ckpt, "cpu", False, "name the diffusion checkpoint")
    result = sample_ancestral(lambda xt: model(xt).detach(), 3, L, len(ITOS) - 1, torch.Generator().manual_seed(0),
                              steps=L)
    for row in range(3):
        conf = visualize.confidence_map(result, row)  # (steps, L)
        masked = torch.stack([xt[row] for xt in result.trajectory[:len(conf)]]) == len(ITOS) - 1
        assert torch.equal(conf.isnan(), ~masked)
        assert ((conf[masked] > 0) & (conf[masked] <= 1)).all()


def test_missing_checkpoint_is_one_sentence_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit) as stop:
        visualize.main(["--ckpt", str(tmp_path / "nothing.pt"), "--device", "cpu"])
    assert str(stop.value).startswith("error: no checkpoint at")


# ---------------------------------------------------------------- the terminal view, in a pseudo-terminal
def run_tui_in_pty(ckpt, keys, timeout=60):
    """Start --tui in a fresh pseudo-terminal (24 x 80, TERM=xterm) that is its controlling terminal,
    wait for the first status line, send `keys`, and return (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(os.environ, TERM="xterm", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # a tiny model needs no more
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "torch_version" / "tools" / "visualize.py"), "--ckpt", str(ckpt), "--tui",
         "--delay", "0.05", "--samples", "3", "--device", "cpu"],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # Ctrl-C reaches it as SIGINT
    os.close(slave)
    output, deadline = b"", time.time() + timeout

    def read_for(seconds):
        nonlocal output
        end = time.time() + seconds
        while time.time() < end:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    output += os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    return

    try:
        while b"masks left" not in output and time.time() < deadline and process.poll() is None:
            read_for(0.2)
        read_for(0.3)  # a few frames
        os.write(master, keys)
        status = process.wait(timeout=20)
        read_for(0.2)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return status, output


RESTORE = b"\x1b[?1049l"  # xterm's 'leave the alternate screen': curses giving the terminal back


def test_tui_shows_the_status_line_and_quits_cleanly_on_q(ckpt):
    status, output = run_tui_in_pty(ckpt, b"q")
    assert b"masks left" in output and b"sampler ancestral" in output, output[-2000:]
    assert status == 0
    assert RESTORE in output[output.rindex(b"masks left"):]


def test_tui_restores_the_terminal_on_ctrl_c(ckpt):
    status, output = run_tui_in_pty(ckpt, b"\x03")
    assert status == 130  # stopped by SIGINT, without a traceback
    assert b"Traceback" not in output
    assert RESTORE in output[output.rindex(b"masks left"):]
