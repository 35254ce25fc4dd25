"""Every process file has diffusion.py's shape, so train.py can pick one and never ask which.

A process file (torch_version/diffusion.py, and each file in torch_version/processes/) exposes the
same names with the same leading arguments, and each of its functions takes the process's settings
as keyword arguments. Functions it shares with diffusion.py are copies (so that `diff` against
diffusion.py shows only what the process changes); these tests keep the copies identical, as
tests/test_cross_tier.py does for the tiers. A copy that is meant to differ says so with
`# changed` on its first line."""
import ast
import inspect
import re
from pathlib import Path

import pytest
import torch

from torch_version import diffusion, train
from torch_version.model import ModelConfig, Transformer
from torch_version.processes import block, gaussian, uniform

PROCESSES = {"masked": diffusion, "uniform": uniform, "gaussian": gaussian, "block": block}
OPTIONS = {"masked": dict(objective="k", schedule="linear"), "uniform": dict(schedule="linear"), "gaussian": {},
           "block": dict(block=4)}  # a setting of each process's OPTIONS
RENAMED = {"block": {"sample_within": "sample_ancestral"}}  # a copy under another name: what it is a copy of
# name -> the positional arguments every process takes, in order (K: the number of real tokens,
# which diffusion.py calls mask_id: MASK is the last id)
INTERFACE = {
    "model_args": ["n_tokens"],
    "corrupt_batch": ["x0", "n_tokens", "generator"],
    "batch_loss": ["model", "x0", "noisy"],
    "estimate_nelbo": ["x0", "denoise", "n_tokens", "generator", "draws", "one_pass", "batch_size"],
    "sample_ancestral": ["denoise", "n", "L", "n_tokens", "generator", "steps"],
}
SAME_NAME = {"mask_id": "n_tokens"}


def leading_arguments(function, count):
    names = list(inspect.signature(function).parameters)[:count]
    return [SAME_NAME.get(name, name) for name in names]


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_every_process_file_has_the_interface_train_py_calls(name):
    process = PROCESSES[name]
    assert isinstance(process.OPTIONS, tuple) and all(isinstance(o, str) for o in process.OPTIONS)
    for function_name, arguments in INTERFACE.items():
        function = getattr(process, function_name)
        assert leading_arguments(function, len(arguments)) == arguments, (name, function_name)
        kinds = [p.kind for p in inspect.signature(function).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD in kinds, f"{name}.{function_name} must take the settings as **options"
    # the settings it reads are train.py flags
    flags = vars(train.parse_args([]))
    assert all(option in flags for option in process.OPTIONS), (name, process.OPTIONS)


def definitions(module):
    """Top-level functions, classes and assignments of a module: name -> (source, first line)."""
    source = Path(module.__file__).read_text()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            names += [e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts]
        else:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        text = "\n".join(lines[start:node.end_lineno])
        for name in names:
            found[name] = (text, lines[node.lineno - 1])
    return found


@pytest.mark.parametrize("name", ["uniform", "gaussian", "block"])
def test_what_a_process_file_shares_with_diffusion_py_is_an_identical_copy(name):
    ours, base = definitions(PROCESSES[name]), definitions(diffusion)
    for copy, original in RENAMED.get(name, {}).items():  # compared with the original, its name put back
        text, first_line = ours.pop(copy)
        ours[original] = (text.replace(f"def {copy}(", f"def {original}(").replace(" " * (len(copy) - len(original)) + "top_k", "top_k"),
                          first_line)
    shared = sorted(set(ours) & set(base) - {"OPTIONS"})  # OPTIONS is each process's own by definition
    assert {"build_vocab", "encode", "decode", "per_char", "model_args", "batch_loss"} <= set(shared)
    for key in shared:
        (text, first_line), (base_text, _) = ours[key], base[key]
        if "# changed" not in first_line:
            assert text == base_text, f"{name}.{key} differs from diffusion.py's: make it a copy, or mark it # changed"


def test_a_marked_change_is_a_real_change():
    """`# changed` on a copy that is in fact identical would hide the next real drift."""
    unmarked = lambda text: re.sub(r"  # changed.*", "", text)  # noqa: E731
    for name in ["uniform", "gaussian", "block"]:
        ours, base = definitions(PROCESSES[name]), definitions(diffusion)
        for key in sorted(set(ours) & set(base) - {"OPTIONS"}):
            text, first_line = ours[key]
            if "# changed" in first_line:
                assert unmarked(text) != base[key][0], f"{name}.{key} is marked # changed but is diffusion.py's"


def test_train_py_picks_the_process_file_once_and_never_asks_which():
    assert train.PROCESSES == PROCESSES
    tree = ast.parse(Path(train.__file__).read_text())
    named = [node.value.id for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("uniform", "gaussian")]
    assert named == [], "train.py calls a process's functions through PROCESSES, never by the file's name"


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_a_batch_loss_over_row_slices_adds_up_to_the_whole_batchs(name):
    """The corruption is drawn for the whole batch, then any slice of its rows is scored alone:
    the slices' losses, weighted by their share of the rows, add up to the whole batch's loss.
    That is what gradient accumulation and several processes (train.py) rely on."""
    process, K, L = PROCESSES[name], 9, 8
    options = OPTIONS[name]
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**process.model_args(K, **options), n_out=K, block_size=L, n_layer=1, n_head=2,
                                    n_embd=16))
    torch.nn.init.normal_(model.head.weight, std=0.5)  # not the zero start: every position's loss differs
    x0 = torch.randint(K, (12, L), generator=torch.Generator().manual_seed(1))
    noisy = process.corrupt_batch(x0, K, torch.Generator().manual_seed(2), **options)
    assert all(v.shape[0] == len(x0) for v in noisy.values()), "every entry of the corruption is per row"
    whole = process.batch_loss(model, x0, noisy, **options)
    parts = [process.batch_loss(model, x0[rows], {k: v[rows] for k, v in noisy.items()}, **options) * len(x0[rows]) / len(x0)
             for rows in (slice(0, 5), slice(5, 12))]
    assert torch.isfinite(whole) and torch.allclose(sum(parts), whole, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_each_process_estimates_and_samples_through_the_same_calls(name):
    process, K, L = PROCESSES[name], 9, 8
    options = OPTIONS[name]
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**process.model_args(K, **options), n_out=K, block_size=L, n_layer=1, n_head=2,
                                    n_embd=16)).eval()
    x0 = torch.randint(K, (5, L), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nelbo = process.estimate_nelbo(x0, model, K, torch.Generator().manual_seed(2), 2, False, 64, **options)
        out = process.sample_ancestral(model, 3, L, K, torch.Generator().manual_seed(3), 4, **options)
    assert nelbo.shape == (5,) and nelbo.dtype == torch.float64 and (nelbo > 0).all()
    assert out.samples.shape == (3, L) and int(out.samples.max()) < K and out.nfe >= 1
    assert len(out.trajectory) == len(out.times) >= 5  # the start, then a state per step (per step of a block)
