"""Mixtures (DMT rates, multi-task task ids), JSONL sources and bad input."""

from __future__ import annotations

import json

import pytest
import seqio

import promot_tasks
from promot_jax import cli
from promot_tasks import catalogue, dmt_tasks, mixtures, pipeline, sources
from promot_tasks.toy_world.families import DEFAULT_CONFIG


def test_toy_dmt_stage2_rates_match_k():
    k = 1 / 256
    stage1 = seqio.get_mixture_or_task("toy_dmt_stage1")
    stage2 = seqio.get_mixture_or_task("toy_dmt_stage2")
    n = DEFAULT_CONFIG.n_train
    assert {t.name: stage1.get_rate(t) for t in stage1.tasks} == {"toy_math": n, "toy_code": n}
    rates = {t.name: stage2.get_rate(t) for t in stage2.tasks}
    assert rates == pytest.approx({"toy_general": n, "toy_math": k * n, "toy_code": k * n})
    # Domain share of stage 2 = k * domain / (general + k * domain).
    assert (rates["toy_math"] + rates["toy_code"]) / sum(rates.values()) == pytest.approx(
        2 * k / (1 + 2 * k)
    )


@pytest.mark.parametrize("k", [1.0, 1 / 4, 1 / 64])
def test_dmt_builder_rates_for_any_k(k):
    _, stage2 = mixtures.dmt_mixtures(
        ["toy_math"], ["toy_general", "toy_code"], k=k, name=f"test_dmt_{int(1 / k)}"
    )
    rates = {t.name: stage2.get_rate(t) for t in stage2.tasks}
    assert rates["toy_math"] / rates["toy_general"] == pytest.approx(k)
    assert rates["toy_code"] == rates["toy_general"]


@pytest.mark.parametrize("k", [0, -0.5, 1.5, 2])
def test_dmt_k_outside_unit_interval_fails(k):
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\]"):
        mixtures.dmt_mixtures(["toy_math"], ["toy_general"], k=k, name="test_dmt_bad")


def test_dmt_unknown_task_names_closest():
    with pytest.raises(ValueError, match="toy_math"):
        mixtures.dmt_mixtures(["toy_mth"], ["toy_general"], name="test_dmt_unknown")


def test_multitask_examples_carry_task_ids():
    mixture = seqio.get_mixture_or_task("toy_multitask_rte_en_fr")
    ds = mixture.get_dataset(
        {"inputs": 256, "targets": 64},
        split="validation",
        shuffle=True,
        seed=3,
        copy_pretokenized=True,
    )
    seen = {}
    for ex in ds.take(40).as_numpy_iterator():
        text = ex["inputs_pretokenized"].decode()
        seen.setdefault(int(ex["task_id"][0]), set()).add(
            "rte" if "Is it true or false? answer:" in text else "en_fr"
        )
    assert seen == {0: {"rte"}, 1: {"en_fr"}}
    real = seqio.get_mixture_or_task("promot_multitask_rte_en_fr")
    assert [t.name for t in real.tasks] == [
        "promot_multitask_rte_en_fr_promot_rte",
        "promot_multitask_rte_en_fr_promot_wmt14_en_fr",
    ]


def test_tasks_by_id_are_the_multitask_mixture_s_in_task_id_order():
    assert mixtures.tasks_by_id("toy_multitask_rte_en_fr") == ("toy_rte", "toy_wmt14_en_fr")
    assert mixtures.tasks_by_id("promot_multitask_rte_en_fr") == (
        "promot_rte",
        "promot_wmt14_en_fr",
    )
    assert mixtures.tasks_by_id("toy_rte") == () == mixtures.tasks_by_id("toy_pretrain")


def test_the_task_id_converter_puts_each_example_s_task_id_before_its_inputs():
    """The conversion our runner's batches and T5X's multi-task gin share (batches.py)."""
    from promot_jax import batches

    lengths = {"inputs": 64, "targets": 16}
    converter = batches.task_id_feature_converter()

    def dataset(name, feature_converter):
        return seqio.get_dataset(
            name,
            lengths,
            dataset_split="validation",
            shuffle=False,
            feature_converter=feature_converter,
        )

    ds = dataset("toy_multitask_rte_en_fr", converter)
    raw = dataset("toy_multitask_rte_en_fr", seqio.PassThroughFeatureConverter())
    ids = set()
    pairs = zip(ds.take(12).as_numpy_iterator(), raw.take(12).as_numpy_iterator(), strict=True)
    for ex, plain in pairs:
        assert ex["encoder_input_tokens"].shape == (65,)  # one more: no input token is lost
        assert ex["encoder_input_tokens"][0] == plain["task_id"][0]
        n = len(plain["inputs"])
        assert list(ex["encoder_input_tokens"][1 : n + 1]) == list(plain["inputs"])
        ids.add(int(plain["task_id"][0]))
    assert ids == {0, 1}
    with pytest.raises(ValueError, match="packing cannot be combined"):
        batches.task_id_feature_converter(pack=True)
    with pytest.raises(ValueError, match="has no 'task_id' feature"):
        dataset("toy_rte", converter)


