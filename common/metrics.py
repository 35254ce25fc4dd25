"""Sample metrics for generated names (SPEC 5), shared by every tier and tool that scores samples.

What a sample is worth is measured the same way everywhere: pure prints these after training,
torch_version/tools/evaluate.py puts them in its report, the benchmarks in their tables. A sample is a
decoded string with PAD and MASK visible (each tier's PAD, MASK = ".", "_").

    from common.metrics import sample_metrics, unigram_entropy
    sample_metrics(["emma..", "ma.in."], train_words, real_words)  # valid, copied, new, tv_length
    unigram_entropy([4, 2, 2, 7])                                   # bits
"""
import numpy as np

PAD, MASK = ".", "_"  # as in every tier's vocabulary


def name_of(sample, pad=PAD, mask=MASK):
    """The name a decoded sample spells, or None unless it is letters followed only by PADs."""
    w = sample.rstrip(pad)
    return w if w and pad not in w and mask not in w else None


def sample_metrics(samples, train_words, real_words, pad=PAD, mask=MASK):
    """Scores for generated names (SPEC 5). samples: decoded strings with PAD and MASK visible.
    valid: letters followed only by PADs; copied: valid and a training name; new: valid and not;
    tv_length: total-variation distance between the lengths of the valid samples and of real_words."""
    valid = [w for w in (name_of(s, pad, mask) for s in samples) if w is not None]
    train_set = set(train_words)
    copied = sum(w in train_set for w in valid)
    n_bins = max(map(len, list(real_words) + valid)) + 1
    real = np.bincount([len(w) for w in real_words], minlength=n_bins) / len(real_words)
    gen = np.bincount([len(w) for w in valid], minlength=n_bins) / max(1, len(valid))
    return {"valid": len(valid) / len(samples), "copied": copied / len(samples),
            "new": (len(valid) - copied) / len(samples),
            "tv_length": 0.5 * np.abs(gen - real).sum() if valid else 1.0}


def unigram_entropy(tokens):
    """Entropy in bits of the empirical distribution of a sequence of token ids (any 1-D array-like,
    a torch tensor included). Low entropy beside a good judge score is collapse, not quality."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64).ravel()).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
