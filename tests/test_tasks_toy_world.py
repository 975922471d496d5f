"""The toy world: determinism per seed, held-out formats kept out of pretraining, vocab layout."""

from __future__ import annotations

import random

import numpy as np
import pytest
import seqio

import promot_tasks
from promot_tasks.toy_world import corpus, families, toy_tasks
from promot_tasks.toy_world.world import make_world
from promot_tasks.vocabularies import toy_vocabulary

SMALL = families.ToyConfig(seed=0, n_train=200, n_validation=20, n_test=20)
HELD_OUT_MARKERS = ("Is it true or false? answer:", "Translate English to French:")


@pytest.mark.parametrize("key", sorted(families.TOY_FAMILIES))
def test_same_seed_same_examples_other_seed_differs(key):
    a = families.generate_splits(key, SMALL)
    families.generate_splits.cache_clear()
    b = families.generate_splits(key, families.ToyConfig(0, 200, 20, 20))
    c = families.generate_splits(key, families.ToyConfig(1, 200, 20, 20))
    assert a == b
    assert a["train"] != c["train"]
    assert {len(v) for v in (a["train"], a["validation"], a["test"])} == {200, 20}
    # Distinct records, no record in two splits.
    keys = [families._record_key(r) for split in a.values() for r in split]
    assert len(keys) == len(set(keys))


def test_default_sizes_and_labels():
    for key in families.TOY_FAMILIES:
        splits = families.generate_splits(key)
        assert len(splits["train"]) == 2000 and len(splits["validation"]) == 200
        info = promot_tasks.task_info(f"toy_{key}")
        labels = info.labels
        if info.metric == "accuracy":  # classification: a label set is required
            assert labels, key
        if labels:
            assert {r["answer"] for r in splits["validation"]} == set(labels), key


def test_entailment_and_wic_labels_follow_their_stated_rules():
    # Entailment: a negated claim restates the premise's value and is False; an affirmative
    # claim is True exactly when its value is the one the premise states.
    world = families.make_world(0)
    for key in ("rte", "cb", "snli"):
        for r in families.generate_splits(key)["validation"]:
            if r["answer"] == "Neither":
                continue
            premise, claim = (set(r[f].replace(".", "").split()) for f in ("premise", "hypothesis"))
            facts = world.facts[r["premise"].split()[0]].values()
            stated = [v for v in facts if v in premise and v in claim]
            if " not " in r["hypothesis"]:
                assert r["answer"] == "False" and stated, r
            else:
                assert (r["answer"] == "True") == bool(stated), r
    # WiC: same sense exactly when both context nouns are of the same class.
    for r in families.generate_splits("wic")["validation"]:
        senses = [
            {i for i, nouns in enumerate(families.WIC_SENSES) for n in nouns if f" {n}" in s}
            for s in (r["sentence1"], r["sentence2"])
        ]
        assert all(len(s) == 1 for s in senses), r
        assert (r["answer"] == "True") == (senses[0] == senses[1]), r


def test_a_fact_in_each_wording():
    world = make_world(0)
    person = world.people[0]
    value = world.facts[person]["city"]
    assert world.statement(person, "city") == f"{person} lives in {value}."
    assert world.statement(person, "city", wording="paraphrase") == (
        f"{person} is a resident of {value}."
    )
    assert world.statement(person, "city", "Nowhere", "negated") == (
        f"{person} does not live in Nowhere."
    )
    with pytest.raises(ValueError, match="unknown wording 'question'"):
        world.statement(person, "city", wording="question")


def test_corpus_states_every_fact_in_several_wordings():
    world = families.make_world(0)
    person = world.people[7]
    # Paragraphs of this person's facts alone (news articles also state them, among others).
    own = [
        p
        for p in corpus.corpus_paragraphs()["train"]
        if all(person in sentence for sentence in p.split(". "))
        and all(v in p for v in world.facts[person].values())
    ]
    assert len(own) == corpus.FACT_PARAGRAPHS
    city = world.facts[person]["city"]
    assert any(f"{person} lives in {city}." in p for p in own)
    assert any(f"{person} is a resident of {city}." in p for p in own)


def test_toy_tasks_share_templates_postprocessing_and_metrics_with_real_ones():
    for name, info in promot_tasks.CATALOGUE.items():
        if not name.startswith("promot_") or name.startswith("promot_multitask"):
            continue
        toy_name = "toy_" + name[len("promot_") :]
        if name == "promot_gsm8k":
            toy_name = "toy_math"
        toy = promot_tasks.task_info(toy_name)
        assert (toy.family, toy.labels, toy.shots) == (info.family, info.labels, info.shots)
        if info.family != "math":
            assert toy.metric == info.metric


def test_toy_task_pipeline_is_deterministic():
    task = seqio.get_mixture_or_task("toy_cb_4shot")

    def first(n):
        ds = task.get_dataset(None, split="validation", shuffle=False)
        return [ex["inputs"].tolist() for ex in ds.take(n).as_numpy_iterator()]

    assert first(5) == first(5)


def test_pretraining_mixture_excludes_held_out_formats():
    mixture = seqio.get_mixture_or_task("toy_pretrain")
    members = {t.name for t in mixture.tasks}
    assert "toy_span_corruption" in members and "toy_cb_4shot" in members
    assert not any(m.startswith(("toy_rte", "toy_wmt14_en_fr")) for m in members)
    # Text level, over every member's whole train split and the whole corpus.
    for name in members - {"toy_span_corruption"}:
        key = name[len("toy_") :].split("_1shot")[0].split("_4shot")[0]
        template = promot_tasks.templates.template_for(families.TOY_FAMILIES[key].family)
        for record in families.generate_splits(key)["train"]:
            text = template.render(record)
            assert not any(m in text for m in HELD_OUT_MARKERS), name
    for paragraph in corpus.corpus_paragraphs()["train"]:
        assert not any(m in paragraph for m in HELD_OUT_MARKERS)
    # And on what the mixture actually yields.
    ds = mixture.get_dataset(
        {"inputs": 1024, "targets": 256},
        split="train",
        shuffle=True,
        seed=0,
        copy_pretokenized=True,
    )
    texts = [ex["inputs_pretokenized"].decode() for ex in ds.take(300).as_numpy_iterator()]
    assert any("<extra_id_0>" in t and "answer:" not in t for t in texts)  # span corruption
    assert any("Is it true or false or neither? answer:" in t for t in texts)  # in-context
    assert not any(m in t for t in texts for m in HELD_OUT_MARKERS)


