"""The T5X path: prompt export from T5X checkpoints, the gin files, and (where t5x is installed
from its public source) the tiny stage 1 -> export -> stage 2 -> eval/infer sequence.

Tests that need t5x call `pytest.importorskip("t5x")` and are marked `t5x`; CI has no t5x
(it is not on PyPI) and skips them. The export and gin-file tests run everywhere.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from promot_jax import checkpoints, cli, methods, network
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints import t5x_legacy, t5x_orbax
from promot_jax.gin_paths import gin_dir

REPO = Path(__file__).resolve().parent.parent
T5X_GIN = gin_dir() / "t5x"
CONFIG = network.mt5_config("tiny", vocab_size=128, dtype="float32", prompt_length=3)
PROMPT = prompt_lib.PROMPT_KEY


@pytest.fixture(scope="module")
def params():
    return jax.device_get(network.init_params(CONFIG, jax.random.key(3)))


def _export(src, out, capsys) -> tuple[int, str]:
    rc = cli.main(["export-prompt", str(src), str(out)])
    return rc, capsys.readouterr().err


def _as_t5x_writes_it(step_dir: Path) -> Path:
    """T5X keeps `_CHECKPOINT_METADATA` in checkpoint_<step>/, not in its state/ PyTree."""
    inner = step_dir / "state" / "_CHECKPOINT_METADATA"
    if inner.exists():
        inner.replace(step_dir / "_CHECKPOINT_METADATA")
    return step_dir


# --------------------------------------------------------------------------- export-prompt


@pytest.mark.parametrize("fmt", ["orbax", "legacy"])
def test_export_prompt_from_a_t5x_model_dir_takes_the_latest_step(fmt, params, tmp_path, capsys):
    later = jax.tree.map(lambda a: np.asarray(a) + 1.0, params)
    for step, tree in ((100, params), (1000, later)):
        if fmt == "orbax":
            _as_t5x_writes_it(t5x_orbax.write_checkpoint(tmp_path / "run", tree, step=step))
        else:
            t5x_legacy.write_checkpoint(tmp_path / "run", tree, step=step)
    out = tmp_path / "prompt.npy"
    rc, err = _export(tmp_path / "run", out, capsys)
    assert rc == 0, err
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (3, CONFIG.emb_dim)
    np.testing.assert_array_equal(got, later["encoder"]["prompt"]["prompt"])
    # A specific step directory works too.
    rc, err = _export(tmp_path / "run" / "checkpoint_100", out, capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(out), params["encoder"]["prompt"]["prompt"])


def test_export_prompt_reads_bfloat16_and_writes_float32(params, tmp_path, capsys):
    import ml_dtypes

    bf16 = jax.tree.map(lambda a: np.asarray(a).astype(ml_dtypes.bfloat16), params)
    ckpt = t5x_legacy.write_checkpoint(tmp_path / "run", bf16, step=5)
    rc, err = _export(ckpt, tmp_path / "p.npy", capsys)
    assert rc == 0, err
    got = np.load(tmp_path / "p.npy")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, bf16["encoder"]["prompt"]["prompt"].astype(np.float32))


def test_export_prompt_without_a_prompt_names_what_it_found(params, tmp_path, capsys):
    trunk = {k: v for k, v in params.items()}
    trunk["encoder"] = {k: v for k, v in params["encoder"].items() if k != "prompt"}
    ckpt = _as_t5x_writes_it(t5x_orbax.write_checkpoint(tmp_path / "mt5", trunk, step=7))
    out = tmp_path / "prompt.npy"
    rc, err = _export(ckpt, out, capsys)
    assert rc == 2
    assert f"has no {PROMPT}" in err and "decoder" in err and "encoder" in err
    assert not out.exists() and not list(tmp_path.glob("*.npy*"))


@pytest.mark.parametrize("bad_shape", [(3,), (1, 3, CONFIG.emb_dim)])
def test_export_prompt_of_unexpected_shape_names_the_shape(bad_shape, params, tmp_path, capsys):
    tree = jax.tree.map(np.asarray, params)
    tree["encoder"]["prompt"]["prompt"] = np.ones(bad_shape, np.float32)
    ckpt = t5x_legacy.write_checkpoint(tmp_path / "run", tree, step=1)
    out = tmp_path / "prompt.npy"
    rc, err = _export(ckpt, out, capsys)
    assert rc == 2
    assert str(bad_shape) in err and PROMPT in err
    assert not out.exists() and not list(tmp_path.glob("*.npy*"))


def test_export_prompt_of_a_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    rc, err = _export(tmp_path / "nowhere", tmp_path / "p.npy", capsys)
    assert rc == 2 and "nowhere" in err
    assert not (tmp_path / "p.npy").exists()


def test_network_initialises_from_float_dummy_tokens_as_t5x_eval_passes_them():
    # t5x.eval/infer build the InferenceState with no input types: float32 ones.
    ones = np.ones((1, 4), np.float32)
    variables = network.Transformer(CONFIG).init(
        jax.random.key(0), ones, ones, ones, enable_dropout=False
    )
    assert variables["params"]["encoder"]["prompt"]["prompt"].shape == (3, CONFIG.emb_dim)


# --------------------------------------------------------------------------- the gin files


def _t5x_gin_files() -> list[Path]:
    return sorted(T5X_GIN.rglob("*.gin"))


def test_every_t5x_gin_file_has_a_header_and_binds_nothing_through_main():
    files = _t5x_gin_files()
    assert len(files) >= 12
    for path in files:
        text = path.read_text()
        header = text.split("from __gin__", 1)[0]
        assert text.startswith("#"), path
        for word in ("Provides", "Requires", "Must come"):
            assert word in header, f"{path}: header lacks {word!r}"
        assert "from __gin__ import dynamic_registration" in text, path
        assert "__main__" not in text, path


def test_t5x_gin_files_bind_sizes_through_the_one_size_table():
    sizes = {p.stem for p in (T5X_GIN / "sizes").glob("*.gin")}
    assert sizes == set(network.MT5_SIZES) - {"tiny"}
    model = (T5X_GIN / "model.gin").read_text()
    assert "@network.mt5_config()" in model and "size = %MODEL_SIZE" in model
    for path in _t5x_gin_files():
        # No dimension is repeated in gin: sizes come from network.mt5_config only.
        assert not re.search(
            r"^\s*(emb_dim|mlp_dim|num_heads|head_dim)\s*=", path.read_text(), re.M
        ), path


def test_stage2_requires_a_prompt_file_and_stage_methods_exist():
    stage2 = (T5X_GIN / "stage2_frozen_prompt.gin").read_text()
    assert "PROMPT_FILE = %gin.REQUIRED" in stage2
    for path in _t5x_gin_files():
        for name in re.findall(r"^METHOD = '(\w+)'", path.read_text(), re.M):
            methods.get_method(name)  # raises on a name the method table does not know


def _imports_t5x(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "t5x" for a in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module.split(".")[0] == "t5x" or node.module.startswith("promot_jax.t5x"))
        ):
            return True
    return False


def test_the_t5x_import_check_sees_from_imports_after_future_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from __future__ import annotations\nfrom t5x import models\n")
    assert _imports_t5x(source)
    source.write_text("from __future__ import annotations\nimport numpy\n")
    assert not _imports_t5x(source)


def test_only_the_t5x_package_imports_t5x():
    offenders = [
        str(p.relative_to(REPO))
        for root in ("promot_jax", "tasks")
        for p in (REPO / root).rglob("*.py")
        if _imports_t5x(p) and "t5x" not in p.relative_to(REPO).parts[1:-1]
    ]
    assert offenders == []


# --------------------------------------------------------------------------- with t5x


@pytest.mark.t5x
def test_traversals_freeze_exactly_what_the_method_table_says():
    pytest.importorskip("t5x")
    from flax import traverse_util

    from promot_jax.t5x import freezing

    variables = network.init_variables(CONFIG, jax.random.key(0))
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    for method in ("promot_stage1", "promot_stage2", "promot_stage2_prompt_trainable", "finetune"):
        traversal = freezing.trainable_traversal(method)
        marked = traversal.update(lambda _: None, variables["params"])
        chosen = {k for k, v in traverse_util.flatten_dict(marked, sep="/").items() if v is None}
        assert chosen == {k for k in flat if methods.is_trainable(method, k)}, method
    stage1 = {k for k in flat if methods.is_trainable("promot_stage1", k)}
    assert stage1 == {PROMPT}


@pytest.mark.t5x
@pytest.mark.parametrize(
    "method, num_prompts", [("promot_stage1", 1), ("multitask_promot_stage1", 2)]
)
def test_adafactor_and_partition_rules_know_the_prompt_axes(method, num_prompts):
    pytest.importorskip("t5x")
    from t5x import adafactor

    from promot_jax.t5x import axis_rules, freezing

    opt = freezing.method_optimizer(
        method, adafactor.Adafactor(logical_factor_rules=freezing.factor_rules())
    )
    config = dataclasses.replace(CONFIG, num_prompts=num_prompts)
    axes = network.logical_axes(config)
    axes = jax.tree.map(
        lambda names: jax.sharding.PartitionSpec(*names),
        axes,
        is_leaf=lambda x: isinstance(x, tuple),
    )
    opt.set_param_axes(axes)  # KeyError on an axis name the factor rules lack
    rules = dict(axis_rules.logical_axis_rules())
    assert all(rules[axis] is None for axis in prompt_lib.AXIS_NAMES)  # replicated
    factors = freezing.factor_rules()
    assert all(factors[axis] == adafactor.FactorDim.NONE for axis in prompt_lib.AXIS_NAMES)


@pytest.mark.t5x
def test_restore_check_refuses_anything_but_the_prompt_from_scratch():
    pytest.importorskip("t5x")
    from promot_jax.t5x import restore

    model = {
        "target": {"encoder": {"prompt": {"prompt": 1}, "layers_0": {"k": 1}}},
        "state": {"step": 0},
    }
    ckpt = {"target": {"encoder": {"layers_0": {"k": 2}}}, "state": {"step": 9}}
    assert restore.require_only_prompt_from_scratch(ckpt, model) is ckpt
    no_trunk = {"target": {"encoder": {}}, "state": {"step": 9}}
    with pytest.raises(ValueError, match="target/encoder/layers_0/k"):
        restore.require_only_prompt_from_scratch(no_trunk, model)
    assert restore.require_only_prompt_from_scratch(no_trunk, model, is_resuming=True)


def _t5x(entry: str, gin_file: str, cwd: Path, log: str, **macros) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        f"t5x.{entry}",
        f"--gin_search_paths={gin_dir()}",
        f"--gin_file={gin_file}",
    ]
    args += [
        f"--gin.{k}={v!r}" if isinstance(v, str) else f"--gin.{k}={v}" for k, v in macros.items()
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    (cwd / log).write_text(proc.stdout + proc.stderr)
    return proc


def _run_ok(*args, **kwargs) -> None:
    proc = _t5x(*args, **kwargs)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def tiny_sequence(tmp_path_factory):
    """pretrain stand-in -> stage 1 -> export -> stage 2 -> eval -> infer, all through T5X."""
    pytest.importorskip("t5x")
    root = tmp_path_factory.mktemp("t5x_sequence")
    pre = root / "pre" / "checkpoint_2"
    _run_ok("train", "t5x/test/pretrain_tiny.gin", root, "pre.log", MODEL_DIR=str(root / "pre"))
    _run_ok(
        "train",
        "t5x/test/stage1_tiny.gin",
        root,
        "stage1.log",
        MODEL_DIR=str(root / "stage1"),
        INITIAL_CHECKPOINT_PATH=str(pre),
    )
    assert cli.main(["export-prompt", str(root / "stage1"), str(root / "prompt.npy")]) == 0
    _run_ok(
        "train",
        "t5x/test/stage2_tiny.gin",
        root,
        "stage2.log",
        MODEL_DIR=str(root / "stage2"),
        INITIAL_CHECKPOINT_PATH=str(pre),
        PROMPT_FILE=str(root / "prompt.npy"),
    )
    trunk = str(root / "stage2" / "checkpoint_5")
    _run_ok(
        "eval",
        "t5x/test/eval_tiny.gin",
        root,
        "eval.log",
        CHECKPOINT_PATH=trunk,
        PROMPT_FILE=str(root / "prompt.npy"),
        EVAL_OUTPUT_DIR=str(root / "eval"),
        **{"evaluate.fallback_init_rng": 0},
    )
    _run_ok(
        "infer",
        "t5x/test/infer_tiny.gin",
        root,
        "infer.log",
        CHECKPOINT_PATH=trunk,
        PROMPT_FILE=str(root / "prompt.npy"),
        INFER_OUTPUT_DIR=str(root / "infer"),
        **{"infer.fallback_init_rng": 0},
    )
    _run_ok(
        "eval",
        "t5x/test/eval_no_prompt_tiny.gin",
        root,
        "eval_no_prompt.log",
        CHECKPOINT_PATH=trunk,
        EVAL_OUTPUT_DIR=str(root / "eval_no_prompt"),
    )
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _params(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float32) for k, v in checkpoints.read_flat_params(path).items()}


def _changed(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not np.array_equal(a[k], b[k])}


@pytest.mark.t5x
@pytest.mark.slow
def test_stage1_changes_only_the_prompt_and_starts_from_the_trunk(tiny_sequence):
    pre = _params(tiny_sequence / "pre" / "checkpoint_2")
    start = _params(tiny_sequence / "stage1" / "checkpoint_2")
    end = _params(tiny_sequence / "stage1" / "checkpoint_5")
    assert PROMPT not in pre and PROMPT in start
    trunk = set(pre)
    assert trunk and all(np.array_equal(pre[k], start[k]) for k in trunk)  # restored, not init
    assert _changed(start, end) == {PROMPT}


@pytest.mark.t5x
@pytest.mark.slow
def test_export_writes_stage1s_final_prompt(tiny_sequence):
    end = _params(tiny_sequence / "stage1" / "checkpoint_5")
    np.testing.assert_array_equal(np.load(tiny_sequence / "prompt.npy"), end[PROMPT])


@pytest.mark.t5x
@pytest.mark.slow
def test_stage2_changes_everything_but_the_prompt_and_starts_from_stage1s_prompt(tiny_sequence):
    pre = _params(tiny_sequence / "pre" / "checkpoint_2")
    start = _params(tiny_sequence / "stage2" / "checkpoint_2")
    end = _params(tiny_sequence / "stage2" / "checkpoint_5")
    np.testing.assert_array_equal(start[PROMPT], np.load(tiny_sequence / "prompt.npy"))
    assert all(np.array_equal(pre[k], start[k]) for k in pre)
    assert _changed(start, end) == set(start) - {PROMPT}


@pytest.mark.t5x
@pytest.mark.slow
def test_eval_with_and_without_prompt_and_infer_produce_metrics_and_predictions(tiny_sequence):
    metrics = [
        json.loads(line)
        for line in (tiny_sequence / "eval" / "inference_eval" / "toy_rte-metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    assert metrics and "accuracy" in metrics[-1]
    no_prompt = tiny_sequence / "eval_no_prompt" / "inference_eval" / "toy_rte-metrics.jsonl"
    assert "accuracy" in json.loads(no_prompt.read_text().splitlines()[-1])
    predictions = tiny_sequence / "infer" / "toy_rte-predict.jsonl-00000-of-00001"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert rows and "prediction" in rows[0] and "inputs_pretokenized" in rows[0]["inputs"]


@pytest.mark.t5x
@pytest.mark.slow
def test_multitask_stage1_trains_one_prompt_per_task_and_nothing_else(tiny_sequence, tmp_path):
    """gin/t5x/test/stage1_multitask_tiny.gin: a [2, P, d] table from the tiny trunk, both rows
    trained (batches carry both task ids), the trunk frozen; export-prompt writes the table."""
    pre_dir = tiny_sequence / "pre" / "checkpoint_2"
    _run_ok(
        "train",
        "t5x/test/stage1_multitask_tiny.gin",
        tmp_path,
        "stage1_multitask.log",
        MODEL_DIR=str(tmp_path / "run"),
        INITIAL_CHECKPOINT_PATH=str(pre_dir),
    )
    pre = _params(pre_dir)
    start = _params(tmp_path / "run" / "checkpoint_2")
    end = _params(tmp_path / "run" / "checkpoint_5")
    assert start[PROMPT].shape == (2, 4, CONFIG.emb_dim)
    assert all(np.array_equal(pre[k], start[k]) for k in pre)
    assert _changed(start, end) == {PROMPT}
    assert all(not np.array_equal(start[PROMPT][i], end[PROMPT][i]) for i in range(2))
    # T5X's inference evaluator (seqio) decoded each task of the mixture with its task id.
    done = {p.name for p in (tmp_path / "run" / "inference_eval").glob("*-metrics.jsonl")}
    assert done == {
        f"toy_multitask_rte_en_fr_{t}-metrics.jsonl" for t in ("toy_rte", "toy_wmt14_en_fr")
    }
    out = tmp_path / "prompts.npy"
    assert cli.main(["export-prompt", str(tmp_path / "run"), str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), end[PROMPT])


@pytest.mark.t5x
def test_stage2_without_a_prompt_file_fails_at_parse_time_naming_the_macro(tmp_path):
    pytest.importorskip("t5x")
    proc = _t5x(
        "train",
        "t5x/test/stage2_tiny.gin",
        tmp_path,
        "stage2.log",
        MODEL_DIR=str(tmp_path / "run"),
        INITIAL_CHECKPOINT_PATH=str(tmp_path),
    )
    assert proc.returncode != 0
    assert "PROMPT_FILE" in proc.stderr
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("checkpoint_*"))
