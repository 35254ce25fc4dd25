"""Watch text emerge from masks: a GIF, a live terminal view and a confidence heat map.

What it teaches: a diffusion model does not write left to right. Sampling starts from a row
of MASKs and every step fills a few positions, anywhere, each one guessed from both sides;
the autoregressive (AR) twin writes one character after the other. Watching both, frame for
frame, shows the two orders. The heat map shows how sure the denoiser was at each masked
position before each step: easy positions (the PADs after a short name) become confident
early, and the confidence sampler fills those first; the letters stay uncertain longer.

    python3 torch_version/tools/visualize.py                     # GIF of 8 names -> out/names/denoising.gif
    python3 torch_version/tools/visualize.py --compare           # diffusion | AR twin, side by side
    python3 torch_version/tools/visualize.py --tui               # live in the terminal (q quits)
    python3 torch_version/tools/visualize.py --sampler confidence --steps 8 --show   # also in a window
    python3 torch_version/tools/visualize.py --dataset shakespeare --compare   # a 256-character window

Every run that writes a GIF also writes the heat map (denoising_confidence.png beside it).
Masks are grey '_' cells, the characters unmasked in this step are yellow, PAD (the end of a
name) is a light '.'.

Changes from pure: pure draws the reverse process as one still grid (rows = steps); here the
same trajectory, returned by the torch tier's samplers (sample.py), becomes an animation, a
curses view and a heat map of the denoiser's confidence; and the AR twin runs beside it.
"""
import argparse
import curses
import functools
import itertools
import locale
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `torch_version` imports from any folder
from common import cli  # noqa: E402
from common.files import output_problem  # noqa: E402
from torch_version.sample import (BLOCK_STEPS, SAMPLERS, TAU, block_steps, checkpoint_precision, default_checkpoint,  # noqa: E402
                                  generate_ar, load_or_exit, make_denoiser, samplers_for)

OUT_DIR = Path(__file__).resolve().parents[1] / "out"  # checkpoints: out/<dataset>/ckpt.pt and ckpt_ar.pt
SAMPLER = "ancestral"  # ancestral | confidence | threshold
NAMES = 8              # names per animation (text: one window)
TEXT_STEPS = 64        # text: sampler steps for a window (names: one step per position)
TEXT_COLS = 64         # text: characters per line of the picture
FPS = 4                # GIF frames per second
PAUSE = 2.0            # seconds the GIF holds its last frame before it loops
DELAY = 0.15           # terminal view: seconds per frame
CELL_PX = 30           # GIF: pixels per character cell of a name
TEXT_CELL_PX = 17      # ... of text, whose lines are longer

MASK_FACE, MASK_INK = "#c9ced6", "#7b818c"  # a masked cell: grey box, grey '_'
NEW_FACE = "#ffd166"                         # unmasked in this very step: yellow
INK, PAD_INK = "#1b1b1b", "#b5b5b5"          # a settled character; PAD, drawn faint


# ---------------------------------------------------------------- what we animate
@dataclass
class Film:
    """One panel's animation: a title and, per frame, the ids and a line saying where we are."""
    title: str      # e.g. "diffusion: ancestral sampler, 16 steps"
    frames: list    # (n, L) token ids: frames[0] is the start (all MASK), then one per step
    labels: list    # one line per frame: "step 3/16, t=0.81, 102 masks left"


