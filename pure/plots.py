"""The pure tier's figures: every stage of a run drawn, each PNG readable on its own.

    nelbo.png         the training and held-out NELBO during training, the saved best marked
    schedule.png      alpha(t) and the ELBO weight w(t) of the linear and cosine schedules
    forward.png       the forward process on one name, masks growing with t
    reverse.png       the reverse process of both samplers, one row per step
    temperatures.png  ancestral samples at four temperatures, new, copied and invalid ones coloured
    lengths.png       the length distribution of the samples against the training names'

train_pure.make_plots calls make_plots(tier, ...) with the tier's module, whose loop (alpha,
weight, corrupt, the samplers, the metrics) the figures use: this file draws, it computes nothing
of its own. matplotlib is imported only here.
"""
import numpy as np


def make_plots(tier, out, history, denoise, stoi, itos, train_words, samples, rng):
    """Six PNGs in `out`. samples: decoded samples, or a dict {sampler name: decoded samples}.
    Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    samples = samples if isinstance(samples, dict) else {"samples": samples}
    return [training_curves(out, history, tier), schedules(out, tier), forward_process(out, tier, stoi, itos),
            reverse_process(out, tier, denoise, stoi, itos, rng),
            temperatures(out, tier, denoise, stoi, itos, train_words, rng),
            lengths(out, tier, train_words, samples)]


def save(fig, path, bottom=0.0):
    """Write the figure and close it. bottom: room for a figure legend, as a fraction of the height."""
    import matplotlib.pyplot as plt
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def grid(ax, rows, labels, title, tier, stoi, itos, changed="changed since the row above"):
    """Rows of token ids as coloured cells, one character per cell."""
    from matplotlib.patches import Patch
    rows = np.array(rows)  # (R, L)
    colours = {"MASK _": (0.75, 0.75, 0.75), "PAD .": (0.85, 0.9, 0.97), changed: (1.0, 0.78, 0.45)}
    img = np.ones(rows.shape + (3,))  # letters on white
    img[rows == stoi[tier.MASK]] = colours["MASK _"]
    img[rows == stoi[tier.PAD]] = colours["PAD ."]
    img[1:][rows[1:] != rows[:-1]] = colours[changed]
    ax.imshow(img, aspect="auto", interpolation="nearest")
    for (r, c), i in np.ndenumerate(rows):
        ax.text(c, r, itos[i], ha="center", va="center", fontsize=7, family="monospace")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xticks(range(rows.shape[1]), range(rows.shape[1]), fontsize=7)
    ax.set_xlabel("position in the name")
    ax.set_title(title, fontsize=10)
    if not ax.figure.legends:  # one legend per figure, below the panels
        ax.figure.legend(handles=[Patch(color=c, label=text) for text, c in colours.items()],
                         loc="lower center", ncol=3, fontsize=8, frameon=False)


def training_curves(out, history, tier):
    """1. the NELBO during training: the running training mean and the held-out estimate."""
    import matplotlib.pyplot as plt
    h = np.array(history).reshape(-1, 3)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(h[:, 0], h[:, 1], "o-", label="train (running mean since the last point)")
    ax.plot(h[:, 0], h[:, 2], "s-", label=f"held out (1 in {tier.EVAL_NAMES} held-out names, fixed masks)")
    best = np.nanargmin(h[:, 2])
    ax.plot(h[best, 0], h[best, 2], "k*", markersize=12, label=f"best, saved: {h[best, 2]:.3f}")
    ax.set(xlabel="training step", ylabel="NELBO (nats per character)", title="NELBO during training")
    ax.grid(alpha=0.3), ax.legend()
    return save(fig, out / "nelbo.png")


def schedules(out, tier):
    """2. the noise schedules and their ELBO weights."""
    import matplotlib.pyplot as plt
    t = np.linspace(tier.EPS, 1, 500)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for schedule in ("linear", "cosine"):
        ax1.plot(t, tier.alpha(t, schedule), label=schedule)
        ax2.plot(t, tier.weight(t, schedule), label=schedule)
    ax1.set(xlabel="time t", ylabel="alpha(t) = P(token still clean)", title="Noise schedule alpha(t)")
    ax2.set(xlabel="time t (log scale)", ylabel="w(t) = -alpha'(t) / (1 - alpha(t))", xscale="log",
            yscale="log", title="ELBO weight w(t): 1/t (linear), about 2/t near 0 (cosine)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3), ax.legend()
    return save(fig, out / "schedule.png")


def forward_process(out, tier, stoi, itos):
    """3. the forward process on one name: the same uniforms at every t, so masks only grow."""
    import matplotlib.pyplot as plt
    x0 = tier.encode(["isabella"], stoi)
    times = np.array([0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0])
    rows = [tier.corrupt(x0, np.array([t]), stoi[tier.MASK], np.random.default_rng(1))[0][0] for t in times]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    grid(ax, rows, [f"t={t:.2f}" for t in times], "Forward process: each character masked w.p. 1 - alpha(t)",
         tier, stoi, itos, "masked since the row above")
    return save(fig, out / "forward.png", bottom=0.08)


def reverse_process(out, tier, denoise, stoi, itos, rng):
    """4. the reverse process of both samplers, one row per step."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 9))
    labels = [f"t={t:.2f}" for t in np.linspace(1, 0, tier.SAMPLE_STEPS + 1)]
    for ax, sampler in zip(axes, (tier.sample_ancestral, tier.sample_confidence)):
        _, trajectory = sampler(denoise, 1, stoi[tier.MASK], rng)
        grid(ax, [x[0] for x in trajectory], labels, f"Reverse process: {sampler.__name__}", tier, stoi, itos,
             "revealed at this step")
    axes[0].set_ylabel("sampler step (time runs 1 -> 0)")
    return save(fig, out / "reverse.png", bottom=0.03)