def test_seqio_s_evaluator_reads_a_multitask_mixture_with_the_task_id_converter():
    """What T5X's inference evaluation does first: cache and measure every output feature
    of each task (a rank-0 task id failed there: IndexError), then convert with our converter."""
    from promot_jax import batches

    evaluator = seqio.Evaluator(
        "toy_multitask_rte_en_fr",
        feature_converter=batches.task_id_feature_converter(),
        eval_split="validation",
        num_examples=4,
        use_memory_cache=False,
    )
    assert sorted(t.name for t in evaluator.eval_tasks) == [
        "toy_multitask_rte_en_fr_toy_rte",
        "toy_multitask_rte_en_fr_toy_wmt14_en_fr",
    ]
    for task, ds in evaluator.cached_model_datasets.items():
        _, first = next(ds.as_numpy_iterator())  # (index, features)
        assert first["encoder_input_tokens"][0] == int(task.endswith("en_fr")), task


def test_unknown_task_name_lists_closest():
    with pytest.raises(ValueError, match="closest registered: toy_rte"):
        mixtures.get_task_or_mixture("toy_rtee")
    with pytest.raises(ValueError, match="promot_cb_1shot"):
        promot_tasks.task_info("promot_cb_1sht")


def test_cli_unknown_name_exits_2_with_suggestions(capsys):
    assert cli.main(["tasks", "show", "promot_cb_4sht"]) == 2
    assert "promot_cb_4shot" in capsys.readouterr().err


def test_cli_list_and_show(capsys):
    assert cli.main(["tasks", "list", "^toy_rte"]) == 0
    out = capsys.readouterr().out
    assert "toy_rte_1shot" in out and "labels=True/False" in out
    assert cli.main(["tasks", "show", "toy_rte", "--split", "validation", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== toy_rte [validation]") == 2
    assert "Is it true or false? answer:" in out and "inputs ids: [" in out


def test_catalogue_declares_label_sets():
    assert promot_tasks.task_info("promot_rte").labels == ("True", "False")
    assert promot_tasks.task_info("toy_rte").labels == ("True", "False")
    assert promot_tasks.task_info("promot_cb_4shot").labels == ("True", "False", "Neither")
    assert promot_tasks.task_info("promot_triviaqa_1shot").labels is None
    assert promot_tasks.task_info("promot_rte_1shot").is_fine_tune_target
    assert promot_tasks.task_info("promot_xsum_1shot").metric == "rouge2"
    for name, info in catalogue.CATALOGUE.items():
        assert info.name == name
        if info.family in ("entailment2", "entailment3", "wic", "mcqa"):
            assert info.labels, name


def _write(tmp_path, rows):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_code_alpaca_and_sharegpt_jsonl(tmp_path):
    path = _write(
        tmp_path,
        [
            {"instruction": "Add.", "input": "1 2", "output": "3"},
            {"instruction": "Hi.", "input": "", "output": "print(1)"},
        ],
    )
    assert sources.read_code_alpaca(path) == [
        {"instruction": "Add.\n1 2", "answer": "3"},
        {"instruction": "Hi.", "answer": "print(1)"},
    ]
    path = _write(
        tmp_path,
        [
            {
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello"},
                    {"from": "human", "value": "Bye"},
                    {"from": "gpt", "value": "Ciao"},
                ]
            }
        ],
    )
    assert sources.read_sharegpt(path) == [
        {"dialogue": "User: Hi", "answer": "Hello"},
        {"dialogue": "User: Hi Assistant: Hello User: Bye", "answer": "Ciao"},
    ]
    task = dmt_tasks.register_sharegpt(path, name="test_sharegpt")
    assert task.num_input_examples("train") == 2


def test_jsonl_missing_field_names_file_line_field(tmp_path):
    path = _write(
        tmp_path,
        [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "output": "b"}],
    )
    with pytest.raises(ValueError, match=rf"{path}:2: record has no field 'input'"):
        sources.read_code_alpaca(path)
    path = _write(tmp_path, [{"conversations": [{"from": "human", "value": "x"}, {"from": "gpt"}]}])
    with pytest.raises(ValueError, match=rf"{path}:1: .*'conversations\[1\]\.value'"):
        dmt_tasks.register_sharegpt(path, name="test_sharegpt_bad")


def test_sentinel_template_with_sentinel_free_vocabulary_fails_at_registration():
    features = {
        "inputs": seqio.Feature(seqio.PassThroughVocabulary(size=100)),
        "targets": seqio.Feature(seqio.PassThroughVocabulary(size=100)),
    }
    source = sources.records_source(
        lambda: {"train": [{"question": "q", "answer": "a"}]}, {"train": 1}
    )
    with pytest.raises(ValueError, match="extra_ids=0"):
        pipeline.register_task(
            "test_no_sentinels",
            source=source,
            adapter=lambda d: d,
            family="qa",
            output_features=features,
            sentinel=True,
        )
    assert "test_no_sentinels" not in seqio.TaskRegistry.names()
