"""What the lab trains and scores: experiments (chains of stages) and rows (models to score).

Every experiment starts from the base model. Names are paths under the lab's run
directory, so a rerun finds (and `run_experiment` reuses) the stages it finished. A `Row`
carries its table, label and seed from here to the report, which reads them instead of
matching strings.

- main (the primary target, a new format; every seed): pretrained, standard FT, prompt
  tuning (= ProMoT stage 1, also control C3), ProMoT, and the mechanism row: ProMoT's
  trunk on the target with the prompt removed.
- controls (first seed): C1 the model-tuning recipe on the pretraining mixture, C2 narrow
  FT on an in-format task (toy CB), C4 FT on the target with shuffled labels.
- ablations (first seed): ProMoT + 1-shot, joint prompt+model tuning (and FT with a fixed
  random prompt when asked for).
- variants (every seed, `--variants`): ProMoT with LoRA adapters in stage 1, stage 2 with the
  prompt trainable, and ProMoT at other prompt lengths (issue 19; docs/lab_design.md).
- secondary (first seed): toy RTE, whose format is not new.
- en_fr (Table 4; first seed): pretrained, standard FT, prompt tuning, ProMoT.

DMT is not planned here: it is its own lab, `promot-jax lab dmt` (`promot_jax.lab.dmt`).
"""

from __future__ import annotations

import dataclasses
import re

from promot_jax import methods, train
from promot_jax.lab import mixtures
from promot_jax.lab.config import (
    IN_FORMAT_TARGET,
    PRIMARY_TARGET,
    SECONDARY_TARGET,
    SHUFFLED_TARGET,
    LabBase,
    LabSettings,
    PretrainSettings,
)
from promot_jax.optimizer import OptimizerConfig
from promot_jax.train import PREVIOUS_STAGE

EN_FR = "toy_wmt14_en_fr"
# Each stage's rows fit its longest toy example (EOS included) and no more: the step's
# cost grows with the padded length (tests/test_lab_base.py checks nothing is truncated).
LENGTHS = {
    PRIMARY_TARGET: {"inputs": 49, "targets": 4},  # = its shuffled control's: one compile
    f"{PRIMARY_TARGET}_1shot": {"inputs": 96, "targets": 4},
    SHUFFLED_TARGET: {"inputs": 49, "targets": 4},
    IN_FORMAT_TARGET: {"inputs": 56, "targets": 4},
    SECONDARY_TARGET: {"inputs": 48, "targets": 4},
    EN_FR: {"inputs": 20, "targets": 16},
}
BASE = "base"  # a Row's source meaning the pretrained model itself

# Tables and labels: the report reads these names, never strings of its own.
MAIN, CONTROLS, ABLATIONS, VARIANTS, SECONDARY, EN_FR_TABLE, REGULARIZATION = (
    "main",
    "controls",
    "ablations",
    "variants",
    "secondary",
    "en_fr",
    "regularization",
)
PRETRAINED, FT, PT, PROMOT, MECHANISM = (
    "pretrained",
    "standard FT",
    "prompt tuning",
    "ProMoT",
    "ProMoT trunk, prompt removed",
)
C1, C2, C4 = (
    "C1: model-tuning recipe on the pretraining mixture",
    "C2: narrow FT on an in-format task (toy CB)",
    "C4: FT on the target with shuffled labels",
)
PROMOT_1SHOT, JOINT, FIXED_RANDOM = "ProMoT + 1-shot", "joint", "FT + fixed random prompt"
LORA_STAGE1, PROMOT_LORA, LORA_MECHANISM = (
    "LoRA stage 1",
    "ProMoT-LoRA",
    "ProMoT-LoRA trunk, adapters removed",
)
PROMPT_TRAINABLE, PROMPT_TRAINABLE_MECHANISM = (
    "ProMoT, prompt trainable in stage 2",
    "ProMoT prompt-trainable trunk, prompt removed",
)


def prompt_length_label(method: str, length: int) -> str:
    """The label of a prompt-length variant, e.g. "ProMoT, P = 10"."""
    return f"{method}, P = {length}"


# Stage 2's (dropout, label smoothing) that LabSettings.regularization_grid adds; the lab's
# own (model_dropout, model_label_smoothing) is the seed's main run.
REGULARIZATION_GRID = ((0.0, 0.1), (0.1, 0.0), (0.0, 0.0))


