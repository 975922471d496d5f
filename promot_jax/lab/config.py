"""The lab's fixed design: model size, stage lengths, learning rates, seeds, eval sizes.

Ratios follow the papers, scaled to a 128-d model on 2 CPU cores: ProMoT stage 1
(prompt, Adafactor LR 0.2) runs longer than stage 2 (trunk, LR 1e-3 in the paper;
here 6e-3, so that steps x LR stays near the paper's 1000 x 1e-3), and
every model-tuning stage uses the paper's stage-2 dropout and label smoothing (0.1);
DMT stage 2 mixes general data with a fraction k of the domain data. The paper's
values (prompt LR, model-tuning dropout and label smoothing) are read from its recipe
(`promot_jax.recipe`, gin/recipe/paper.gin), the file both runners' gin files read.
One known departure: the lab's prompt-only stages run without dropout (lab/plan.py),
where the recipe's prompt tuning now has 0.1 (prompt-tuning's effective setting); every
lab run so far was made that way, so following the recipe there is a change of design
(and a rerun), not of bookkeeping. The settings were fixed before the run the report
comes from; HISTORY says how they got here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from promot_jax import network, recipe

HISTORY = (
    "Runs 1 and 2 used a 64-d 2+2-layer base (600 unpacked pretraining steps) with stage 1 / "
    "stage 2 / DMT steps 60/30/40, then 200/100/80, no dropout or label smoothing: the base was"
    " at chance on the classification tasks and weak elsewhere, the target was not learned, "
    "standard FT leaked 47%. Run 3 was fixed after two probes with the new base (128-d 3+3 "
    "layers, 1500 packed pretraining steps): with run 2's stage settings standard FT leaked "
    "nothing (0% True/False outputs, suite unchanged), because 100 steps without dropout barely"
    " move a base trained on the suite's formats; 300 steps with the paper's stage-2 dropout "
    "and label smoothing (0.1) leaked 68% on seed 0. Stage 2 was set to those 300 steps and "
    "stage 1 to 400 (as in the probe); the FT-with-fixed-random-prompt ablation and two k "
    "values left the default, and DMT stages went to 50 steps. Run 3 (3 seeds; a first start "
    "with stage 1 = 300 was stopped after one stage, stage 1 must be longer than stage 2) gave "
    "Norm. Avg. pretrained 59.5, FT 34.0 / 34.7 / 51.9 (seeds 0-2), ProMoT 49.8 / 48.4 / 53.3; "
    "leak 16.0%, FT 67.6 / 68.4 / 51.2%, ProMoT 51.2 / 54.3 / 46.9%; toy RTE at chance for "
    "every method; but it ran past 17 minutes before En-Fr and DMT. Run 4 halved every stage "
    "(stage 1 / stage 2 / DMT 200/150/30 steps) and doubled the model LR to 6e-3, keeping steps"
    " x LR (0.9) near the paper's 1000 x 1e-3, to fit the 10-minute budget (10.5-11.2 min). Run"
    " 5 (the current design) keeps run 4's stages and changes only how fast it runs: rows "
    "padded to the longest toy example instead of round lengths, and dropout masks from XLA's "
    "generator (unsafe_rbg) instead of threefry; both change the random draws (dropout masks "
    "depend on shapes and generator), not the method. Two full runs with only the padding "
    "change (threefry) gave identical tables: Norm. Avg. FT 37.8 +- 9.4, ProMoT 49.6 +- 3.8, "
    "leak 64.5% / 52.1%, probe leak max 71.9%; the generator was switched after them, before "
    "run 5 was started. A 3000-step base (pretraining continued from step 1500) was tried and "
    "not adopted: CB 40.6 / WiC 53.1 / TriviaQA 9.4 stayed near chance while its validation "
    "loss rose (0.79 -> 0.82). Four bases on changed toy worlds were then tried to give the base "
    "the skill the target needs (is the claim's value the premise's?); none was adopted. Probes "
    "(FT from the shipped base, no dropout, LR 6e-3, 200 validation examples): the label is a "
    "parity of two cues (value in the premise? negated?), but making negations a quarter of the "
    "claims did not help (53.0% after 300 steps, 52.0% unchanged); without negations, and with "
    "the premise restating the fact base, the model memorises the 2000 training records (train "
    "loss 0.05, validation 66.5% after 1000 steps); with a made-up person per premise, no "
    "negations and 20000 distinct training records it learns the rule, but only past 150 steps "
    "(51.5 / 68.0 / 81.0% at 150 / 300 / 600 steps). Bases pretrained 1500 steps on worlds with "
    "those changes (made-up people with negations a quarter; without negations; without "
    "negations and 20000 records per entailment task; the last with CB's pretraining rate x4) "
    "stayed at chance on telling True from False claims (CB 53.0 / 47.5 / 35.0 / 65.5% on 200 "
    "examples, the gains from 'Neither' alone) and on toy RTE after 150 FT steps (51.5 / 55.5 / "
    "55.5 / 51.0%). Run 6 changed the toy world, for what the base can "
    "learn, and nothing else: an entailment claim's label is no longer a parity of two cues (a "
    "negated claim restates the premise's value and is False; an affirmative claim is True "
    "exactly when its value is the premise's); WiC's two senses are told by the class of the "
    "nearby noun, the same two classes for every word (before: a random split of nouns per "
    "word); the corpus states each person's facts in three paragraphs (statements, "
    "paraphrases, a mix) instead of one. Probes from run 5's base (150 FT steps, no dropout, "
    "200 validation examples): toy CB 72.0%, WiC 66.0%, RTE 74.0% (run 5's RTE: 52%). The "
    "new base (same settings, 997 s, vocabulary rebuilt), 1-shot on 200 validation examples: "
    "CB 49.5, WiC 50.5, TriviaQA 7.5, web_q 12.0, RTE 0-shot 57.5. Run 6's lab learned the "
    "target's learnable part (75%: the 'not' cue; no method compares values) and ProMoT did not "
    "protect the suite: Norm. Avg. FT 28.1 +- 4.3, ProMoT 24.1 +- 5.4 (pretrained 65.7), leak "
    "58.5% / 60.9%. Run 7 draws CB and WiC three times as often in "
    "pretraining (PretrainSettings.classification_rate), adopted on the new base's own scores "
    "before its lab was run (950 s; 200 examples: CB 80.0, WiC 47.5, TriviaQA 7.5, web_q "
    "10.5); its lab: Norm. Avg. pretrained 63.7, FT 18.7 +- 2.3, ProMoT 23.0 +- 6.1, leak 74.7% "
    "/ 65.2%, target 75.0 / 74.0%. Run 8 (the current design) pretrains 3000 steps instead of "
    "1500 (run 7's base resumed to 3000, 1017 s more), adopted on the base's own scores before "
    "its lab was run: on 200 examples CB 81.0, WiC 100.0, TriviaQA 22.0, web_q 19.0; eval loss "
    "0.82 -> 0.70 (the 3000-step base of run 5's world had not improved). Run 5's world, "
    "whose target was never learned, had ProMoT well above FT (Norm. "
    "Avg. 51.3 +- 1.5 vs 36.7 +- 3.8); the world was changed for the base's sake, and is kept "
    "whatever the comparison shows. Run 9 changes no setting: the base was reproduced bit for "
    "bit by an uninterrupted 3000-step pretraining, and the report scores the DMT rows "
    "teacher-forced too (token accuracy of the reference answers; decoded scores were at the "
    "floor) and adds the domain stage as a row; its RTE and En-Fr tables equal run 8's. An "
    "opt-in sensitivity grid (regularization_grid; seed 0, single runs) reran FT and ProMoT "
    "stage 2 with dropout / label smoothing off: Norm. Avg. FT / ProMoT 21.9 / 31.6 (0.1 / "
    "0.1, the design), 57.8 / 70.6 (0.0 / 0.1), 22.1 / 25.6 (0.1 / 0.0), 19.7 / 30.4 (0.0 / "
    "0.0); the design keeps the paper's 0.1 / 0.1, chosen before these were seen."
)
BASE_DIR = Path(__file__).parent / "base_model"  # the shipped pretrained checkpoint
VOCAB_SIZE = 2176  # the toy vocabulary (2100 ids) padded to a multiple of 128


# The lab's model: mT5's architecture at 128-d, 3+3 layers, 4 heads of 32, MLP 512 (2.3M
# parameters, 9 MB in float32). The 64-d 2+2-layer 'tiny' stayed at chance on the toy suite.
LAB_MODEL = dict(
    emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512, num_encoder_layers=3, num_decoder_layers=3
)


def base_model_config(**overrides) -> network.T5Config:
    """The lab's model (LAB_MODEL) on the toy vocabulary, float32."""
    fields = {**LAB_MODEL, **overrides}
    return network.mt5_config("tiny", vocab_size=VOCAB_SIZE, dtype="float32", **fields)


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """How the shipped base model was pretrained (`promot-jax lab pretrain`)."""

    steps: int = 3000
    batch_size: int = 16
    inputs_length: int = 256  # 1-shot XSum inputs are up to ~210 tokens
    targets_length: int = 32
    pack: bool = True  # several examples per row (T5's pretraining packs too)
    learning_rate: float = 0.02  # twice T5's 0.01: the run is ~1000x shorter
    warmup_steps: int = 50
    span_corruption_share: float = 0.2  # the rest: the in-context tasks' 0/1-shot data
    classification_rate: float = 3.0  # CB's and WiC's rate, relative to the other tasks'
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class LabSettings:
    """One lab run's size; `quick()` is the CI variant of the same pipeline (one seed, a few
    steps, 4 examples per task, without En-Fr, the RTE ablations and DMT's sequential rows)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    prompt_length: int = 10
    batch_size: int = 16
    stage1_steps: int = 200  # ProMoT stage 1 / prompt tuning (prompt only)
    stage2_steps: int = 150  # ProMoT stage 2 / fine-tuning / joint (trunk)
    prompt_lr: float = recipe.TUNE_PROMPT.learning_rate  # the paper's 0.2
    model_lr: float = 6e-3  # steps x LR = 0.9, the paper's 1000 x 1e-3 = 1.0
    model_dropout: float = recipe.TUNE_MODEL.dropout  # the paper's stage 2: 0.1
    model_label_smoothing: float = recipe.TUNE_MODEL.label_smoothing  # stage 2: 0.1
    rng_impl: str = "unsafe_rbg"  # dropout masks from XLA's generator (T5X's choice too):
    # model-tuning steps ~20% faster on CPU than with threefry, same seed -> same run
    eval_every: int = 50  # monitor (leak, target, gradient alignment) on seed 0's RTE runs
    monitor_examples: int = 16
    eval_examples: int = 32  # per in-context task and per fine-tuned task
    decode: str = "greedy"
    dmt_steps: int = 30  # per DMT stage (domain or general)
    dmt_ks: tuple[float, ...] = (1.0, 1 / 16, 1 / 256)
    dmt_eval_examples: int = 32
    run_enfr: bool = True  # Table 4 analog
    run_ablations: bool = True  # ProMoT + 1-shot, joint
    fixed_random_prompt: bool = False  # FT with a fixed random prompt (Table 6; +1 minute)
    dmt_sequential: bool = True  # general-only and sequential DMT baselines
    regularization_grid: bool = False  # seed 0's FT and ProMoT stage 2 again with stage 2's
    # dropout and/or label smoothing off (a sensitivity check, not the design; +3 minutes)

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