def temperatures(out, tier, denoise, stoi, itos, train_words, rng):
    """5. ancestral samples at several temperatures: new ones black, copies gray, invalid ones red."""
    import matplotlib.pyplot as plt
    temps, train_set = (0.5, 0.8, 1.0, 1.5), set(train_words)
    fig, axes = plt.subplots(1, len(temps), figsize=(10, 4.6))
    for ax, temp in zip(axes, temps):
        x, _ = tier.sample_ancestral(denoise, 200, stoi[tier.MASK], rng, temperature=temp)
        names = [tier.decode(s, itos) for s in x]
        m = tier.sample_metrics(names, train_words, train_words)
        for j, s in enumerate(names[:16]):
            name = tier.name_of(s)
            colour = "tab:red" if name is None else "tab:gray" if name in train_set else "black"
            ax.text(0.05, 1 - (j + 1) / 17, s.rstrip(tier.PAD), color=colour, family="monospace",
                    transform=ax.transAxes)
        ax.set_title(f"T = {temp}\nvalid {m['valid']:.0%}, new {m['new']:.0%} (of 200)", fontsize=9)
        ax.axis("off")
    fig.suptitle("Ancestral samples by temperature (black: new, gray: a training name, red: invalid)")
    return save(fig, out / "temperatures.png")


def lengths(out, tier, train_words, samples):
    """6. the length distribution of each sampler's valid samples against the training names'."""
    import matplotlib.pyplot as plt

    def share(lengths):  # share of names of each length 1..L
        return np.bincount(lengths, minlength=tier.BLOCK_SIZE + 1)[1:] / max(1, len(lengths))
    bins = np.arange(1, tier.BLOCK_SIZE + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(bins - 0.27, share([len(w) for w in train_words]), 0.27, label="training names")
    for offset, (name, names) in zip((0, 0.27), samples.items()):
        valid = [w for w in map(tier.name_of, names) if w is not None]
        tv = tier.sample_metrics(names, train_words, train_words)["tv_length"]
        ax.bar(bins + offset, share([len(w) for w in valid]), 0.27, label=f"{name} ({len(valid):,} valid), TV {tv:.3f}")
    ax.set(xlabel="name length (characters)", ylabel="share of names", xticks=bins,
           title="Length distribution; TV = total-variation distance to the training names")
    ax.grid(alpha=0.3, axis="y"), ax.legend()
    return save(fig, out / "lengths.png")