def regularization_label(method: str, dropout: float, label_smoothing: float) -> str:
    """The label of a regularization-grid run, e.g. "ProMoT, dropout 0.0, LS 0.1"."""
    return f"{method}, dropout {dropout}, LS {label_smoothing}"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A chain of stages run by `experiment.run_experiment` in `<lab>/<name>`."""

    name: str
    stages: dict[str, train.StageConfig]
    monitor_target: str | None = None  # training monitor (leak, target, alignment) on every stage
    label: str | None = None  # the row label its curves are drawn under (monitored runs)


@dataclasses.dataclass(frozen=True)
class Row:
    """One model to score, and where it goes in the report.

    `target`: the fine-tuned task. `suite=False` scores the target only (prompt tuning's
    suite is the base's: the prompt is removed there and the trunk is frozen; the mechanism
    row asks only about the target).
    """

    table: str
    label: str
    seed: int
    source: str  # "<experiment>/<stage>" or BASE
    target: str
    rule: str = "same_format"
    suite: bool = True

    @property
    def key(self) -> str:
        """`<table>/<label as a file name>/s<seed>`, e.g. "main/ProMoT_1shot/s10"."""
        name = re.sub(r"[^A-Za-z0-9]+", "_", self.label.split(":")[0]).strip("_")
        return f"{self.table}/{name}/s{self.seed}"


@dataclasses.dataclass(frozen=True)
class Plan:
    experiments: list[Experiment]
    rows: list[Row]
    base: LabBase

    def rows_of(self, table: str, label: str | None = None) -> list[Row]:
        return [r for r in self.rows if r.table == table and label in (None, r.label)]


def _stage(
    method: str,
    mixture: str,
    steps: int,
    lr: float,
    lengths: dict,
    settings: LabSettings,
    base: LabBase,
    seed: int,
    *,
    prompt_lr: float | None = None,
    init: str | None = None,
    prompt_file: str | None = None,
    eval_every: int = 0,
    pack: bool = False,
) -> train.StageConfig:
    m = methods.get_method(method)
    return train.StageConfig(
        method=method,
        mixture=mixture,
        model=base.config(
            prompt_length=settings.prompt_length if m.has_prompt else 0,
            dropout_rate=settings.model_dropout if m.trains_trunk else 0.0,
            lora_rank=settings.lora_rank if m.has_lora else 0,
        ),
        label_smoothing=settings.model_label_smoothing if m.trains_trunk else 0.0,
        steps=steps,
        batch_size=settings.batch_size,
        feature_lengths=lengths,
        optimizer=OptimizerConfig(
            learning_rate=lr, prompt_learning_rate=prompt_lr, lora_learning_rate=settings.lora_lr
        ),
        init_checkpoint=init or str(base.path),
        prompt_file=prompt_file,
        adapter_file=PREVIOUS_STAGE if m.lora_source == PREVIOUS_STAGE else None,
        save_every=max(steps, 1),
        keep=1,
        eval_every=eval_every,
        eval_batches=1,
        log_every=max(1, min(10, steps)),
        seed=seed,
        rng_impl=settings.rng_impl,
        pack=pack,
    )


def _model_tuning(method: str, task: str, settings: LabSettings, base: LabBase, seed: int, **kw):
    """A stage-2-length model-tuning stage (standard FT, joint, controls) on `task`."""
    lengths = kw.pop("lengths", None) or LENGTHS[task]
    return _stage(
        method, task, settings.stage2_steps, settings.model_lr, lengths, settings, base, seed, **kw
    )


def _promot(
    task: str,
    settings: LabSettings,
    base: LabBase,
    seed: int,
    every: int,
    methods_: tuple[str, str] = ("promot_stage1", "promot_stage2"),
) -> dict:
    """ProMoT's two stages on `task` (or another stage-1 / stage-2 method pair)."""
    lengths, (first, second) = LENGTHS[task], methods_
    takes = methods.get_method(second)
    return {
        "stage1": _stage(
            first, task, settings.stage1_steps, settings.prompt_lr, lengths, settings, base,
            seed, eval_every=every,
        ),
        "stage2": _stage(
            second, task, settings.stage2_steps, settings.model_lr, lengths, settings, base,
            seed, prompt_file=PREVIOUS_STAGE if takes.prompt_source == PREVIOUS_STAGE else None,
            prompt_lr=settings.prompt_lr if takes.trains_prompt else None,
            eval_every=every,
        ),
    }  # fmt: skip


