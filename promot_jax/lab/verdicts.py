"""Every claim the lab tests, with its verdict thresholds, written before the run they judge.

Each `judge_*` function takes the measured figures and returns a `Verdict`: "reproduced",
"partial" or "not reproduced" by the thresholds below, or "not testable" when a
precondition fails (the target was not learned: no method moved it, so "ProMoT matches
FT on the target" would pass vacuously). The thresholds are module constants, the
design document (docs/lab_design.md) quotes them, and tests/test_lab_verdicts.py checks
that each verdict can come out either way.

Intervals are bootstrap 95% intervals over examples (`stats.interval`), per seed; a claim
about seeds "on every seed" needs it on each of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from promot_jax.lab import stats
from promot_jax.lab.stats import Interval

REPRODUCED, PARTIAL, NOT_REPRODUCED, NOT_TESTABLE = (
    "reproduced",
    "partial",
    "not reproduced",
    "not testable",
)

# The target counts as learned when standard FT reaches this accuracy on every seed.
TARGET_LEARNED = 80.0
# Prompt tuning carries the format when this share of its target outputs are labels.
PROMPT_FORMAT_SHARE = 95.0
# FT specializes: its suite outputs are target labels this often (mean over seeds) ...
FT_LEAK = 50.0
# ... and its Norm. Avg. falls at least this far below the pretrained model's.
FT_DROP = 10.0
# "Within a point" of FT on the target; "partial" down to this many points below it.
TARGET_TOLERANCE, TARGET_PARTIAL = 1.0, 5.0
# ProMoT "at or above pretrained" allows this many Norm. Avg. points below it; "partial"
# when it keeps at least this fraction of what FT lost.
SUITE_TOLERANCE, SUITE_PARTIAL_RECOVERY = 1.0, 0.5
# The prompt absorbed the format: the trunk without it answers the target with a label at
# most this often ("partial" up to the second figure).
MECHANISM_LABEL_SHARE, MECHANISM_PARTIAL = 50.0, 90.0
# The paper's training-time leak (TriviaQA / En-De outputs True/False): above 90%.
PROBE_LEAK, PROBE_LEAK_PARTIAL = 90.0, 50.0
# Gradient alignment [P Fig. 7]: ~1 at step 0, 0.1-0.2 by step 400.
ALIGN_START, ALIGN_END, ALIGN_FALL_PARTIAL = 0.8, 0.5, 0.2
# FT's drop is format specialization, not generic damage, when the same recipe on the
# pretraining mixture (control C1) loses at most this fraction of FT's drop.
GENERIC_DAMAGE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str
    paper: str
    measured: str
    verdict: str
    rule: str

    def line(self) -> str:
        return (
            f"- **{self.verdict}**: {self.claim} (paper: {self.paper}). Measured: "
            f"{self.measured}. Rule: {self.rule}."
        )


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def _seeds(intervals: Sequence[Interval]) -> str:
    return "; ".join(i.text() for i in intervals)


def judge_target_learned(ft_target: Sequence[float]) -> Verdict:
    ok = len(ft_target) > 0 and min(ft_target) >= TARGET_LEARNED
    return Verdict(
        "the target is learned: standard FT on it",
        "RTE 92.06 after FT",
        f"FT target accuracy per seed {', '.join(f'{x:.1f}' for x in ft_target)}",
        REPRODUCED if ok else NOT_REPRODUCED,
        f">= {TARGET_LEARNED:.0f}% on every seed (otherwise the target claims are not testable)",
    )


def judge_prompt_carries_format(
    pt_label_share: Sequence[float], what: str = "prompt tuning alone (control C3)"
) -> Verdict:
    ok = len(pt_label_share) > 0 and min(pt_label_share) >= PROMPT_FORMAT_SHARE
    return Verdict(
        f"{what} answers the target in its format",
        "prompt tuning RTE 91.34",
        f"share of target outputs that are labels per seed "
        f"{', '.join(f'{x:.1f}%' for x in pt_label_share)}",
        REPRODUCED if ok else NOT_REPRODUCED,
        f">= {PROMPT_FORMAT_SHARE:.0f}% on every seed",
    )


def judge_ft_specializes(ft_leak: Sequence[float], drops: Sequence[Interval]) -> Verdict:
    """`drops`: per seed, Norm. Avg. of FT minus pretrained."""
    leak_ok = _mean(ft_leak) >= FT_LEAK
    drop_ok = (
        all(d.high < -FT_DROP / 2 for d in drops) and _mean([d.estimate for d in drops]) <= -FT_DROP
    )
    verdict = REPRODUCED if leak_ok and drop_ok else PARTIAL if leak_ok or drop_ok else None
    return Verdict(
        "standard FT specializes the model to the target's format: its suite outputs become "
        "target labels and Norm. Avg. falls",
        "Norm. Avg. 17.52 -> 15.43; ~90% of TriviaQA outputs True/False",
        f"FT leak {_mean(ft_leak):.1f}% (mean over seeds); Norm. Avg. FT - pretrained per seed "
        f"{_seeds(drops)}",
        verdict or NOT_REPRODUCED,
        f"reproduced: mean leak >= {FT_LEAK:.0f}% and mean drop >= {FT_DROP:.0f} points with "
        f"every seed's interval below -{FT_DROP / 2:.0f}; partial: one of the two",
    )


def judge_drop_is_format(ft_drop: float, c1_drop: float, ft_leak: float) -> Verdict:
    """Drops are Norm. Avg. minus pretrained (negative = loss); C1 on the first seed."""
    ok = ft_drop < 0 and c1_drop >= GENERIC_DAMAGE_SHARE * ft_drop and ft_leak >= FT_LEAK
    return Verdict(
        "FT's loss is format specialization, not generic damage of the recipe (control C1)",
        "not measured in the paper",
        f"Norm. Avg. change: FT {ft_drop:+.1f}, C1 (same recipe, pretraining mixture) "
        f"{c1_drop:+.1f}; FT leak {ft_leak:.1f}%",
        REPRODUCED if ok else NOT_REPRODUCED,
        f"C1 loses at most {GENERIC_DAMAGE_SHARE:.0%} of FT's drop and FT leaks >= {FT_LEAK:.0f}%",
    )


def judge_target_parity(learned: bool, diffs: Sequence[Interval]) -> Verdict:
    """`diffs`: per seed, target score of ProMoT minus FT."""
    mean = _mean([d.estimate for d in diffs])
    if not learned:
        verdict = NOT_TESTABLE
    elif mean >= -TARGET_TOLERANCE:
        verdict = REPRODUCED
    elif mean >= -TARGET_PARTIAL:
        verdict = PARTIAL
    else:
        verdict = NOT_REPRODUCED
    return Verdict(
        "ProMoT within about a point of FT on the target",
        "RTE 92.78 vs 92.06",
        f"ProMoT - FT per seed {_seeds(diffs)} (mean {mean:+.1f})",
        verdict,
        f"reproduced: mean >= -{TARGET_TOLERANCE:.0f}; partial: >= -{TARGET_PARTIAL:.0f}; "
        f"not testable unless FT learned the target (>= {TARGET_LEARNED:.0f}% every seed)",
    )


def judge_keeps_suite(promot_vs_pre: Sequence[Interval], ft_vs_pre: Sequence[Interval]) -> Verdict:
    pm = _mean([d.estimate for d in promot_vs_pre])
    ft = _mean([d.estimate for d in ft_vs_pre])
    if pm >= -SUITE_TOLERANCE:
        verdict = REPRODUCED
    elif ft < 0 and pm >= SUITE_PARTIAL_RECOVERY * ft:
        verdict = PARTIAL
    else:
        verdict = NOT_REPRODUCED
    return Verdict(
        "ProMoT's Norm. Avg. at or above the pretrained model's",
        "20.10 vs 17.52",
        f"ProMoT - pretrained per seed {_seeds(promot_vs_pre)} (mean {pm:+.1f}; FT {ft:+.1f})",
        verdict,
        f"reproduced: mean >= -{SUITE_TOLERANCE:.0f}; partial: ProMoT keeps >= "
        f"{1 - SUITE_PARTIAL_RECOVERY:.0%} of what FT lost",
    )


def judge_above(claim: str, paper: str, diffs: Sequence[Interval], lower_is_better=False):
    """A paired comparison (a - b per seed): reproduced when every seed's interval excludes
    zero in the claimed direction, partial when only the mean is on that side."""
    sign = -1 if lower_is_better else 1
    every = len(diffs) > 0 and all((d.low > 0) if sign > 0 else (d.high < 0) for d in diffs)
    mean = _mean([d.estimate for d in diffs])
    verdict = REPRODUCED if every else PARTIAL if sign * mean > 0 else NOT_REPRODUCED
    side = "below" if lower_is_better else "above"
    return Verdict(
        claim,
        paper,
        f"per seed {_seeds(diffs)} (mean {mean:+.1f})",
        verdict,
        f"reproduced: every seed's 95% interval {side} 0; partial: the mean {side} 0",
    )


def judge_mechanism(trunk_label_share: Sequence[float], trunk_accuracy: Sequence[float]):
    share = _mean(trunk_label_share)
    if share <= MECHANISM_LABEL_SHARE:
        verdict = REPRODUCED
    elif share <= MECHANISM_PARTIAL:
        verdict = PARTIAL
    else:
        verdict = NOT_REPRODUCED
    return Verdict(
        "the prompt absorbs the format: ProMoT's trunk with the prompt removed does not "
        "answer the target in its format",
        "the paper's explanation of ProMoT (Sec. 4); not measured there",
        f"label share {', '.join(f'{x:.1f}%' for x in trunk_label_share)}, accuracy "
        f"{', '.join(f'{x:.1f}' for x in trunk_accuracy)} per seed",
        verdict,
        f"reproduced: mean label share <= {MECHANISM_LABEL_SHARE:.0f}%; partial: <= "
        f"{MECHANISM_PARTIAL:.0f}%",
    )


def judge_probe_leak(max_leak: float | None, probe: str) -> Verdict:
    if max_leak is None:
        verdict, measured = NOT_TESTABLE, "no monitor records"
    else:
        measured = f"highest single-probe leak {max_leak:.1f}% ({probe})"
        verdict = (
            REPRODUCED
            if max_leak >= PROBE_LEAK
            else PARTIAL
            if max_leak >= PROBE_LEAK_PARTIAL
            else NOT_REPRODUCED
        )
    return Verdict(
        "during standard FT a probe's outputs become target labels",
        "~90% of 1-shot TriviaQA by step 300, >99% of En-De by 500",
        measured,
        verdict,
        f"reproduced: >= {PROBE_LEAK:.0f}% on one probe; partial: >= {PROBE_LEAK_PARTIAL:.0f}%",
    )


def judge_alignment(start: float | None, end: float | None) -> Verdict:
    if start is None or end is None:
        verdict, measured = NOT_TESTABLE, "no monitor records"
    else:
        measured = f"grad_align/all {start:.2f} at step 0, {end:.2f} at the last step"
        if start >= ALIGN_START and end <= ALIGN_END:
            verdict = REPRODUCED
        elif start - end >= ALIGN_FALL_PARTIAL:
            verdict = PARTIAL
        else:
            verdict = NOT_REPRODUCED
    return Verdict(
        "gradient alignment (true vs shuffled labels) falls during standard FT",
        "~1 at step 0, 0.1-0.2 by step 400",
        measured,
        verdict,
        f"reproduced: >= {ALIGN_START} at step 0 and <= {ALIGN_END} at the end; partial: "
        f"falls by >= {ALIGN_FALL_PARTIAL}",
    )


# The scale axis (a question, not a claim of the paper): ProMoT's protection, the share of
# FT's Norm. Avg. loss it keeps, "grows" with size when the larger base's mean exceeds the
# smaller's by this much and the Welch 95% interval of the difference (over seeds) is above 0.
SCALE_GROWTH = 0.10
GROWS, SHRINKS, NO_DIFFERENCE = "grows", "shrinks", "no difference found"


def judge_scale(sizes: tuple[str, str], protection: tuple[Sequence[float], Sequence[float]]):
    """Whether ProMoT's per-seed protection differs between the smaller and larger base."""
    diff = stats.welch_interval(*protection)
    if diff.estimate >= SCALE_GROWTH and diff.low > 0:
        verdict = GROWS
    elif diff.estimate <= -SCALE_GROWTH and diff.high < 0:
        verdict = SHRINKS
    else:
        verdict = NO_DIFFERENCE
    small, large = (", ".join(f"{p:.2f}" for p in side) for side in protection)
    return Verdict(
        f"ProMoT's protection (share of FT's Norm. Avg. loss it keeps) grows from the "
        f"{sizes[0]} to the {sizes[1]} base",
        "protection seen at 3.7B and 13B; nothing smaller reported",
        f"per seed {sizes[0]} {small}, {sizes[1]} {large}; difference {diff.text(2)}",
        verdict,
        f"grows: difference >= {SCALE_GROWTH:.2f} and its Welch 95% interval above 0; "
        "shrinks: the mirror image; otherwise no difference found",
    )
