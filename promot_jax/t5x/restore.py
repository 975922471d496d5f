"""The stage-2 restore recipe: trunk from a checkpoint, prompt from its initialiser, nothing else.

T5X restores through `RestoreCheckpointConfig(assignment_map=..., fallback_to_scratch=True)`:
keys mapped to None are skipped and every key the checkpoint lacks is filled from
`init` -- silently, for any key. `require_only_prompt_from_scratch` is a state
transformation that runs after the assignment map and refuses to start when
anything but the prompt (and its optimizer slots) would come from scratch, e.g.
a checkpoint of another size or one without optimizer state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from t5x import state_utils

from promot_jax import prompt as prompt_lib


def skip_prompt_assignment_map() -> tuple[tuple[str, None], ...]:
    """T5X assignment map that leaves every prompt key (`prompt.PROMPT_REGEX`) to `init`."""
    return ((prompt_lib.PROMPT_REGEX, None),)


def _present(flat: Mapping[str, Any]) -> set[str]:
    return {k for k, v in flat.items() if v is not None}


def require_only_prompt_from_scratch(
    ckpt_optimizer_state: Mapping,
    optimizer_state: Mapping,
    *,
    is_resuming: bool = False,
    allowed: Sequence[str] = (prompt_lib.PROMPT_REGEX,),
) -> Mapping:
    """Returns the checkpoint state unchanged; raises if a non-prompt key would be initialised.

    `allowed` are regexes (re.fullmatch over T5X's flat keys such as
    `target/encoder/prompt/prompt`) that may come from scratch.
    """
    if is_resuming:
        return ckpt_optimizer_state
    want = _present(state_utils.flatten_state_dict(optimizer_state))
    have = _present(state_utils.flatten_state_dict(ckpt_optimizer_state))
    patterns = [re.compile(p) for p in allowed]
    missing = sorted(k for k in want - have if not any(p.fullmatch(k) for p in patterns))
    if missing:
        shown = ", ".join(missing[:8]) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        raise ValueError(
            f"the restore checkpoint lacks {len(missing)} entries that only the prompt may lack "
            f"({shown}); is it a checkpoint of the same model size, with optimizer state?"
        )
    return ckpt_optimizer_state
