"""What the lab trains and evaluates: experiments (chains of stages) and evaluations.

Every experiment starts from the base model. Names are paths under the lab's run
directory, so a rerun finds (and `run_experiment` reuses) the stages it finished.

- RTE (ProMoT Tables 2, 3, 6): pretrained, standard FT, prompt tuning (= ProMoT
  stage 1), ProMoT, ProMoT + 1-shot, joint, FT with a fixed random prompt.
- En-Fr (Table 4): pretrained, standard FT, ProMoT.
- DMT (DMT Table 1, k sweep): general only, multi-task, sequential, mixed
  sequential, DMT at each k.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from promot_jax import train
from promot_jax.lab import mixtures
from promot_jax.lab.config import LabSettings, base_model_config
from promot_jax.optimizer import OptimizerConfig
from promot_jax.train import PREVIOUS_STAGE

RTE, RTE_1SHOT, EN_FR = "toy_rte", "toy_rte_1shot", "toy_wmt14_en_fr"
# Each stage's rows fit its longest toy example (EOS included) and no more: the step's
# cost grows with the padded length (tests/test_lab_base.py checks nothing is truncated).
LENGTHS = {
    RTE: {"inputs": 48, "targets": 4},
    RTE_1SHOT: {"inputs": 88, "targets": 4},
    EN_FR: {"inputs": 20, "targets": 16},
    "dmt": {"inputs": 64, "targets": 56},
}
BASE = "base"  # an Evaluation's source meaning the pretrained model itself
# The model after the shared domain stage (mixed sequential's and DMT's stage 1).
DOMAIN_STAGE = "domains only (DMT stage 1)"
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


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One model to score: a finished stage (or the base) on a suite or on DMT's tasks."""

    table: str  # "rte", "en_fr", "dmt"
    label: str  # column (equal labels = seeds)
    seed: int
    source: str  # "<experiment>/<stage>" or BASE
    target: str | None  # suite target; None: DMT tasks
    rule: str = "rule"

    @property
    def key(self) -> str:
        return f"{self.table}/{self.label}/s{self.seed}".replace(" ", "_").replace("+", "p")


@dataclasses.dataclass(frozen=True)
class Plan:
    experiments: list[Experiment]
    evaluations: list[Evaluation]


def _stage(
    method: str,
    mixture: str,
    steps: int,
    lr: float,
    lengths: dict,
    s: LabSettings,
    base: Path,
    seed: int,
    *,
    prompt_lr: float | None = None,
    init: str | None = None,
    prompt_file: str | None = None,
    eval_every: int = 0,
) -> train.StageConfig:
    prompt = method != "finetune"
    tunes_model = method != "promot_stage1"
    return train.StageConfig(
        method=method,
        mixture=mixture,
        model=base_model_config(
            prompt_length=s.prompt_length if prompt else 0,
            dropout_rate=s.model_dropout if tunes_model else 0.0,
        ),
        label_smoothing=s.model_label_smoothing if tunes_model else 0.0,
        steps=steps,
        batch_size=s.batch_size,
        feature_lengths=lengths,
        optimizer=OptimizerConfig(learning_rate=lr, prompt_learning_rate=prompt_lr),
        init_checkpoint=init or str(base),
        prompt_file=prompt_file,
        save_every=max(steps, 1),
        keep=1,
        eval_every=eval_every,
        eval_batches=1,
        log_every=max(1, min(10, steps)),
        seed=seed,
        rng_impl=s.rng_impl,
    )


def _rte_model_tuning(method: str, s: LabSettings, base: Path, seed: int, **kw):
    """A stage-2-length model-tuning stage on toy RTE (standard FT, joint, ablations)."""
    return _stage(method, RTE, s.stage2_steps, s.model_lr, LENGTHS[RTE], s, base, seed, **kw)