def _target_rows(
    table: str, task: str, settings: LabSettings, base: LabBase, seed: int, every: int
):
    """Standard FT, prompt tuning and ProMoT on `task` for one seed."""
    ft, promot = f"{table}/finetune/s{seed}", f"{table}/promot/s{seed}"
    monitor = task if every else None
    exps = [
        Experiment(
            ft,
            {"ft": _model_tuning("finetune", task, settings, base, seed, eval_every=every)},
            monitor,
            FT,
        ),
        Experiment(promot, _promot(task, settings, base, seed, every), monitor, PROMOT),
    ]
    rows = [
        Row(table, FT, seed, f"{ft}/ft", task, rule="never"),
        Row(table, PT, seed, f"{promot}/stage1", task, suite=False),
        Row(table, PROMOT, seed, f"{promot}/stage2", task),
    ]
    return exps, rows


def build_plan(settings: LabSettings, base: LabBase) -> Plan:
    """The lab's experiments and rows for `settings` and base checkpoint `base`."""
    exps: list[Experiment] = []
    rows: list[Row] = [Row(MAIN, PRETRAINED, 0, BASE, PRIMARY_TARGET, rule="never")]
    first = settings.seeds[0]
    for seed in settings.seeds:
        every = settings.eval_every if seed == first else 0
        e, r = _target_rows(MAIN, PRIMARY_TARGET, settings, base, seed, every)
        exps += e
        rows += r
        rows.append(
            Row(MAIN, MECHANISM, seed, f"main/promot/s{seed}/stage2", PRIMARY_TARGET,
                rule="never", suite=False)
        )  # fmt: skip
    if settings.controls:
        e, r = _controls(settings, base, first)
        exps += e
        rows += r
    if settings.run_ablations:
        e, r = _ablations(settings, base, first)
        exps += e
        rows += r
    if settings.run_variants:
        for seed in settings.seeds:
            e, r = _variants(settings, base, seed)
            exps += e
            rows += r
    if settings.secondary:
        e, r = _target_rows(SECONDARY, SECONDARY_TARGET, settings, base, first, 0)
        exps += e
        rows += [Row(SECONDARY, PRETRAINED, 0, BASE, SECONDARY_TARGET, rule="never"), *r]
    if settings.run_enfr:
        e, r = _target_rows(EN_FR_TABLE, EN_FR, settings, base, first, 0)
        exps += e
        rows += [Row(EN_FR_TABLE, PRETRAINED, 0, BASE, EN_FR, rule="never"), *r]
    if settings.regularization_grid:
        e, r = _regularization_grid(settings, base, first)
        exps += e
        rows += r
    return Plan(exps, rows, base)


def _controls(settings: LabSettings, base: LabBase, seed: int):
    """C1, C2 and C4 (C3, prompt tuning alone, is a main row): the same model-tuning recipe
    as standard FT, on other data, scored on the primary target and the suite."""
    p = PretrainSettings()
    pretrain_lengths = {"inputs": p.inputs_length, "targets": p.targets_length}
    specs = [
        (C2, "in_format", IN_FORMAT_TARGET, LENGTHS[IN_FORMAT_TARGET], False),
        (C4, "shuffled_labels", SHUFFLED_TARGET, LENGTHS[SHUFFLED_TARGET], False),
    ]
    if settings.control_c1:
        pretrain = mixtures.register_lab_pretrain()
        specs.insert(0, (C1, "pretraining_mixture", pretrain, pretrain_lengths, True))
    exps, rows = [], []
    for label, name, mixture, lengths, pack in specs:
        path = f"controls/{name}/s{seed}"
        stage = _model_tuning("finetune", mixture, settings, base, seed, lengths=lengths, pack=pack)
        exps.append(Experiment(path, {"ft": stage}))
        rows.append(Row(CONTROLS, label, seed, f"{path}/ft", PRIMARY_TARGET, rule="never"))
    return exps, rows


