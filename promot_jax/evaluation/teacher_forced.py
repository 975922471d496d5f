"""Teacher-forced token accuracy and loss of a model on a task's reference answers.

A decoded metric (exact match, program accuracy) counts an answer only when every token
of it is right. For a small model a few dozen steps into a new generative task that is
zero everywhere, while the share of reference tokens it predicts under teacher forcing
already tells which training order kept a skill and which lost it. The figures are the
training engine's own (`losses.batch_loss`: token accuracy over target tokens, loss per
target token), on the first examples of a split in order, the ones decoding scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from promot_jax import batches, losses, network


class TeacherForcedScorer:
    """Scores models of one architecture (one compile) at fixed feature lengths."""

    def __init__(self, config: network.T5Config, lengths: Mapping[str, int]):
        if set(lengths) != {"inputs", "targets"}:
            raise ValueError(f"lengths needs 'inputs' and 'targets', got {sorted(lengths)}")
        model = network.Transformer(config)
        self.lengths = dict(lengths)
        self._loss = jax.jit(lambda params, batch: losses.batch_loss(model, params, batch))
        self._batches: dict[tuple[str, str, int], dict] = {}

    def _batch(self, task: str, split: str, n: int) -> dict:
        key = (task, split, n)
        if key not in self._batches:
            rows = batches.batch_iterator(task, split, self.lengths, n, shuffle=False, repeat=False)
            batch = next(rows, None)
            if batch is None:
                raise ValueError(f"{task!r} has fewer than {n} examples in split {split!r}")
            self._batches[key] = batch
        return self._batches[key]

    def score(self, params: dict, task: str, split: str, n: int) -> dict[str, float]:
        """{"token_accuracy": % of target tokens right, "loss": per target token} on the
        first `n` examples of `split` (one batch; targets longer than the lengths are cut)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        loss, aux = self._loss(params, self._batch(task, split, n))
        return {"token_accuracy": 100.0 * float(aux["accuracy"]), "loss": float(loss)}