def _promot(task: str, s: LabSettings, base: Path, seed: int, every: int) -> dict:
    lengths = LENGTHS[task]
    return {
        "stage1": _stage(
            "promot_stage1",
            task,
            s.stage1_steps,
            s.prompt_lr,
            lengths,
            s,
            base,
            seed,
            eval_every=every,
        ),
        "stage2": _stage(
            "promot_stage2",
            task,
            s.stage2_steps,
            s.model_lr,
            lengths,
            s,
            base,
            seed,
            prompt_file=PREVIOUS_STAGE,
            eval_every=every,
        ),
    }


def build_plan(s: LabSettings, base: Path, root: Path) -> Plan:
    """The lab's experiments and evaluations for settings `s` and base checkpoint `base`."""
    exps: list[Experiment] = []
    evals: list[Evaluation] = [
        Evaluation("rte", "pretrained", 0, BASE, RTE, rule="never"),
        Evaluation("en_fr", "pretrained", 0, BASE, EN_FR, rule="never"),
        Evaluation("dmt", "pretrained", 0, BASE, None),
    ]
    for seed in s.seeds:
        monitor = RTE if seed == s.seeds[0] else None
        every = s.eval_every if monitor else 0
        ft = f"rte/finetune/s{seed}"
        exps.append(
            Experiment(
                ft,
                {"ft": _rte_model_tuning("finetune", s, base, seed, eval_every=every)},
                monitor,
            )
        )
        promot = f"rte/promot/s{seed}"
        exps.append(Experiment(promot, _promot(RTE, s, base, seed, every), monitor))
        evals += [
            Evaluation("rte", "standard FT", seed, f"{ft}/ft", RTE, rule="never"),
            Evaluation("rte", "prompt tuning", seed, f"{promot}/stage1", RTE),
            Evaluation("rte", "ProMoT", seed, f"{promot}/stage2", RTE),
        ]
    seed = s.seeds[0]
    if s.run_ablations:
        exps_a, evals_a = _ablations(s, base, seed)
        exps += exps_a
        evals += evals_a
    if s.run_enfr:
        ft, promot = f"en_fr/finetune/s{seed}", f"en_fr/promot/s{seed}"
        exps += [
            Experiment(
                ft,
                {
                    "ft": _stage(
                        "finetune", EN_FR, s.stage2_steps, s.model_lr, LENGTHS[EN_FR], s, base, seed
                    )
                },
            ),
            Experiment(promot, _promot(EN_FR, s, base, seed, 0)),
        ]
        evals += [
            Evaluation("en_fr", "standard FT", seed, f"{ft}/ft", EN_FR, rule="never"),
            Evaluation("en_fr", "prompt tuning", seed, f"{promot}/stage1", EN_FR),
            Evaluation("en_fr", "ProMoT", seed, f"{promot}/stage2", EN_FR),
        ]
    if s.regularization_grid:
        exps_r, evals_r = _regularization_grid(s, base, seed)
        exps += exps_r
        evals += evals_r
    dmt_exps, dmt_evals = _dmt(s, base, seed, root)
    return Plan(exps + dmt_exps, evals + dmt_evals)


def _regularization_grid(s: LabSettings, base: Path, seed: int):
    """Standard FT and ProMoT on toy RTE with each REGULARIZATION_GRID setting of stage 2's
    dropout and label smoothing. ProMoT's stage 1 is the seed's main one, rerun (it has no
    dropout or label smoothing, so the same seed gives the same prompt)."""
    exps, evals = [], []
    for dropout, smoothing in REGULARIZATION_GRID:
        v = dataclasses.replace(s, model_dropout=dropout, model_label_smoothing=smoothing)
        name = f"rte/regularization/d{dropout}_ls{smoothing}/s{seed}"
        exps += [
            Experiment(f"{name}/ft", {"ft": _rte_model_tuning("finetune", v, base, seed)}),
            Experiment(f"{name}/promot", _promot(RTE, v, base, seed, s.eval_every)),
        ]
        evals += [
            Evaluation(
                "regularization",
                regularization_label("standard FT", dropout, smoothing),
                seed,
                f"{name}/ft/ft",
                RTE,
                rule="never",
            ),
            Evaluation(
                "regularization",
                regularization_label("ProMoT", dropout, smoothing),
                seed,
                f"{name}/promot/stage2",
                RTE,
            ),
        ]
    return exps, evals


