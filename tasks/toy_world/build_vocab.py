"""Trains the toy SentencePiece model shipped as tasks/vocab/toy.model.

    python -m promot_tasks.toy_world.build_vocab            # rewrite the shipped model
    python -m promot_tasks.toy_world.build_vocab --out /tmp/toy.model --vocab-size 1500

The text is the toy corpus plus every toy task's rendered train inputs and
targets (so template words are single pieces), from the default seed. Ids: pad
0, eos 1, unk 2, no bos, like mT5; SeqIO adds the 100 sentinels as extra ids.
Training is single-threaded on unshuffled input, so the output is reproducible.
"""

from __future__ import annotations

import argparse
import io
import sys

import sentencepiece as spm

from promot_tasks.templates import template_for
from promot_tasks.toy_world.corpus import corpus_paragraphs
from promot_tasks.toy_world.families import DEFAULT_CONFIG, TOY_FAMILIES, ToyConfig, generate_splits
from promot_tasks.vocabularies import TOY_VOCAB_PATH

DEFAULT_VOCAB_SIZE = 2000


def vocab_training_text(config: ToyConfig = DEFAULT_CONFIG) -> list[str]:
    """The lines SentencePiece is trained on."""
    lines = list(corpus_paragraphs(config)["train"])
    for key, toy in TOY_FAMILIES.items():
        if not toy.in_vocabulary:
            continue
        template = template_for(toy.family)
        for record in generate_splits(key, config)["train"]:
            lines.append(template.render(record))
            lines.append(str(record["answer"]))
    return lines


def train_model(lines: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> bytes:
    """Serialized SentencePiece BPE model trained on `lines`.

    BPE, not unigram: on this highly repetitive text unigram splits frequent
    template words ("question" -> qu es ti on); BPE keeps them whole. No
    normalisation (the text is ASCII), which also keeps the model file ~30 KB.
    """
    distinct = len(set(" ".join(lines).split()))
    if distinct < vocab_size // 4:
        raise ValueError(
            f"the toy corpus has only {distinct} distinct words, too few for a vocabulary of "
            f"{vocab_size}; lower --vocab-size or enlarge the world"
        )
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        normalization_rule_name="identity",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        split_digits=True,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return model.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=TOY_VOCAB_PATH, help="where to write the .model file")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        help="pieces, without the 100 sentinels SeqIO adds",
    )
    parser.add_argument("--seed", type=int, default=0, help="toy-world seed of the text")
    args = parser.parse_args(argv)
    data = train_model(vocab_training_text(ToyConfig(seed=args.seed)), args.vocab_size)
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {args.out} ({len(data)} bytes, {args.vocab_size} pieces + 100 sentinels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
