"""Numbers a command line must refuse, in one sentence, before it does anything (common/cli.py).

inf and nan parse as floats and pass a plain `x > 0`; a seed past 2^63 or below 0 crashes torch or
NumPy; a 0 must not mean "the default"; a huge count must not reach an allocation. Every torch-tier
entry point shares common/cli.py's types, so each rule is checked on each script that has the flag."""
import pytest

from torch_version.bench import sampling as bench_sampling, shakespeare as bench_shakespeare
from torch_version.tools import evaluate, visualize
from torch_version import sample, train

MAINS = {"train": train.main, "sample": sample.main, "evaluate": evaluate.main, "visualize": visualize.main,
         "bench_sampling": bench_sampling.main, "bench_shakespeare": bench_shakespeare.main}
BAD = {
    "train": [["--lr", "inf"], ["--lr", "nan"], ["--lr", "0"], ["--lr", "-0.001"], ["--weight-decay", "nan"],
              ["--weight-decay", "-0.1"], ["--dropout", "1"], ["--dropout", "nan"], ["--ema", "inf"],
              ["--seed", "-1"], ["--seed", str(2**63)], ["--seed", "1.5"], ["--max-iters", "0"],
              ["--max-iters", "1e3"], ["--batch-size", "0"], ["--n-embd", "10000000"], ["--n-layer", "0"],
              ["--samples", "-1"], ["--samples", "10000000000"], ["--threads", "-2"], ["--eval-draws", "0"]],
    "sample": [["--temperature", "0"], ["--temperature", "1e-300"], ["--temperature", "inf"], ["--tau", "nan"],
               ["--tau", "1.5"], ["--top-p", "0"], ["--top-k", "-1"], ["--block-chars", "0"], ["--chars", "0"],
               ["--samples", "0"], ["--steps", "0"], ["--seed", "-5"], ["--seed", str(2**64)]],
    "evaluate": [["--samples", "1"], ["--draws", "0"], ["--temperature", "nan"], ["--seed", "-1"]],
    "visualize": [["--fps", "inf"], ["--fps", "0"], ["--delay", "nan"], ["--delay", "-1"], ["--tau", "0"],
                  ["--temperature", "1e-320"], ["--samples", "0"], ["--steps", "0"], ["--seed", str(2**63)]],
    "bench_sampling": [["--steps", "8,0"], ["--steps", ","], ["--taus", "0.9,inf"], ["--chars", "0"],
                       ["--temperature", "-1"]],
    "bench_shakespeare": [["--peak-tflops", "-312"], ["--peak-tflops", "inf"], ["--timing-iters", "0"]],
}
CASES = [(name, argv) for name, cases in BAD.items() for argv in cases]


@pytest.mark.parametrize("name, argv", CASES, ids=[f"{n}:{' '.join(a)}" for n, a in CASES])
def test_a_bad_number_is_refused_in_one_sentence_before_any_work(name, argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        MAINS[name](argv + (["--out", str(tmp_path)] if name == "train" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith(err[-1].split(":")[0] + ": error: argument " + argv[0])
    bad = argv[1] if argv[1] == "," else argv[1].split(",")[-1]  # a list: the message names its bad entry
    assert "Traceback" not in "\n".join(err) and f"'{bad}'" in err[-1]


def test_a_model_too_large_to_allocate_is_refused_before_any_allocation(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--n-embd", "16384", "--n-head", "128", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "B parameters" in err[-1] and "Traceback" not in "\n".join(err)
