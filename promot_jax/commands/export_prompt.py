"""`promot-jax export-prompt`: the soft prompt of a checkpoint, as a `[P, d]` (per-task
prompts: `[T, P, d]`) float32 `.npy`.

T5X's default Orbax checkpoints carry no prompt side file (prompt-tuning's
`numpy_checkpoints/` is only written by the legacy checkpointer), so ProMoT's
stage-1 prompt is handed to stage 2 through this export.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from promot_jax import checkpoints, paths
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints import formats
from promot_jax.evaluation import model_source

HELP = "write the soft prompt of a T5X (Orbax or legacy) or promot-jax checkpoint to a .npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a T5X checkpoint_<step>/ or model directory (its latest step), a promot-jax "
        "stage run directory (see --which) or one of its checkpoints/<step>/",
    )
    parser.add_argument("out", help="the .npy file to write ([P, d] or [T, P, d] float32)")
    parser.add_argument(
        "--which",
        default="best",
        choices=("best", "final"),
        help="for a stage run directory: its best or final parameters",
    )


def run(args: argparse.Namespace) -> int:
    source = model_source.resolve_params_path(paths.path(args.checkpoint), args.which)
    fmt, where = formats.detect(source)
    prompt = np.asarray(checkpoints.load_prompt(source))
    what = f"{args.checkpoint} ({fmt}): {prompt_lib.PROMPT_KEY}"
    # jnp.issubdtype: bfloat16 counts as floating (np.issubdtype says it does not).
    if not jnp.issubdtype(prompt.dtype, jnp.floating):
        raise ValueError(f"{what} is a {prompt.dtype} array of shape {prompt.shape}; want floats")
    shape = prompt_lib.check_shape(prompt.shape, None, what)
    out = prompt_lib.save_prompt_file(prompt, args.out)
    print(f"{out}: prompt {' x '.join(map(str, shape))} (float32) from {where} ({fmt})")
    return 0