def diffusion_film(denoise, sampler, n, L, mask_id, generator, steps, tau, temperature, schedule):
    """Sample n sequences of length L and keep every step. Returns (Film, Sampled). A block-diffusion
    model writes block by block (sample.blockwise), `steps` per block: each block emerges from masks
    after the ones before it."""
    block_len = denoise.model.config.block_len
    what = f"block diffusion (blocks of {block_len})" if block_len else "diffusion"
    if sampler == "threshold":
        result = samplers_for(denoise.model)[sampler](denoise, n, L, mask_id, generator, tau=tau, temperature=temperature)
        title = f"{what}: threshold sampler, tau = {tau:g}"
        time_name = "masked share"  # the threshold sampler has no time grid; with alpha = 1 - t it is t
    else:
        result = samplers_for(denoise.model)[sampler](denoise, n, L, mask_id, generator, steps=steps,
                                                     temperature=temperature, schedule=schedule)
        title = f"{what}: {sampler} sampler, {steps} steps{' per block' if block_len else ''}"
        time_name = "t"
    T = len(result.trajectory) - 1
    labels = [f"step {j}/{T}, {time_name}={t:.2f}, {int((xt == mask_id).sum())} masks left"
              for j, (t, xt) in enumerate(zip(result.times, result.trajectory))]
    if block_len:  # many steps per block, most of which unmask nothing: a frame where the text changed
        keep = [0] + [j for j in range(1, T + 1) if not torch.equal(result.trajectory[j], result.trajectory[j - 1])]
        return Film(title, [result.trajectory[j] for j in keep], [labels[j] for j in keep]), result
    return Film(title, result.trajectory, labels), result


def ar_film(model, n, L, mask_id, generator, temperature, pad_id, device, dtype="float32"):
    """The AR twin writes n sequences of L characters, one per network call, left to right.
    Frame k shows the first k characters; the rest are still to come (drawn as MASK).
    A name ends at its first PAD: the twin stops there, and the PADs after it are only filled in."""
    ids, _ = generate_ar(model, torch.empty((n, 0), dtype=torch.long), L, generator, mask_id,
                         temperature=temperature, stop_id=pad_id, device=device, dtype=dtype)
    frames = []
    for k in range(L + 1):
        frame = ids.clone()
        frame[:, k:] = mask_id
        frames.append(frame)
    labels = [f"{k}/{L} characters written" for k in range(L + 1)]
    return Film("AR twin: left to right, one call per character", frames, labels)


def same_length(films):
    """Pad the shorter films by holding their last frame, so panels advance frame for frame."""
    longest = max(len(f.frames) for f in films)
    for f in films:
        hold = longest - len(f.frames)
        f.frames = f.frames + [f.frames[-1]] * hold
        f.labels = f.labels + [f.labels[-1] + " (done)"] * hold
    return films


def changed(film, j):
    """(n, L) bool: positions that were unmasked in step j (none in the first frame)."""
    return film.frames[j] != film.frames[j - 1] if j > 0 else torch.zeros_like(film.frames[0], dtype=torch.bool)


def glyph(token, itos, mask_id, newline="\u00b6"):
    """What a cell shows: '_' for MASK, the character otherwise; a newline becomes a pilcrow."""
    return "_" if token == mask_id else newline if itos[token] == "\n" else itos[token]


def grid_shape(n, L, is_names):
    """(rows, cols) of a panel: one name per row, or one text wrapped every TEXT_COLS characters."""
    return (n, L) if is_names else (n * math.ceil(L / TEXT_COLS), min(L, TEXT_COLS))


