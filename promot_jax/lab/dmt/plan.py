"""What the DMT lab trains and scores (docs/dmt_lab_design.md "Experiments").

- F1 scaling: each domain alone at every data fraction (first seed).
- F2 mixing: the three domains together, each pool at the fraction (first seed).
- F3 ratio: general at 1 with the domain data (math + code) at each fraction; the domain
  data at 1 with general at each fraction; general at the second fraction with the domain
  data at each fraction, so equal absolute domain amounts meet two general amounts.
- T1 strategies (every seed): general only; multi-task; sequential (code -> math ->
  general); mixed sequential (domains, then general); DMT at k = 1/256. Every strategy
  trains the same number of general-data steps G: multi-task and DMT's stage 2 run G x
  (their examples / general's examples) steps.
- K sweep (every seed): DMT stage 2 at each k from the seed's mixed-sequential domain stage.

Every stage starts from the base (or the stage before it) and takes `settings.steps` of
its data (the compute rule), except the general-matched ones above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from promot_jax import train
from promot_jax.lab.config import LabBase
from promot_jax.lab.dmt import data
from promot_jax.lab.dmt.config import (
    CODE,
    DMT_K,
    DOMAINS,
    GENERAL,
    MATH,
    SPECIALISED,
    DmtSettings,
    fraction_label,
)
from promot_jax.lab.plan import Experiment, Plan  # Plan: experiments, rows (ours), base
from promot_jax.optimizer import OptimizerConfig
from promot_jax.train import PREVIOUS_STAGE

# Every DMT lab stage shares one shape: the longest tokenized example of the pools at the
# lab's difficulty, EOS included (tests/test_lab_dmt.py checks nothing is truncated).
LENGTHS = {"inputs": 40, "targets": 25}

SCALING, MIXED, RATIO, STRATEGIES, K_SWEEP = "F1", "F2", "F3", "T1", "K"
BASE = "base"
GENERAL_ONLY, MULTITASK, SEQUENTIAL, MIXED_SEQUENTIAL = (
    "general only",
    "multi-task",
    "sequential",
    "mixed sequential",
)
DOMAIN_STAGE = "domains only (DMT stage 1)"


def dmt_label(k: float) -> str:
    return f"DMT k={fraction_label(k)}"


@dataclasses.dataclass(frozen=True)
class Row:
    """One model to score. `point` places it on its curve: {"domain", "fraction"} (F1),
    {"fraction"} (F2), {"general", "domain"} fractions (F3), {"k"} (K)."""

    table: str
    label: str
    seed: int
    source: str | None  # "<experiment>/<stage>" under the lab directory; None: the base
    point: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        name = "".join(c if c.isalnum() else "_" for c in self.label).strip("_")
        return f"{self.table}/{name}/s{self.seed}"


class _Stages:
    """Makes the lab's stages: a data mix, its steps, a seed, where it starts."""

    def __init__(self, settings: DmtSettings, base: LabBase):
        self.s, self.base = settings, base
        self.world = (
            settings.pools,
            settings.eval_examples,
            settings.difficulty,
            settings.pool_seed,
        )

    def amounts(self, **fractions: float) -> dict[str, int]:
        """{domain: examples} for each domain's fraction of its pool."""
        return {d: int(self.s.pools[d] * f) for d, f in fractions.items()}

    def __call__(self, amounts: Mapping[str, int], seed: int, steps: int | None = None, init=None):
        s = self.s
        return train.StageConfig(
            method="finetune",
            mixture=data.mixture(amounts, *self.world),
            model=self.base.config(dropout_rate=s.dropout, dtype=s.dtype),
            steps=steps if steps is not None else s.steps(sum(amounts.values())),
            batch_size=s.batch_size,
            feature_lengths=LENGTHS,
            optimizer=OptimizerConfig(learning_rate=s.learning_rate),
            label_smoothing=s.label_smoothing,
            init_checkpoint=init or str(self.base.path),
            save_every=10**9,  # final only: stages are short and resume from the start
            keep=1,
            eval_every=0,
            eval_batches=1,
            log_every=50,
            seed=seed,
            rng_impl=s.rng_impl,
            pack=True,  # prompt-free: more examples per step at the same step cost
        )


def _den(f: float) -> str:
    return fraction_label(f).replace("/", "_")


def _single(name: str, stage) -> Experiment:
    return Experiment(name, {"train": stage})


