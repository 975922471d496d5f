"""The soft prompt's facts live in promot_jax.prompt only: its path in the parameter tree
(and T5X's regex for it), its logical axes, and the shape a config expects. Every place
that checks a prompt against a config refuses a wrong one with the same message."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from flax import traverse_util

from promot_jax import checkpoints, methods, network, sharding, train
from promot_jax import prompt as prompt_lib
from promot_jax.evaluation import model_source

TOY = dict(vocab_size=128, dtype="float32")


def tiny(**overrides) -> network.T5Config:
    return network.mt5_config("tiny", **TOY, **overrides)


@pytest.mark.parametrize("num_prompts", [1, 2])
def test_the_path_regex_and_axes_are_those_the_network_builds(num_prompts):
    cfg = tiny(prompt_length=3, num_prompts=num_prompts)
    params = jax.device_get(network.init_params(cfg, jax.random.key(0)))
    flat = traverse_util.flatten_dict(params, sep="/")
    prompt_keys = [k for k in flat if re.fullmatch(prompt_lib.PROMPT_REGEX, "/" + k)]
    assert prompt_keys == [prompt_lib.PROMPT_KEY] == ["/".join(prompt_lib.PROMPT_PATH)]
    assert [k for k in flat if methods.is_prompt(k)] == prompt_keys
    assert flat[prompt_lib.PROMPT_KEY].shape == prompt_lib.expected_shape(cfg)
    assert prompt_lib.get_prompt(params) is flat[prompt_lib.PROMPT_KEY]
    axes = network.logical_axes(cfg)
    for key in prompt_lib.PROMPT_PATH:
        axes = axes[key]
    assert set(axes) <= set(prompt_lib.AXIS_NAMES)
    assert axes == (prompt_lib.MULTITASK_PROMPT_AXES if num_prompts > 1 else prompt_lib.PROMPT_AXES)
    rules = dict(sharding.LOGICAL_AXIS_RULES)
    assert all(rules[axis] is None for axis in prompt_lib.AXIS_NAMES)  # replicated


def test_the_regex_matches_the_prompt_as_t5x_spells_it_and_nothing_else():
    def matches(key: str) -> bool:
        return re.fullmatch(prompt_lib.PROMPT_REGEX, key) is not None

    for key in (
        "/encoder/prompt/prompt",  # a flax traversal
        "target/encoder/prompt/prompt",  # T5X's restore keys
        "state/param_states/encoder/prompt/prompt/v_row",  # and the prompt's optimizer slots
    ):
        assert matches(key), key
    for key in (
        "target/encoder/layers_0/attention/query/kernel",
        "target/decoder/prompt/prompt",
        "target/encoder/prompt_x/prompt",
        "target/token_embedder/embedding",
    ):
        assert not matches(key), key


def test_prompt_tree_edits_copy_and_leave_the_input_alone():
    params = {"encoder": {"prompt": {"prompt": 1}, "layers_0": 2}, "decoder": 3}
    put = prompt_lib.set_prompt(params, 9)
    dropped = prompt_lib.drop_prompt(params)
    assert prompt_lib.get_prompt(put) == 9 and prompt_lib.get_prompt(params) == 1
    assert dropped == {"encoder": {"layers_0": 2}, "decoder": 3}
    assert params == {"encoder": {"prompt": {"prompt": 1}, "layers_0": 2}, "decoder": 3}
    with pytest.raises(KeyError):
        prompt_lib.get_prompt(dropped)
    assert prompt_lib.get_prompt(prompt_lib.set_prompt(dropped, 4)) == 4


@pytest.mark.parametrize("shape", [(3,), (1, 4, 64), (4, 0), (2, 3, 4, 64)])
def test_what_is_no_prompt_is_named(shape):
    with pytest.raises(ValueError, match=re.escape(f"x of shape {shape} is not a prompt")):
        prompt_lib.check_shape(shape, None, "x")


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """Our params checkpoint of a tiny trunk without any prompt."""
    root = tmp_path_factory.mktemp("trunk")
    params = jax.device_get(network.init_params(tiny(), jax.random.key(0)))
    checkpoints.save_params(params, root / "params")
    return root / "params"


# (config's num_prompts, prompt length, the file's wrong shape, whether eval can tell):
# evaluation attaches a prompt of any number and length, so it sees only a wrong width.
CASES = [
    (1, 4, (4, 32), True),
    (1, 4, (5, 64), False),
    (2, 4, (2, 4, 32), True),
    (2, 4, (3, 4, 64), False),
    (2, 4, (4, 64), False),
]


@pytest.mark.parametrize("num_prompts, length, shape, in_eval", CASES)
def test_every_former_copy_refuses_a_wrong_prompt_with_the_same_message(
    num_prompts, length, shape, in_eval, trunk, tmp_path
):
    cfg = tiny(prompt_length=length, num_prompts=num_prompts)
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.float32))
    want = prompt_lib.expected_shape(cfg)
    message = (
        f"prompt file {path} of shape {shape} does not fit the config: want {want} = "
        f"({'num_prompts, ' if num_prompts > 1 else ''}prompt_length, emb_dim); the config's "
        f"num_prompts is {num_prompts}, prompt_length is {length}, emb_dim is 64"
    )

    def refusal(fn, *args, **kwargs) -> str:
        with pytest.raises(ValueError) as info:
            fn(*args, **kwargs)
        return str(info.value)

    method = "multitask_promot_stage2" if num_prompts > 1 else "promot_stage2"
    stage = train.StageConfig(
        method, "toy_rte", cfg, steps=1, run_dir=str(tmp_path / "run"), prompt_file=str(path)
    )
    refusals = {
        "load_prompt_file": refusal(prompt_lib.load_prompt_file, path, cfg),
        "save_prompt_file": refusal(prompt_lib.save_prompt_file, np.zeros(shape), path, cfg),
        "train.initial_params": refusal(train.initial_params, stage),
        "train.validate": refusal(train.validate, stage),
    }
    if in_eval:
        refusals["model_source.load_model"] = refusal(
            model_source.load_model, trunk, prompt_file=path, size="tiny", config_overrides=TOY
        )
    else:  # any number and length fit a trunk: the eval reads the model from the prompt
        model = model_source.load_model(trunk, prompt_file=path, size="tiny", config_overrides=TOY)
        assert prompt_lib.expected_shape(model.config) == shape
    assert refusals == dict.fromkeys(refusals, message)
    assert np.load(path).shape == shape  # the refused save wrote nothing

    # With another source: the array given to load_params, the one a from_file init holds.
    given = refusal(checkpoints.load_params, trunk, cfg, prompt=np.zeros(shape))
    assert given == message.replace(f"prompt file {path}", "the given prompt")
    fixed = prompt_lib.from_array(np.zeros(shape, np.float32))
    with_fixed = tiny(prompt_length=length, num_prompts=num_prompts, prompt_init=fixed)
    init = refusal(network.init_params, with_fixed, jax.random.key(0))
    assert init == message.replace(f"prompt file {path}", "prompt array").split(";")[0].replace(
        "the config", "the model"
    )


def test_a_failed_prompt_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    """Prompt files go through the project's one atomic writer (run_dirs.write_atomic)."""
    from promot_jax import run_dirs

    path = tmp_path / "prompt.npy"
    prompt_lib.save_prompt_file(np.ones((4, 8)), path)
    before = path.read_bytes()
    real = run_dirs.os.replace

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(run_dirs.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        prompt_lib.save_prompt_file(np.zeros((4, 8)), path)
    monkeypatch.setattr(run_dirs.os, "replace", real)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompt.npy"]
    np.testing.assert_array_equal(prompt_lib.load_prompt_file(path), np.ones((4, 8)))