def cells(n, L, is_names):
    """For every (sequence i, position l), its (row, col) in the panel."""
    if is_names:
        return [(i, l, i, l) for i in range(n) for l in range(L)]
    lines = math.ceil(L / TEXT_COLS)
    return [(i, l, i * lines + l // TEXT_COLS, l % TEXT_COLS) for i in range(n) for l in range(L)]


# ---------------------------------------------------------------- the GIF (matplotlib + Pillow)
def grid_image(frame, new, itos, mask_id, pad_id, is_names):
    """One panel's cells as an RGB array (rows * px, cols * px, 3), drawn with Pillow: a box per
    character (grey if masked, yellow if unmasked in this step) with its glyph on it. Drawing the
    cells as one picture, not as hundreds of matplotlib artists, makes a frame about 8x cheaper."""
    import numpy as np
    from PIL import Image, ImageDraw

    px = CELL_PX if is_names else TEXT_CELL_PX
    regular, bold = fonts(px)
    n, L = len(frame), len(frame[0])
    rows, cols = grid_shape(n, L, is_names)
    image = Image.new("RGB", (cols * px, rows * px), "white")
    draw = ImageDraw.Draw(image)
    for i, l, r, c in cells(n, L, is_names):
        token = frame[i][l]
        face = MASK_FACE if token == mask_id else NEW_FACE if new[i][l] else "white"
        ink = MASK_INK if token == mask_id else PAD_INK if token == pad_id else INK
        draw.rectangle((c * px + 1, r * px + 1, (c + 1) * px - 2, (r + 1) * px - 2), fill=face)
        draw.text(((c + 0.5) * px, (r + 0.5) * px), glyph(token, itos, mask_id), fill=ink,
                  font=bold if new[i][l] else regular, anchor="mm")
    return np.asarray(image)


@functools.lru_cache
def fonts(px):
    """DejaVu Sans Mono, regular and bold, sized to a cell; matplotlib ships both files."""
    import matplotlib
    from PIL import ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(ImageFont.truetype(str(folder / name), int(px * 0.62))
                 for name in ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"))


def animate(films, itos, mask_id, pad_id, is_names, fps=FPS, legend=None):
    """A matplotlib FuncAnimation of the films side by side (names) or one above the other (text):
    each panel is a picture of its cells, placed pixel for pixel under a two-line title; a frame swaps
    the pictures and the titles. `legend`: the line under the panels (default: masks and PAD)."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    first = [grid_image(f.frames[0].tolist(), changed(f, 0).tolist(), itos, mask_id, pad_id, is_names) for f in films]
    h, w = first[0].shape[:2]  # pixels of one panel's cells; at 100 dpi one figure pixel each
    title_px, legend_px, margin, gap = 44, 30, 14, 40
    across = is_names and len(films) > 1  # names side by side; text panels are wide, so stacked
    width = margin * 2 + (len(films) * w + (len(films) - 1) * gap if across else w)
    stacked = 1 if across else len(films)
    height = legend_px + margin + (title_px + h) * stacked + gap * (stacked - 1)
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    legend = legend or ("grey _: masked    yellow: unmasked in this step    "
                        + (".: PAD (end of name)" if is_names else "\u00b6: newline"))
    fig.text(0.5, 8 / height, legend,
             ha="center", va="bottom", fontsize=9, color="#555555")
    drawn = []  # per film: (film, image artist, title artist)
    for k, (film, pixels) in enumerate(zip(films, first)):
        left = margin + (k * (w + gap) if across else 0)
        top = margin + (0 if across else k * (title_px + h + gap))  # from the top of the figure
        image = fig.figimage(pixels, xo=left, yo=height - (top + title_px + h), origin="upper")  # pixel for pixel
        title = fig.text(left / width, 1 - (top + 4) / height, "", ha="left", va="top", fontsize=10,
                         family="monospace")
        drawn.append((film, image, title))

    def update(j):
        for film, image, title in drawn:
            image.set_data(grid_image(film.frames[j].tolist(), changed(film, j).tolist(), itos, mask_id, pad_id,
                                      is_names))
            title.set_text(f"{film.title}\n{film.labels[j]}")
        return []

    update(0)
    anim = FuncAnimation(fig, update, frames=len(films[0].frames), interval=1000 / fps, repeat=True)
    return fig, anim


def save_gif(anim, path, fps=FPS, pause=PAUSE):
    """Write the animation with matplotlib's Pillow writer; the last frame is held `pause`
    seconds longer, so the finished text can be read before the loop starts again."""
    from matplotlib.animation import PillowWriter

    class PausingPillowWriter(PillowWriter):
        def finish(self):
            durations = [int(1000 / self.fps)] * len(self._frames)
            durations[-1] += int(1000 * pause)
            self._frames[0].save(self.outfile, save_all=True, append_images=self._frames[1:],
                                 duration=durations, loop=0)

    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PausingPillowWriter(fps=fps), dpi=100)


# ---------------------------------------------------------------- the confidence heat map
def confidence_map(result, row=0):
    """(steps, L) float: before each step, the denoiser's top probability at every masked position
    of sequence `row`; NaN where the position is already unmasked (sample.Sampled.confidence)."""
    return torch.stack([c[row] for c in result.confidence]).double()


def plot_confidence(result, row, itos, mask_id, pad_id, path, title):
    """Heat map, positions on x and steps on y (first step at the top). Every cell where a
    character was unmasked carries that character, so one reads which letters were decided when."""
    import matplotlib.pyplot as plt

    conf = confidence_map(result, row).numpy()  # (S, L)
    S, L = conf.shape
    cmap = plt.get_cmap("viridis").with_extremes(bad="#f2f2f2")  # grey: already unmasked, nothing to show
    fig, ax = plt.subplots(figsize=(min(2 + 0.42 * L, 40), min(1.6 + 0.3 * S, 30)))
    image = ax.imshow(conf, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                      extent=(-0.5, L - 0.5, S + 0.5, 0.5))
    if L <= 64 and S <= 80:  # past that, the letters would be too small to read
        for j in range(S):
            before, after = result.trajectory[j][row], result.trajectory[j + 1][row]
            for l in torch.nonzero((before == mask_id) & (after != mask_id)).flatten().tolist():
                ink = "black" if conf[j, l] > 0.6 else "white"
                token = int(after[l])
                ax.text(l, j + 1, glyph(token, itos, mask_id), ha="center", va="center", color=ink,
                        fontsize=16 if token == pad_id else 9, family="monospace", fontweight="bold")  # a big '.'
    ax.set_xlabel("position in the sequence")
    ax.set_ylabel("sampler step")
    ax.set_title(f"{title}\ngrey: already unmasked; a character marks the step that unmasked it"
                 + ("; '.' is PAD (end of name)" if pad_id is not None else ""), fontsize=10)
    fig.colorbar(image, ax=ax, label="confidence (probability of the top token)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the terminal view (curses)
def run_tui(make_film, itos, mask_id, pad_id, is_names, sampler, delay=DELAY):
    """Animate sampling in the terminal until 'q'; space samples again. curses.wrapper puts the
    terminal back the way it was even when the program stops on an error; Ctrl-C ends it quietly
    (exit status 130). Each round samples first (milliseconds for names), then plays the steps."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.exit("error: --tui needs a terminal; run it in one, or write a GIF instead (drop --tui).")
    locale.setlocale(locale.LC_ALL, "")  # lets curses write UTF-8 where the terminal speaks it
    newline = "\u00b6" if "utf" in locale.getpreferredencoding(False).lower() else "|"
    try:
        curses.wrapper(tui, make_film, itos, mask_id, pad_id, is_names, sampler, delay, newline)
    except KeyboardInterrupt:
        sys.exit(130)  # the usual status of a program stopped by Ctrl-C; the terminal is already restored


def tui(screen, make_film, itos, mask_id, pad_id, is_names, sampler, delay, newline):
    try:
        curses.curs_set(0)  # hide the cursor; some terminals cannot
    except curses.error:
        pass
    new_attr, mask_attr = curses.A_REVERSE | curses.A_BOLD, curses.A_DIM  # without colours
    if curses.has_colors():
        curses.start_color()
        curses.use_default_colors()
        curses.init_pair(1, curses.COLOR_BLACK, curses.COLOR_YELLOW)  # unmasked in this step
        curses.init_pair(2, curses.COLOR_BLUE, -1)                    # still masked
        new_attr, mask_attr = curses.color_pair(1) | curses.A_BOLD, curses.color_pair(2)

    def show(film, j, status):
        """Frame j of the film: the sequences, then a status line in reverse video at the bottom."""
        screen.erase()
        h, w = screen.getmaxyx()
        put(screen, 0, 0, film.title, curses.A_BOLD)
        legend = "_ still masked   highlighted: unmasked in this step" + ("   . PAD (end)" if is_names else "")
        put(screen, 1, 0, legend)
        n, L = film.frames[0].shape
        cols = L if is_names else max(8, min(TEXT_COLS, w - 2))  # text wraps to the terminal's width
        lines, gap = (1, 2) if is_names else (math.ceil(L / cols), 1)  # names: a space between cells: '_ _' not '__'
        frame, new = film.frames[j].tolist(), changed(film, j).tolist()
        for i in range(n):
            for l in range(L):
                token = frame[i][l]
                attr = (mask_attr if token == mask_id else new_attr if new[i][l]
                        else curses.A_DIM if token == pad_id else 0)
                put(screen, 3 + i * lines + l // cols, 1 + gap * (l % cols), glyph(token, itos, mask_id, newline), attr)
        if h < 4 + n * lines or w < gap * cols + 1:
            status += "| terminal too small: showing part "
        put(screen, h - 1, 0, status.ljust(w - 1), curses.A_REVERSE)
        screen.refresh()

    for round_no in itertools.count(1):
        film = make_film()
        T = len(film.frames) - 1
        for j in range(T + 1):
            show(film, j, f" {film.labels[j]} | sampler {sampler} | round {round_no} | q quits ")
            if wait_key(screen, delay) in (ord("q"), ord("Q")):
                return
        key = curses.KEY_RESIZE
        while key != ord(" "):  # the last frame stays until space (again) or q (quit)
            if key == curses.KEY_RESIZE:
                show(film, T, f" {film.labels[T]} | sampler {sampler} | space: again, q: quit ")
            key = wait_key(screen, 0.1)
            if key in (ord("q"), ord("Q")):
                return


def wait_key(screen, seconds):
    """The key pressed within `seconds`, or -1. Waiting in getch keeps 'q' responsive, and the
    short timeout lets Python notice Ctrl-C between calls."""
    screen.timeout(max(1, int(seconds * 1000)))
    return screen.getch()


def put(screen, y, x, text, attr=0):
    """addstr that clips at the screen's edges instead of raising (the bottom-right cell raises)."""
    h, w = screen.getmaxyx()
    if 0 <= y < h and 0 <= x < w:
        try:
            screen.addstr(y, x, text[:w - x], attr)
        except curses.error:
            pass


# ---------------------------------------------------------------- putting it together
def build_parser():
    """The flags of this script (--help is the reference)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="names", help="names, shakespeare, or a PATH's stem: picks out/<dataset>/")
    parser.add_argument("--ckpt", help="diffusion checkpoint (default out/<dataset>/ckpt.pt)")
    parser.add_argument("--ar-ckpt", help="AR twin for --compare (default ckpt_ar.pt beside --ckpt)")
    parser.add_argument("--sampler", default=SAMPLER, choices=sorted(SAMPLERS), help="how masks turn into characters")
    parser.add_argument("--steps", type=cli.count(1, 100_000), help=f"sampler steps (default: one per position for names, "
                        f"{TEXT_STEPS} for text, one per character with --compare; block diffusion: "
                        f"{BLOCK_STEPS} per position of a block, one with the confidence sampler)")
    parser.add_argument("--tau", type=cli.probability, default=TAU, help="threshold sampler: confidence that unmasks a position")
    parser.add_argument("--temperature", type=cli.temperature, default=1.0, help="sampling temperature")
    parser.add_argument("--samples", type=cli.count(1, 1000), default=NAMES, help="names to animate (text: always one window)")
    parser.add_argument("--chars", type=cli.count(1), help="text: characters in the window (default the block size)")
    parser.add_argument("--compare", action="store_true", help="the AR twin beside the diffusion model")
    parser.add_argument("--tui", action="store_true", help="animate in this terminal instead of writing a GIF")
    parser.add_argument("--delay", type=cli.number(0, 60), default=DELAY, help="--tui: seconds per frame")
    parser.add_argument("--show", action="store_true", help="also play the animation in a window")
    parser.add_argument("--out", help="GIF to write (default out/<dataset>/denoising.gif, or "
                        "denoising_compare.gif); the heat map goes beside it")
    parser.add_argument("--fps", type=cli.number(0.1, 100), default=FPS, help="GIF frames per second")
    parser.add_argument("--seed", type=cli.seed, default=1337, help="seed for every random draw")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu for names, else the best found)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tui and (args.show or args.compare):
        parser.error("--tui draws one model in the terminal; drop --show and --compare, or drop --tui")

    gif = Path(args.out) if args.out else OUT_DIR / args.dataset / (
        "denoising_compare.gif" if args.compare else "denoising.gif")
    if gif.suffix.lower() != ".gif":
        parser.error(f"--out must end in .gif, not {gif.name!r}")
    if not args.tui and (problem := output_problem(gif.parent)):  # before any sampling
        sys.exit(f"error: {problem}")

    path = Path(args.ckpt) if args.ckpt else default_checkpoint(args.dataset)
    model, ckpt, args.device = load_or_exit(path, args.device, False, "name the diffusion checkpoint")
    dtype = checkpoint_precision(ckpt, args.device)
    itos = ckpt["itos"]
    mask_id, block_size = len(itos) - 1, model.config.block_size
    is_names = ckpt["config"].get("kind", "names" if itos[0] == "." else "text") == "names"
    pad_id = 0 if is_names else None
    n = args.samples if is_names else 1
    L = block_size if is_names else min(args.chars or block_size, block_size)
    if args.chars and args.chars > block_size:
        parser.error(f"--chars must be at most the block size {block_size}: the animation shows one window")
    per = model.config.block_len or L  # the positions a step count is for: a block, or the window
    if model.config.block_len:
        steps = args.steps or block_steps(per, args.sampler)
    else:
        steps = args.steps or (per if is_names or args.compare else min(TEXT_STEPS, L))
    if args.sampler == "confidence" and steps > per:
        parser.error(f"the confidence sampler unmasks at least one position per step: --steps must be at most {per}")
    schedule = ckpt["config"].get("schedule", "linear")
    generator = torch.Generator().manual_seed(args.seed)
    denoise = make_denoiser(model, args.device, dtype)

    def make_film():
        return diffusion_film(denoise, args.sampler, n, L, mask_id, generator, steps, args.tau,
                              args.temperature, schedule)

    if args.tui:
        run_tui(lambda: make_film()[0], itos, mask_id, pad_id, is_names, args.sampler, args.delay)
        return

    film, result = make_film()
    films = [film]
    if args.compare:
        ar_path = Path(args.ar_ckpt) if args.ar_ckpt else path.with_name("ckpt_ar.pt")
        ar_model, ar_ckpt, _ = load_or_exit(ar_path, args.device, True, "name the AR twin with --ar-ckpt")
        if ar_ckpt["itos"] != itos:
            sys.exit(f"error: {ar_path} was trained on another vocabulary than {path}; train both on one dataset.")
        films = same_length([film, ar_film(ar_model, n, L, mask_id, generator, args.temperature, pad_id,
                                           args.device, dtype)])

    write_outputs(args, films, result, gif, itos, mask_id, pad_id, is_names)


def write_outputs(args, films, result, gif, itos, mask_id, pad_id, is_names):
    """The GIF, the confidence heat map beside it, and with --show a window."""
    import matplotlib
    if not args.show:
        matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    start = time.time()
    film = films[0]
    fig, anim = animate(films, itos, mask_id, pad_id, is_names, args.fps)
    save_gif(anim, gif, args.fps)
    print(f"wrote {gif} ({len(films[0].frames)} frames, {gif.stat().st_size / 1024:.0f} KiB) "
          f"in {time.time() - start:.1f} s")
    heat = gif.with_name(gif.stem + "_confidence.png")
    first = "".join(itos[i] for i in result.samples[0].tolist())
    plot_confidence(result, 0, itos, mask_id, pad_id, heat, f"{film.title}: confidence before each step, "
                    f"sample 0 = {first.rstrip(itos[0]) if is_names else first[:40] + '...'!r}")
    print(f"wrote {heat}")
    if args.show:
        if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
            sys.exit("error: --show needs a display and a GUI backend for matplotlib; the GIF is written, open that.")
        plt.show()


if __name__ == "__main__":
    cli.run(main)