def _ablations(s: LabSettings, base: Path, seed: int):
    """ProMoT + 1-shot [P Table 3] and the Table 6 ablations: joint (and, when asked for,
    FT with a fixed random prompt)."""
    one = f"rte/promot_1shot/s{seed}"
    joint = f"rte/joint/s{seed}"
    rand = f"rte/fixed_random_prompt/s{seed}"
    exps = [
        Experiment(one, _promot(RTE_1SHOT, s, base, seed, 0)),
        Experiment(
            joint,
            {"joint": _rte_model_tuning("joint", s, base, seed, prompt_lr=s.prompt_lr)},
        ),
    ]
    evals = [
        Evaluation("rte", "ProMoT + 1-shot", seed, f"{one}/stage2", RTE_1SHOT),
        Evaluation("rte", "joint", seed, f"{joint}/joint", RTE),
    ]
    if s.fixed_random_prompt:
        exps.append(
            Experiment(
                rand,
                {"ft": _rte_model_tuning("finetune_fixed_random_prompt", s, base, seed)},
            )
        )
        evals.append(Evaluation("rte", "FT + fixed random prompt", seed, f"{rand}/ft", RTE))
    return exps, evals


def _dmt(s: LabSettings, base: Path, seed: int, root: Path):
    """DMT Table 1 analogs; every DMT run shares the mixed-sequential domain stage."""

    def stage(mixture: str, steps: int | None = None, init: str | None = None):
        return _stage(
            "finetune",
            mixture,
            steps or s.dmt_steps,
            s.model_lr,
            LENGTHS["dmt"],
            s,
            base,
            seed,
            init=init,
        )

    domain_stage = f"dmt/mixed_sequential/s{seed}/domain"
    domain_params = str(root / domain_stage / "final_params")
    exps, evals = [], []
    if s.dmt_sequential:
        exps += [
            Experiment(f"dmt/general_only/s{seed}", {"general": stage("toy_general")}),
            Experiment(
                f"dmt/sequential/s{seed}",
                {
                    "code": stage("toy_code"),
                    "math": stage("toy_math", init=PREVIOUS_STAGE),
                    "general": stage("toy_general", init=PREVIOUS_STAGE),
                },
            ),
        ]
        evals += [
            Evaluation("dmt", "general only", seed, f"dmt/general_only/s{seed}/general", None),
            Evaluation("dmt", "sequential", seed, f"dmt/sequential/s{seed}/general", None),
        ]
    exps += [
        Experiment(
            f"dmt/multitask/s{seed}",
            {"all": stage(mixtures.dmt_multitask_mixture(), steps=2 * s.dmt_steps)},
        ),
        Experiment(
            f"dmt/mixed_sequential/s{seed}",
            {
                "domain": stage("toy_dmt_stage1"),
                "general": stage("toy_general", init=PREVIOUS_STAGE),
            },
        ),
    ]
    evals += [
        Evaluation("dmt", "multi-task", seed, f"dmt/multitask/s{seed}/all", None),
        Evaluation("dmt", DOMAIN_STAGE, seed, domain_stage, None),
        Evaluation("dmt", "mixed sequential", seed, f"dmt/mixed_sequential/s{seed}/general", None),
    ]
    for k in s.dmt_ks:
        name = f"dmt/k{round(1 / k)}/s{seed}"
        exps.append(
            Experiment(
                name, {"general_k": stage(mixtures.dmt_stage2_mixture(k), init=domain_params)}
            )
        )
        evals.append(
            Evaluation("dmt", f"DMT k={mixtures.k_label(k)}", seed, f"{name}/general_k", None)
        )
    return exps, evals
