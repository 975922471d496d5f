"""Templates through the real SeqIO pipeline on hand-written records: exact strings, 0/1/4-shot;
post-processors and metrics on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from promot_tasks import metrics, pipeline, postprocessors, sources
from promot_tasks.vocabularies import toy_output_features


def _entailment2(i):
    f = {
        "premise": f"Tom has {i} cats.",
        "hypothesis": f"Tom owns {i} cats.",
        "answer": "True" if i % 2 else "False",
    }
    return f, f"Tom has {i} cats. question: Tom owns {i} cats. Is it true or false? answer:"


def _entailment3(i):
    f = {"premise": f"Ann is {i}.", "hypothesis": "Ann is old.", "answer": "Neither"}
    return f, f"Ann is {i}. question: Ann is old. Is it true or false or neither? answer:"


def _wic(i):
    f = {"sentence1": f"A bank {i}.", "sentence2": "The bank.", "word": "bank", "answer": "True"}
    return f, (
        f"A bank {i}. The bank. question: The word bank is used in the same way in the "
        "two sentences. Is it true or False? answer:"
    )


def _mcqa(i):
    f = {
        "question": f"Pick {i}?",
        "choice_a": "one",
        "choice_b": "two",
        "choice_c": "three",
        "choice_d": "four",
        "answer": "B",
    }
    return f, f"Q: Pick {i}? A) one B) two C) three D) four A:"


def _qa(i):
    f = {"question": f"Who is number {i}?", "answer": f"Bob{i}", "answers": [f"Bob{i}"]}
    return f, f"Q: Who is number {i}? A:"


def _translation(i):
    f = {
        "source_language": "English",
        "target_language": "French",
        "sentence": f"I have {i} dogs.",
        "answer": f"J'ai {i} chiens.",
    }
    return f, f"Translate English to French: I have {i} dogs."


def _summarization(i):
    f = {"article": f"Long story number {i}. It ends.", "answer": f"Story {i}."}
    return f, f"Article: Long story number {i}. It ends. One sentence summary:"


def _math(i):
    f = {"question": f"What is {i} + 1?", "answer": f"The answer is {i + 1}."}
    return f, f"Question: What is {i} + 1? Answer:"


def _code(i):
    f = {"instruction": f"Add {i} and 2.", "answer": f"a = {i} + 2 ; return a"}
    return f, f"Instruction: Add {i} and 2. Response:"


def _general(i):
    f = {"dialogue": f"User: Say {i}.", "answer": f"{i}"}
    return f, f"User: Say {i}. Assistant:"


FAMILIES = {
    "entailment2": _entailment2,
    "entailment3": _entailment3,
    "wic": _wic,
    "mcqa": _mcqa,
    "qa": _qa,
    "translation": _translation,
    "summarization": _summarization,
    "math": _math,
    "code": _code,
    "general": _general,
}


def _first_input(family, train, query, shots, sentinel):
    records = {"train": train, "validation": [query]}
    task = pipeline.register_task(
        f"test_{family}_{shots}",
        source=sources.records_source(lambda: records, {"train": len(train), "validation": 1}),
        adapter=lambda ds: ds,
        family=family,
        output_features=toy_output_features(),
        shots=shots,
        sentinel=sentinel,
        register=False,
    )
    ex = next(task.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    return ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("shots", [0, 1, 4])
def test_rendering_exact(family, shots):
    make = FAMILIES[family]
    query, query_text = make(0)
    demos = [make(i) for i in range(1, shots + 1)]
    # The pool also holds a copy of the query, which must never be chosen; with exactly
    # `shots` other entries the choice is forced and the order is pool order.
    train = [d for d, _ in demos[:1]] + [query] + [d for d, _ in demos[1:]]
    sentinel = shots != 1  # both layouts: with and without the trailing sentinel
    got, target = _first_input(family, train or [make(9)[0]], query, shots, sentinel)
    expected = " ".join([f"{text} {d['answer']}" for d, text in demos] + [query_text])
    if sentinel:
        expected += " <extra_id_0>"
    assert got == expected
    assert target == query["answer"]


def test_postprocess_sentinel_prefix_first_word():
    out = "<extra_id_0> True. The rest <extra_id_1> False"
    assert postprocessors.sentinel_span(out) == " True. The rest "
    assert postprocessors.postprocess(out, classification=True) == "True"
    assert postprocessors.postprocess("Paris Q: Where is Rome? A: Italy") == "Paris"
    assert postprocessors.postprocess("Le chat. Translate English to German: x") == "Le chat."
    assert postprocessors.postprocess("A summary. Article: next") == "A summary."
    assert postprocessors.postprocess("no sentinel here") == "no sentinel here"
    assert postprocessors.postprocess("", classification=True) == ""
    ex = {"answers": np.array([b"Rome", b"Roma"])}
    assert postprocessors.postprocess(b"Rome", example=ex, is_target=True) == ["Rome", "Roma"]
    assert postprocessors.postprocess(b"True", example={}, is_target=True) == "True"


def test_accuracy_and_exact_match():
    assert metrics.accuracy(["True", "False"], ["True", "True"]) == {"accuracy": 50.0}
    em = metrics.exact_match([["The Beatles", "Beatles"], "Paris"], ["beatles!", "paris, France"])
    assert em == {"exact_match": 50.0}
    assert metrics.normalize_answer("  The  Quick, brown Fox. ") == "quick brown fox"


def test_bleu_equals_sacrebleu_corpus_bleu():
    refs = ["The cat sat on the mat.", "A dog barks loudly at night."]
    preds = ["The cat sat on a mat.", "A dog barks at night."]
    want = sacrebleu.corpus_bleu(preds, [refs]).score
    assert metrics.bleu(refs, preds)["bleu"] == pytest.approx(want)
    assert 0 < want < 100


def test_rouge2_equals_rouge_score():
    refs = ["the quick brown fox jumps over the lazy dog", "police arrested a man on friday"]
    preds = ["the quick brown dog jumps over the fox", "a man was arrested by police friday"]
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    want = 100 * np.mean(
        [scorer.score(r, p)["rouge2"].fmeasure for r, p in zip(refs, preds, strict=True)]
    )
    assert metrics.rouge2(refs, preds)["rouge2"] == pytest.approx(want)


def test_math_and_program_metrics():
    assert metrics.final_number("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert metrics.math_accuracy(["3 + 4 = 7. The answer is 7."], ["The answer is 7"]) == {
        "math_accuracy": 100.0
    }
    assert metrics.run_program("a = 3 + 4 ; b = a * 2 ; return b") == 14
    assert metrics.run_program("a = 3 +") is None
    got = metrics.program_accuracy(
        ["a = 3 + 4 ; return a"] * 2, ["a = 4 + 3 ; return a", "return 8"]
    )
    assert got == {"program_accuracy": 50.0}


def test_metric_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 targets and 1 predictions"):
        metrics.accuracy(["a", "b"], ["a"])
