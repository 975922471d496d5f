"""The DMT paper's claims as the DMT lab tests them, thresholds fixed before the run
(docs/dmt_lab_design.md "Claims and thresholds"; tests/test_lab_dmt.py checks each can
come out either way).

Scores are percentages of the 200 held-out examples per domain; an `Interval` over one
pair of models is the paired bootstrap over those examples (`lab.stats`-style).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from promot_jax.lab.stats import Interval
from promot_jax.lab.verdicts import NOT_REPRODUCED, PARTIAL, REPRODUCED, Verdict

KEEPS_IMPROVING = 5.0  # (1) f = 1 above the second fraction, for math and code
SATURATES, SATURATES_PARTIAL = 5.0, 10.0  # (1) general at the third fraction vs f = 1
MIXING_HELPS = 3.0  # (2) mixed above single at the smallest fraction
MIXING_CONFLICTS = 3.0  # (2) mixed below single at f = 1, for some domain
AMOUNT_NOT_RATIO, AMOUNT_PARTIAL = 5.0, 10.0  # (2) general's drops at equal domain amounts
MULTITASK_GENERAL_COST = 5.0  # (3) multi-task's general below general-only
SEQUENTIAL_FORGETS = 10.0  # (3) sequential's code (first trained) below multi-task's
DMT_DOMAIN_SHARE, DMT_GENERAL_TOLERANCE = 0.8, 5.0  # (4) DMT keeps both
K_RHO = 0.8  # (4) Spearman rho over k of the seed means


def paired_interval(a: Sequence[int], b: Sequence[int], samples: int, seed: int = 0) -> Interval:
    """mean(a) - mean(b) in points, hits of the same examples, with its bootstrap 95%."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"a paired interval needs the same examples; got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), (samples, len(a)))
    diffs = 100.0 * (a[draws].mean(1) - b[draws].mean(1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Interval(100.0 * float(a.mean() - b.mean()), float(low), float(high))


def _for_both(passed: Sequence[bool]) -> str:
    """Reproduced when every domain passes, partial when some do."""
    return REPRODUCED if all(passed) else PARTIAL if any(passed) else NOT_REPRODUCED


def keeps_improving(diffs: Mapping[str, Interval], low: str) -> Verdict:
    """diffs: {math, code: f = 1 minus the second fraction}."""
    verdict = _for_both([i.estimate >= KEEPS_IMPROVING and i.low > 0 for i in diffs.values()])
    return Verdict(
        "math and code keep improving with more data",
        "Fig. 1: GSM8K and HumanEval rise up to the full data",
        "; ".join(f"{d} f=1 - f={low}: {i.text()}" for d, i in diffs.items()),
        verdict,
        f">= {KEEPS_IMPROVING:g} points with the interval above 0 for both (partial: one)",
    )


def general_saturates(diff: Interval, third: str) -> Verdict:
    """diff: general at f = 1 minus general at the third fraction."""
    verdict = (
        REPRODUCED if diff.estimate <= SATURATES
        else PARTIAL if diff.estimate <= SATURATES_PARTIAL
        else NOT_REPRODUCED
    )  # fmt: skip
    return Verdict(
        "general ability saturates early",
        "Fig. 1: MT-Bench flat from ~1/256 of ShareGPT",
        f"general f=1 - f={third}: {diff.text()}",
        verdict,
        f"f=1 at most {SATURATES:g} points above f={third} (partial: {SATURATES_PARTIAL:g})",
    )


def mixing_helps(diffs: Mapping[str, Interval], smallest: str) -> Verdict:
    """diffs: {math, code: mixed minus single at the smallest fraction}."""
    verdict = _for_both([i.estimate >= MIXING_HELPS for i in diffs.values()])
    return Verdict(
        "at low data, mixing the domains helps them",
        "Fig. 2: mixed above single at small amounts",
        "; ".join(f"{d} mixed - single at f={smallest}: {i.text()}" for d, i in diffs.items()),
        verdict,
        f">= {MIXING_HELPS:g} points for math and code (partial: one)",
    )


def mixing_conflicts(diffs: Mapping[str, Interval]) -> Verdict:
    """diffs: {domain: mixed minus single at f = 1}."""
    if any(i.estimate <= -MIXING_CONFLICTS and i.high < 0 for i in diffs.values()):
        verdict = REPRODUCED
    elif any(i.estimate < 0 for i in diffs.values()):
        verdict = PARTIAL
    else:
        verdict = NOT_REPRODUCED
    return Verdict(
        "at high data, mixing the domains conflicts",
        "Fig. 2: mixed below single at full data",
        "; ".join(f"{d} mixed - single at f=1: {i.text()}" for d, i in diffs.items()),
        verdict,
        f"some domain <= -{MIXING_CONFLICTS:g} with the interval below 0 (partial: below 0)",
    )


def amount_not_ratio(gaps: Mapping[str, float], high: str, low: str) -> Verdict:
    """gaps: {domain fraction: general's drop at general = high minus at general = low}."""
    worst = max(abs(g) for g in gaps.values())
    verdict = (
        REPRODUCED if worst <= AMOUNT_NOT_RATIO
        else PARTIAL if worst <= AMOUNT_PARTIAL
        else NOT_REPRODUCED
    )  # fmt: skip
    return Verdict(
        "the conflict follows the other domain's amount, not the ratio",
        "Fig. 3: general's loss tracks the absolute domain amount",
        "general's drop (vs general alone) at general "
        f"{high} minus at {low}, per domain fraction: "
        + ", ".join(f"{d}: {g:+.1f}" for d, g in gaps.items()),
        verdict,
        f"every gap within {AMOUNT_NOT_RATIO:g} points (partial: {AMOUNT_PARTIAL:g})",
    )


def _every(values: Sequence[float], ok) -> bool:
    return all(ok(v) for v in values)


def multitask_tradeoff(
    general_gap: Sequence[float], domain_gap: Mapping[str, Sequence[float]]
) -> Verdict:
    """general_gap: multi-task minus general-only, general, per seed; domain_gap: {math,
    code: multi-task minus DMT, per seed}."""
    cost = lambda v: v <= -MULTITASK_GENERAL_COST  # noqa: E731
    every = _every(general_gap, cost) and all(
        _every(g, lambda v: v >= 0) for g in domain_gap.values()
    )
    means = cost(float(np.mean(general_gap))) and all(np.mean(g) >= 0 for g in domain_gap.values())
    return Verdict(
        "multi-task favours the domains and costs general ability",
        "Table 1: multi-task GSM8K 47.5 (DMT 41.9), MT-Bench 5.76 (general only 5.88)",
        f"general vs general-only per seed {_fmt(general_gap)}; "
        + "; ".join(f"{d} vs DMT {_fmt(g)}" for d, g in domain_gap.items()),
        REPRODUCED if every else PARTIAL if means else NOT_REPRODUCED,
        f"general <= -{MULTITASK_GENERAL_COST:g} and domains >= DMT's on every seed "
        "(partial: the means)",
    )


def sequential_forgets(code_gap: Sequence[float]) -> Verdict:
    """code_gap: sequential minus multi-task, code, per seed."""
    forgets = lambda v: v <= -SEQUENTIAL_FORGETS  # noqa: E731
    return Verdict(
        "sequential training forgets what came first",
        "Table 1: sequential HumanEval 15.85 vs multi-task 14.63 (code is not forgotten there); "
        "GSM8K 31.4 vs 47.5",
        f"code, sequential - multi-task per seed {_fmt(code_gap)}",
        REPRODUCED
        if _every(code_gap, forgets)
        else PARTIAL
        if forgets(float(np.mean(code_gap)))
        else NOT_REPRODUCED,
        f"<= -{SEQUENTIAL_FORGETS:g} on every seed (partial: the mean)",
    )


def dmt_keeps_both(
    domains: Mapping[str, tuple[Sequence[float], Sequence[float]]], general_gap: Sequence[float]
) -> Verdict:
    """domains: {math, code: (DMT's scores, multi-task's scores) per seed}; general_gap: DMT
    minus general-only per seed. "Keeps" a domain: DMT >= 80% of multi-task's score (0 of 0
    is kept)."""
    kept = lambda dmt, mt: dmt >= DMT_DOMAIN_SHARE * mt  # noqa: E731
    general = lambda v: v >= -DMT_GENERAL_TOLERANCE  # noqa: E731
    every = all(all(map(kept, d, m)) for d, m in domains.values()) and _every(general_gap, general)
    means = all(kept(np.mean(d), np.mean(m)) for d, m in domains.values()) and general(
        float(np.mean(general_gap))
    )
    shown = "; ".join(
        f"{name} DMT vs multi-task "
        + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(d, m, strict=True))
        for name, (d, m) in domains.items()
    )
    return Verdict(
        "DMT keeps most of the domain skill and the general ability",
        "Table 1: DMT k=1/256 GSM8K 41.9 (88% of multi-task), MT-Bench 6.08 (general only 5.88)",
        f"{shown}; general DMT - general-only {_fmt(general_gap)}",
        REPRODUCED if every else PARTIAL if means else NOT_REPRODUCED,
        f"domains >= {DMT_DOMAIN_SHARE:.0%} of multi-task's and general at most "
        f"{DMT_GENERAL_TOLERANCE:g} below general-only on every seed (partial: the means)",
    )


def k_tradeoff(ks: Sequence[float], domain: Sequence[float], general: Sequence[float]) -> Verdict:
    """Seed means per k: domain (mean of math and code) and general."""
    from scipy.stats import spearmanr

    def rho(values: Sequence[float]) -> float:  # a constant series has no trend: 0
        return 0.0 if np.ptp(values) == 0 else float(spearmanr(ks, values).statistic)

    rho_d, rho_g = rho(domain), rho(general)
    return Verdict(
        "larger k trades general ability for domain skill",
        "k sweep: GSM8K 45.8 at k=1 to 41.9 at 1/256; MT-Bench 5.63 to 6.08",
        f"Spearman rho over k: domain {rho_d:+.2f}, general {rho_g:+.2f}",
        _for_both([rho_d >= K_RHO, rho_g <= -K_RHO]),
        f"domain rho >= +{K_RHO:g} and general rho <= -{K_RHO:g} (partial: one)",
    )


def _fmt(values: Sequence[float], digits: int = 1) -> str:
    return (
        "("
        + ", ".join(f"{v:+.{digits}f}" if digits == 1 else f"{v:.{digits}f}" for v in values)
        + ")"
    )