def build_plan(settings: DmtSettings, base: LabBase, out: str | Path) -> Plan:
    out = Path(out)
    stage = _Stages(settings, base)
    s, first = settings, settings.seeds[0]
    exps: list[Experiment] = []
    rows: list[Row] = [Row(BASE, "pretrained", 0, None)]

    def add(table: str, label: str, seed: int, name: str, stage_config, **point) -> None:
        exps.append(_single(name, stage_config))
        rows.append(Row(table, label, seed, f"{name}/train", point))

    for domain in DOMAINS:  # F1
        for f in s.fractions:
            add(SCALING, f"{domain} f={fraction_label(f)}", first, f"scaling/{domain}/f{_den(f)}",
                stage(stage.amounts(**{domain: f}), first), domain=domain, fraction=f)  # fmt: skip
    for f in s.fractions:  # F2
        add(MIXED, f"mixed f={fraction_label(f)}", first, f"mixed/f{_den(f)}",
            stage(stage.amounts(**dict.fromkeys(DOMAINS, f)), first), fraction=f)  # fmt: skip
    low = s.fractions[1] if len(s.fractions) > 1 else s.fractions[0]
    for g in dict.fromkeys((1.0, low)):  # F3: general fixed, domain varied (g = 1 at d = 1 is F2's)
        for d in s.fractions:
            if g == d == 1.0:
                continue
            label = f"general {fraction_label(g)} + domain {fraction_label(d)}"
            amounts = stage.amounts(general=g, math=d, code=d)
            add(RATIO, label, first, f"ratio/general{_den(g)}_domain{_den(d)}",
                stage(amounts, first), general=g, domain=d)  # fmt: skip
    for g in s.fractions:  # F3 reverse: domain fixed at 1, general varied
        if g in (1.0, low):
            continue  # (1, 1) is F2's; (low, 1) is above
        amounts = stage.amounts(general=g, math=1.0, code=1.0)
        name = f"ratio/general{_den(g)}_domain1"
        label = f"general {fraction_label(g)} + domain 1"
        add(RATIO, label, first, name, stage(amounts, first), general=g, domain=1.0)

    everything = stage.amounts(**dict.fromkeys(DOMAINS, 1.0))
    general = {GENERAL: s.pools[GENERAL]}
    g_steps = s.steps(s.pools[GENERAL])

    def matched(amounts: Mapping[str, int]) -> int:
        """Steps that give `amounts` the general-only run's number of general-data steps."""
        return round(g_steps * sum(amounts.values()) / s.pools[GENERAL])

    ks = tuple(s.ks) if DMT_K in s.ks else (*s.ks, DMT_K)
    for seed in s.seeds:  # T1 and K
        add(
            STRATEGIES,
            GENERAL_ONLY,
            seed,
            f"strategies/general_only/s{seed}",
            stage(general, seed, g_steps),
        )
        add(STRATEGIES, MULTITASK, seed, f"strategies/multitask/s{seed}",
            stage(everything, seed, matched(everything)))  # fmt: skip
        sequential = f"strategies/sequential/s{seed}"
        exps.append(Experiment(sequential, {
            CODE: stage({CODE: s.pools[CODE]}, seed),
            MATH: stage({MATH: s.pools[MATH]}, seed, init=PREVIOUS_STAGE),
            GENERAL: stage(general, seed, g_steps, init=PREVIOUS_STAGE),
        }))  # fmt: skip
        rows.append(Row(STRATEGIES, SEQUENTIAL, seed, f"{sequential}/{GENERAL}"))
        mixed_seq = f"strategies/mixed_sequential/s{seed}"
        domains = {d: s.pools[d] for d in SPECIALISED}
        exps.append(Experiment(mixed_seq, {
            "domains": stage(domains, seed),
            GENERAL: stage(general, seed, g_steps, init=PREVIOUS_STAGE),
        }))  # fmt: skip
        rows.append(Row(STRATEGIES, DOMAIN_STAGE, seed, f"{mixed_seq}/domains"))
        rows.append(Row(STRATEGIES, MIXED_SEQUENTIAL, seed, f"{mixed_seq}/{GENERAL}"))
        domain_params = str(out / mixed_seq / "domains" / "final_params")
        for k in ks:
            amounts = {**general, **{d: int(s.pools[d] * k) for d in SPECIALISED}}
            table = K_SWEEP if k in s.ks else STRATEGIES
            exps.append(
                _single(
                    f"dmt/k{_den(k)}/s{seed}",
                    stage(amounts, seed, matched(amounts), init=domain_params),
                )
            )
            rows.append(Row(table, dmt_label(k), seed, f"dmt/k{_den(k)}/s{seed}/train", {"k": k}))
    return Plan(exps, rows, base)