def _regularization_grid(settings: LabSettings, base: LabBase, seed: int):
    """Standard FT and ProMoT on the primary target with each REGULARIZATION_GRID setting of
    stage 2's dropout and label smoothing. ProMoT's stage 1 is the seed's main one, rerun
    (it has no dropout or label smoothing, so the same seed gives the same prompt)."""
    exps, rows = [], []
    for dropout, smoothing in REGULARIZATION_GRID:
        v = dataclasses.replace(settings, model_dropout=dropout, model_label_smoothing=smoothing)
        name = f"regularization/d{dropout}_ls{smoothing}/s{seed}"
        exps += [
            Experiment(
                f"{name}/ft", {"ft": _model_tuning("finetune", PRIMARY_TARGET, v, base, seed)}
            ),
            Experiment(f"{name}/promot", _promot(PRIMARY_TARGET, v, base, seed, 0)),
        ]
        rows += [
            Row(REGULARIZATION, regularization_label(FT, dropout, smoothing), seed,
                f"{name}/ft/ft", PRIMARY_TARGET, rule="never"),
            Row(REGULARIZATION, regularization_label(PROMOT, dropout, smoothing), seed,
                f"{name}/promot/stage2", PRIMARY_TARGET),
        ]  # fmt: skip
    return exps, rows


def _ablations(settings: LabSettings, base: LabBase, seed: int):
    """ProMoT + 1-shot [P Table 3] and the Table 6 ablations: joint (and, when asked for,
    FT with a fixed random prompt), on the primary target."""
    one, joint = f"ablations/promot_1shot/s{seed}", f"ablations/joint/s{seed}"
    one_shot = f"{PRIMARY_TARGET}_1shot"
    exps = [
        Experiment(one, _promot(one_shot, settings, base, seed, 0)),
        Experiment(
            joint,
            {
                "joint": _model_tuning(
                    "joint", PRIMARY_TARGET, settings, base, seed, prompt_lr=settings.prompt_lr
                )
            },
        ),
    ]
    rows = [
        Row(ABLATIONS, PROMOT_1SHOT, seed, f"{one}/stage2", one_shot),
        Row(ABLATIONS, JOINT, seed, f"{joint}/joint", PRIMARY_TARGET),
    ]
    if settings.fixed_random_prompt:
        rand = f"ablations/fixed_random_prompt/s{seed}"
        stage = _model_tuning("finetune_fixed_random_prompt", PRIMARY_TARGET, settings, base, seed)
        exps.append(Experiment(rand, {"ft": stage}))
        rows.append(Row(ABLATIONS, FIXED_RANDOM, seed, f"{rand}/ft", PRIMARY_TARGET))
    return exps, rows


def _variants(settings: LabSettings, base: LabBase, seed: int):
    """Issue 19's rows for one seed (docs/lab_design.md, "Variants"): LoRA adapters in
    stage 1 instead of the prompt; stage 2 with the prompt still training (at its own LR)
    from a stage 1 equal to the seed's main one (rerun: it has no dropout, so the same seed
    gives the same prompt); ProMoT at other prompt lengths."""
    task = PRIMARY_TARGET
    lora, trainable = f"variants/lora/s{seed}", f"variants/prompt_trainable/s{seed}"
    pair = (
        ("lora_stage1", "promot_lora_stage2"),
        ("promot_stage1", "promot_stage2_prompt_trainable"),
    )
    exps = [
        Experiment(lora, _promot(task, settings, base, seed, 0, pair[0])),
        Experiment(trainable, _promot(task, settings, base, seed, 0, pair[1])),
    ]
    rows = [
        Row(VARIANTS, LORA_STAGE1, seed, f"{lora}/stage1", task, suite=False),
        Row(VARIANTS, PROMOT_LORA, seed, f"{lora}/stage2", task),
        Row(VARIANTS, LORA_MECHANISM, seed, f"{lora}/stage2", task, rule="never", suite=False),
        Row(VARIANTS, PROMPT_TRAINABLE, seed, f"{trainable}/stage2", task),
        Row(VARIANTS, PROMPT_TRAINABLE_MECHANISM, seed, f"{trainable}/stage2", task,
            rule="never", suite=False),
    ]  # fmt: skip
    for length in settings.variant_prompt_lengths:
        name = f"variants/promot_p{length}/s{seed}"
        v = dataclasses.replace(settings, prompt_length=length, variant_prompt_lengths=())
        exps.append(Experiment(name, _promot(task, v, base, seed, 0)))
        rows += [
            Row(VARIANTS, prompt_length_label(PT, length), seed, f"{name}/stage1", task,
                suite=False),
            Row(VARIANTS, prompt_length_label(PROMOT, length), seed, f"{name}/stage2", task),
        ]  # fmt: skip
    return exps, rows
