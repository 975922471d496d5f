"""Packed batches (several examples per row, for prompt-free stages such as pretraining)."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from promot_jax import batches, losses, network, train

LENGTHS = {"inputs": 96, "targets": 16}


def _model():
    cfg = network.mt5_config("tiny", vocab_size=2176, dtype="float32")
    model = network.Transformer(cfg)
    return model, network.init_params(cfg, jax.random.key(0))


def _unpack(row: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each segment of a packed row as its own one-row, unpacked batch."""
    examples = []
    for seg in sorted(set(row["encoder_segment_ids"][row["encoder_segment_ids"] > 0])):
        example = {}
        for side, keys in (
            ("encoder", ("encoder_input_tokens",)),
            ("decoder", ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")),
        ):
            mask = row[f"{side}_segment_ids"] == seg
            for key in keys:
                padded = np.zeros_like(row[key])
                padded[: mask.sum()] = row[key][mask]
                example[key] = padded[None]
        examples.append(example)
    return examples


def test_packed_loss_is_the_sum_of_the_examples_losses():
    model, params = _model()
    (batch,) = itertools.islice(
        batches.batch_iterator("toy_cb", "validation", LENGTHS, 2, shuffle=False, pack=True),
        1,
    )
    assert set(batches.PACKED_FEATURES) <= set(batch)
    segments = batch["encoder_segment_ids"].max(axis=1)
    assert (segments >= 2).all(), f"rows should hold several examples, got {segments}"
    packed, _ = losses.batch_loss(model, params, batch, loss_normalizing_factor=None)
    separate = 0.0
    for r in range(len(segments)):
        row = {k: v[r] for k, v in batch.items()}
        for example in _unpack(row):
            loss, _ = losses.batch_loss(model, params, example, loss_normalizing_factor=None)
            separate += float(loss)
    np.testing.assert_allclose(float(packed), separate, rtol=1e-5)


def test_packing_is_refused_for_a_prompt_method(tmp_path):
    cfg = network.mt5_config("tiny", vocab_size=2176, dtype="float32", prompt_length=4)
    with pytest.raises(ValueError, match="pack=True.*promot_stage1.*soft prompt"):
        train.StageConfig(
            method="promot_stage1",
            mixture="toy_rte",
            model=cfg,
            steps=2,
            run_dir=str(tmp_path),
            feature_lengths=LENGTHS,
            pack=True,
        )
