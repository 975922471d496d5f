"""The lab's fixed design: model size, stage lengths, learning rates, seeds, eval sizes.

Everything here was fixed before the comparison it reports was run. Ratios follow
the papers, scaled to a 64-d model on 2 CPU cores: ProMoT stage 1 (prompt,
Adafactor LR 0.2) runs twice as long as stage 2 (trunk, LR 1e-3 in the paper; here
3e-3, because the toy stages are 10x shorter than the paper's 1000 steps); DMT
stage 2 mixes general data with a fraction k of the domain data.

History (also in README): the first pre-registered default had 60/30/40 steps
(stage 1 / stage 2 / DMT stage); it ran in 4.2 minutes and did not learn the
target task (RTE at chance), so the step counts were scaled to 200/100/80 to use
the 10-minute budget; learning rates and everything else stayed as fixed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from promot_jax import network

HISTORY = (
    "The first pre-registered default had 60/30/40 steps (stage 1 / stage 2 / DMT stage); "
    "it ran in 4.2 minutes and did not learn the target task, so the step counts were scaled "
    "to 200/100/80 to use the 10-minute budget, before this configuration was run; learning "
    "rates and everything else stayed as first fixed. The first run's report is summarised in "
    "README (The mini-lab)."
)
BASE_DIR = Path(__file__).parent / "base_model"  # the shipped pretrained checkpoint
VOCAB_SIZE = 2176  # the toy vocabulary (2100 ids) padded to a multiple of 128


def base_model_config(**overrides) -> network.T5Config:
    """The lab's model: mT5 'tiny' (64-d, 2+2 layers, 4 heads) on the toy vocabulary, float32."""
    return network.mt5_config("tiny", vocab_size=VOCAB_SIZE, dtype="float32", **overrides)


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """How the shipped base model was pretrained (`promot-jax lab pretrain`)."""

    steps: int = 600
    batch_size: int = 16
    inputs_length: int = 256  # 1-shot XSum inputs are up to ~210 tokens
    targets_length: int = 32
    learning_rate: float = 0.01  # T5's pretraining rate for Adafactor
    warmup_steps: int = 50
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class LabSettings:
    """One lab run's size; `quick()` is the CI variant of the same pipeline (one seed, a few
    steps, 4 examples per task, without En-Fr, the RTE ablations and DMT's sequential rows)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    prompt_length: int = 10
    batch_size: int = 16
    stage1_steps: int = 200  # ProMoT stage 1 / prompt tuning (prompt only)
    stage2_steps: int = 100  # ProMoT stage 2 / fine-tuning / joint (trunk)
    prompt_lr: float = 0.2
    model_lr: float = 3e-3
    eval_every: int = 20  # monitor (leak, target, gradient alignment) on seed 0's RTE runs
    monitor_examples: int = 16
    eval_examples: int = 32  # per in-context task and per fine-tuned task
    decode: str = "greedy"
    dmt_steps: int = 80  # per DMT stage (domain or general)
    dmt_ks: tuple[float, ...] = (1.0, 1 / 4, 1 / 16, 1 / 64, 1 / 256)
    dmt_eval_examples: int = 32
    run_enfr: bool = True  # Table 4 analog
    run_ablations: bool = True  # ProMoT + 1-shot, joint, fixed random prompt
    dmt_sequential: bool = True  # general-only and sequential DMT baselines

    @classmethod
    def quick(cls) -> LabSettings:
        return cls(
            seeds=(0,),
            stage1_steps=4,
            stage2_steps=4,
            eval_every=4,
            monitor_examples=4,
            eval_examples=4,
            dmt_steps=3,
            dmt_ks=(1 / 256,),
            dmt_eval_examples=4,
            run_enfr=False,
            run_ablations=False,
            dmt_sequential=False,
        )
