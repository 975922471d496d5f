"""Vocabularies and output features: mT5's SentencePiece for real tasks, the toy model offline.

Both reserve pad 0, eos 1, unk 2 (no bos) and get 100 sentinels
(`<extra_id_0>` ... `<extra_id_99>`) appended by SeqIO as extra ids.
"""

from __future__ import annotations

import functools
import os
import pathlib

import seqio

MT5_VOCAB_ENV = "PROMOT_MT5_VOCAB"
MT5_VOCAB_DEFAULT = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
TOY_VOCAB_PATH = str(pathlib.Path(__file__).with_name("vocab") / "toy.model")
EXTRA_IDS = 100


def mt5_vocab_path() -> str:
    """mT5's SentencePiece model: `$PROMOT_MT5_VOCAB` when set (e.g. a local copy), else GCS."""
    return os.environ.get(MT5_VOCAB_ENV) or MT5_VOCAB_DEFAULT


@functools.cache
def mt5_vocabulary(path: str | None = None) -> seqio.SentencePieceVocabulary:
    """mT5's vocabulary (250,000 pieces + 100 sentinels); loaded lazily on first use."""
    return seqio.SentencePieceVocabulary(path or mt5_vocab_path(), extra_ids=EXTRA_IDS)


@functools.cache
def toy_vocabulary(path: str = TOY_VOCAB_PATH) -> seqio.SentencePieceVocabulary:
    """The small toy-world vocabulary shipped in `tasks/vocab/` (see toy_world.build_vocab)."""
    return seqio.SentencePieceVocabulary(path, extra_ids=EXTRA_IDS)


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """SeqIO "inputs"/"targets" features over one vocabulary, both ending in EOS."""
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def mt5_output_features() -> dict[str, seqio.Feature]:
    """Output features of every real (TFDS / JSONL) task."""
    return output_features(mt5_vocabulary())


def toy_output_features() -> dict[str, seqio.Feature]:
    """Output features of every toy-world task."""
    return output_features(toy_vocabulary())