def test_held_out_keys_are_the_fine_tuning_formats():
    assert toy_tasks.HELD_OUT_KEYS == ("rte", "wmt14_en_fr")
    assert set(toy_tasks.in_context_keys()) == {
        "cb",
        "wic",
        "triviaqa",
        "web_questions",
        "wmt16_en_de",
        "wmt16_en_ro",
        "xsum",
        "wikilingua_en",
    }


def test_span_corruption_round_trip():
    rng = random.Random(0)
    text = " ".join(f"w{i}" for i in range(40))
    inputs, targets = corpus.span_corrupt(text, rng)
    # Filling each sentinel with its span gives the text back.
    spans = {}
    pieces = targets.split()
    current = None
    for p in pieces:
        if p.startswith("<extra_id_"):
            current = p
            spans[current] = []
        else:
            spans[current].append(p)
    rebuilt = " ".join(" ".join(spans[w]) if w in spans else w for w in inputs.split())
    assert " ".join(rebuilt.split()) == text
    n_noise = sum(len(v) for v in spans.values())
    assert n_noise == round(40 * corpus.NOISE_DENSITY)


def test_toy_vocabulary_layout():
    vocab = toy_vocabulary()
    assert vocab.pad_id == 0 and vocab.eos_id == 1 and vocab.unk_id == 2
    assert vocab.extra_ids == 100
    assert vocab.vocab_size == 2000 + 100
    ids = vocab.encode("Q: Where does Kalo live? A: <extra_id_0>")
    assert ids[-1] == vocab.vocab_size - 1  # <extra_id_0> is the last id, as in T5/mT5
    assert vocab.decode(vocab.encode("Translate English to German: The red cat.")) == (
        "Translate English to German: The red cat."
    )


@pytest.mark.slow
def test_build_vocab_reproduces_shipped_model(tmp_path):
    from promot_tasks.toy_world import build_vocab
    from promot_tasks.vocabularies import TOY_VOCAB_PATH

    out = tmp_path / "toy.model"
    build_vocab.main(["--out", str(out)])
    with open(TOY_VOCAB_PATH, "rb") as f:
        assert out.read_bytes() == f.read()


def test_mention_target_is_a_new_format_and_held_out():
    """toy_mention's labels are never the answer of a suite task, it is not pretrained on
    nor in the vocabulary's text, its label does not depend on the claim's truth, and the
    shuffled control's labels do not depend on the input."""
    import promot_tasks  # noqa: F401
    from promot_tasks import catalogue
    from promot_tasks.toy_world import families, toy_tasks

    info = catalogue.task_info("toy_mention")
    assert info.labels == ("near", "behind") and info.is_fine_tune_target
    suite_answers = set()
    for key in toy_tasks.in_context_keys():
        for split in families.generate_splits(key).values():
            suite_answers |= {str(r["answer"]).lower() for r in split}
    assert not suite_answers & {"near", "behind"}
    members = {name for name, _ in toy_tasks.pretraining_members("toy")}
    assert not any("mention" in m for m in members)
    assert not families.TOY_FAMILIES["mention"].in_vocabulary
    world = make_world(0)

    def relations(text):  # which relations' values a sentence names
        words = {w.strip(".") for w in text.split()}
        return {r for r in ("city", "job", "pet", "color") if words & set(world.values(r))}

    def mentioned(r):
        (claim,) = relations(r["hypothesis"])
        return claim in relations(r["premise"])

    records = families.generate_splits("mention")["train"]
    assert 0.4 < np.mean([r["answer"] == "near" for r in records]) < 0.6
    assert all(mentioned(r) == (r["answer"] == "near") for r in records)
    truth = [world.facts[r["premise"].split()[0]] for r in records]  # claims true or false
    assert 0.3 < np.mean([any(v in r["hypothesis"] for v in t.values()) for r, t in
                          zip(records, truth, strict=True)]) < 0.95  # fmt: skip
    shuffled = families.generate_splits("mention_shuffled")["train"]
    agree = np.mean([mentioned(r) == (r["answer"] == "near") for r in shuffled])
    assert 0.4 < agree < 0.6


def test_output_kinds_of_each_suite_family():
    from promot_tasks.toy_world import families, formats

    for key in ("cb", "wic", "triviaqa", "web_questions", "wmt16_en_de", "wmt16_en_ro", "xsum",
                "wikilingua_en", "mention"):  # fmt: skip
        for r in families.generate_splits(key)["validation"][:50]:
            assert formats.output_kind(key, str(r["answer"]), None) == "own", key
        assert formats.output_kind(key, "near.", ("near", "behind")) == "label"
        assert formats.output_kind(key, "  ", ("near", "behind")) == "empty"
    assert formats.output_kind("triviaqa", "True", ("near", "behind")) == "other"
    assert formats.output_kind("wmt16_en_de", "the cat sees a dog", None) == "other"
    assert formats.output_kind("xsum", "The farmer went home.", None) == "other"
    assert formats.output_kind("cb", "True", ("True", "False")) == "label"  # RTE: label first
