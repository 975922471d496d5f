"""Nothing lost, nothing silently wrong: what promot-jax does with run directories it finds,
bad flags and bindings, damaged checkpoints and resumed records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from promot_jax import checkpoints, cli, network, run_dirs, train
from promot_jax.lab import pipeline

TINY = "--gin_file=test/tiny_promot_toy.gin"
TINY_FT = "--gin_file=test/tiny_finetune_toy.gin"


def _run(capsys, *argv) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- --force


ENTRIES = pipeline.lab_entries(["ft_rte"])


def test_force_never_touches_a_folder_promot_jax_did_not_make(tmp_path):
    foreign = tmp_path / "x"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "precious.txt").write_text("p")
    for force in (False, True):
        with pytest.raises(FileExistsError, match=r"no promot-jax marker.*precious\.txt, sub/"):
            pipeline.prepare_out_dir(foreign, {"settings": {}}, force, ENTRIES, log=print)
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt", "sub"]
    assert (foreign / "precious.txt").read_text() == "p"


def test_someones_report_is_not_taken_for_a_finished_lab(tmp_path):
    theirs = tmp_path / "y"
    theirs.mkdir()
    (theirs / "report.md").write_text("mine")
    with pytest.raises(FileExistsError, match="no promot-jax marker") as e:
        pipeline.prepare_out_dir(theirs, {"settings": {}}, False, ENTRIES, log=print)
    assert "--force" not in str(e.value)
    assert (theirs / "report.md").read_text() == "mine"
    assert [p.name for p in theirs.iterdir()] == ["report.md"]


def test_force_removes_the_labs_own_entries_and_keeps_everything_else(tmp_path):
    lab = tmp_path / "lab"
    record = {"settings": {"a": 1}}
    assert pipeline.prepare_out_dir(lab, record, False, ENTRIES, log=print) is False
    (lab / "ft_rte" / "stage1").mkdir(parents=True)
    (lab / "report.md").write_text("old report")
    (lab / "evals").mkdir()
    (lab / "notes.txt").write_text("the user's")  # put there by hand after the lab ran
    with pytest.raises(FileExistsError, match="finished lab report; pass --force"):
        pipeline.prepare_out_dir(lab, record, False, ENTRIES, log=print)
    said = []
    resumed = pipeline.prepare_out_dir(lab, {"settings": {"a": 2}}, True, ENTRIES, said.append)
    assert resumed is False
    assert sorted(p.name for p in lab.iterdir()) == sorted(
        [run_dirs.MARKER, "lab.json", "notes.txt"]
    )
    assert (lab / "notes.txt").read_text() == "the user's"
    assert json.loads((lab / "lab.json").read_text()) == {"settings": {"a": 2}}
    assert "notes.txt" in said[0]


def test_a_marker_entry_is_a_name_never_a_path(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    lab = tmp_path / "lab"
    run_dirs.claim(lab, "lab", ["../outside.txt", "report.md"], evidence="lab.json")
    run_dirs.clear(lab, "lab")
    assert outside.read_text() == "keep"


def test_unwritable_out_fails_before_anything_is_written(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="a_file is a file, not a directory"):
        pipeline.prepare_out_dir(a_file / "sub", {}, False, ENTRIES, log=print)
    with pytest.raises(ValueError, match="not writable"):
        run_dirs.check_writable("/proc/promot_jax_lab", "--out")


# --------------------------------------------------------------------------- reuse of a run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["run", TINY, f"--gin.RUN_DIR='{run}'"]) == 0
    return run


def _snapshot(run):
    return {
        str(p.relative_to(run)): p.stat().st_mtime_ns
        for p in run.rglob("*")
        if p.is_file() and "checkpoints" not in p.parts
    }


@pytest.mark.parametrize(
    ("binding", "named"),
    [
        ("TUNE_PROMPT_LR=0.5", "optimizer.learning_rate: 0.2 -> 0.5"),
        ("SEED=1", "seed: 0 -> 1"),
        ("TUNE_PROMPT_LABEL_SMOOTHING=0.3", "label_smoothing: 0.0 -> 0.3"),
        ("train.StageConfig.z_loss=0.01", "z_loss: 0.0001 -> 0.01"),
        ("TUNE_MODEL_DROPOUT=0.3", "model.dropout_rate: 0.1 -> 0.3"),
    ],
)
def test_a_finished_run_with_another_setting_is_refused_and_left_as_it_was(
    finished_run, capsys, binding, named
):
    before = _snapshot(finished_run)
    code, err = _run(capsys, "run", TINY, f"--gin.RUN_DIR='{finished_run}'", f"--gin.{binding}")
    assert code == 2
    line = _one_error_line(err)
    assert "holds a different stage" in line and named in line, line
    assert _snapshot(finished_run) == before  # config.gin included


def test_settings_that_do_not_change_the_result_may_differ(finished_run, capsys):
    before = _snapshot(finished_run)
    code, err = _run(
        capsys,
        "run",
        TINY,
        f"--gin.RUN_DIR='{finished_run}'",
        "--gin.train.StageConfig.log_every=2",
    )
    assert code == 0, err
    changed = {k for k in before if _snapshot(finished_run)[k] != before[k]}
    assert changed == {"config.gin"}  # the new invocation's config; no stage retrained


def test_lowering_steps_below_the_saved_checkpoints_is_refused(finished_run, capsys):
    code, err = _run(capsys, "run", TINY, f"--gin.RUN_DIR='{finished_run}'", "--gin.STAGE1_STEPS=2")
    assert code == 2
    assert "steps can only be raised" in _one_error_line(err)


def test_failed_validation_writes_nothing(tmp_path, capsys):
    run = tmp_path / "new"
    code, err = _run(capsys, "run", TINY, f"--gin.RUN_DIR='{run}'", "--gin.MESH_DATA=2")
    assert code == 2, err
    assert not run.exists()


def test_a_moved_experiment_still_resumes(finished_run, tmp_path, capsys):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(finished_run, moved)
    code, err = _run(capsys, "run", TINY, f"--gin.RUN_DIR='{moved}'", "--gin.STAGE2_STEPS=4")
    assert code == 0, err
    assert json.loads((moved / "stage2/stage.json").read_text())["prompt_file"] == (
        "stage1/best_prompt.npy"
    )


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--gin.RUN_DIR=runs/x", "a string needs quotes that the shell keeps"),
        ("--gin.STAGE1_STEPS=3)", "gin cannot read the value '3)'"),
        ("--gin.STAGE1_STEP=1000", "no loaded gin file uses the macro STAGE1_STEP; did you mean"),
        ("--gin.stage9/train.StageConfig.seed=1", "scope stage9"),
        ("--gin.stage2/train.StageConfig.eval_every=5", "never called in scope stage2"),
        ("--gin.train.StageConfig.label_smoothing=0.3", "a more specific binding wins"),
    ],
)
def test_bad_bindings_exit_2_with_one_line(tmp_path, capsys, flag, says):
    argv = ["run", TINY, flag]
    if not flag.startswith("--gin.RUN_DIR"):
        argv.append(f"--gin.RUN_DIR='{tmp_path / 'r'}'")
    code, err = _run(capsys, *argv)
    assert code == 2
    assert says in _one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_unwritable_out_of_every_command_exits_2_with_one_line(tmp_path, capsys, finished_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    bad = a_file / "sub"
    for argv in (
        ["lab", "--quick", "--out", str(bad)],
        ["lab", "pretrain", "--out", str(bad)],
        ["eval", "--checkpoint", str(finished_run / "stage2"), "--out", str(bad)],
        ["run", TINY, f"--gin.RUN_DIR='{bad}'"],
    ):
        code, err = _run(capsys, *argv)
        assert code == 2, argv
        assert "is a file, not a directory" in _one_error_line(err), argv


def test_flags_of_the_other_lab_action_are_refused(capsys):
    code, err = _run(capsys, "lab", "--steps", "1", "--quick", "--out", "/nonexistent/x")
    assert code == 2
    assert "--steps only apply to `promot-jax lab pretrain`" in _one_error_line(err)
    code, err = _run(capsys, "lab", "pretrain", "--quick", "--out", "/nonexistent/x")
    assert code == 2
    assert "--quick only apply to `promot-jax lab run`" in _one_error_line(err)


def test_a_bad_environment_variable_is_named(monkeypatch, tmp_path):
    from promot_tasks import dmt_tasks

    code = tmp_path / "code.jsonl"
    chat = tmp_path / "chat.jsonl"
    code.write_text("")
    chat.write_text("")
    monkeypatch.setenv(dmt_tasks.CODE_ALPACA_ENV, str(code))
    monkeypatch.setenv(dmt_tasks.SHAREGPT_ENV, str(chat))
    monkeypatch.setenv(dmt_tasks.DMT_K_ENV, "abc")
    monkeypatch.setattr(dmt_tasks, "register_code_alpaca", lambda p: type("T", (), {"name": "c"}))
    monkeypatch.setattr(dmt_tasks, "register_sharegpt", lambda p: type("T", (), {"name": "s"}))
    with pytest.raises(ValueError, match="PROMOT_DMT_K='abc' is not a number"):
        dmt_tasks.register_dmt_from_env()


# --------------------------------------------------------------------------- export-prompt


def test_export_prompt_takes_a_stage_dir_and_our_checkpoint_steps(finished_run, tmp_path, capsys):
    stage1 = finished_run / "stage1"
    best = np.load(stage1 / "best_prompt.npy")
    code, err = _run(capsys, "export-prompt", str(stage1), str(tmp_path / "a.npy"))
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), best)
    step = max(train.checkpoint_steps(stage1))
    code, err = _run(
        capsys, "export-prompt", str(stage1 / "checkpoints" / str(step)), str(tmp_path / "b.npy")
    )
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.load(stage1 / "prompt.npy"))


# --------------------------------------------------------------------------- resume


def _ft_stage(run_dir, steps, **overrides):
    settings = dict(save_every=1, keep=3, log_every=1, eval_batches=1) | overrides
    return train.StageConfig(
        method="finetune",
        mixture="toy_rte",
        model=network.mt5_config("tiny", vocab_size=2176, dtype="float32"),
        steps=steps,
        run_dir=str(run_dir),
        batch_size=2,
        feature_lengths={"inputs": 32, "targets": 4},
        **settings,
    )


def _flat_params(path):
    return checkpoints.read_flat_params(path)


def test_a_damaged_checkpoint_falls_back_to_the_newest_good_one(tmp_path, capfd):
    straight = train.train_stage(_ft_stage(tmp_path / "straight", 4))
    run = tmp_path / "damaged"
    train.train_stage(_ft_stage(run, 3))
    state = run / "checkpoints" / "3" / "state"
    victim = max((p for p in state.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(10)
    capfd.readouterr()
    resumed = train.train_stage(_ft_stage(run, 4))
    err = capfd.readouterr().err
    assert "checkpoint step 3" in err and "resuming from step 2" in err, err
    assert "Traceback" not in err
    assert (run / train.DAMAGED_DIR / "3" / "state").is_dir()  # kept, not deleted
    a, b = _flat_params(straight.final_params), _flat_params(resumed.final_params)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_when_no_checkpoint_restores_nothing_is_moved(tmp_path):
    run = tmp_path / "run"
    train.train_stage(_ft_stage(run, 2, keep=1))
    for p in (run / "checkpoints").rglob("*"):
        if p.is_file() and p.stat().st_size > 10 and "state" in p.parts:
            with open(p, "r+b") as f:
                f.truncate(10)
    with pytest.raises(ValueError, match="no checkpoint in .* restores: step 2"):
        train.train_stage(_ft_stage(run, 3, keep=1))
    assert train.checkpoint_steps(run) == [2]
    assert not (run / train.DAMAGED_DIR).exists()


def _tb_steps(tb_dir) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    return {t: [e.step for e in acc.Tensors(t)] for t in tags["tensors"]} | {
        t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]
    }


def test_a_resumed_run_records_each_step_once(tmp_path):
    run = tmp_path / "run"
    train.train_stage(_ft_stage(run, 3))
    # As if killed after logging step 3 but before saving it: the resume recomputes step 3.
    import shutil

    shutil.rmtree(run / "checkpoints" / "3")
    train.train_stage(_ft_stage(run, 4))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    tb = _tb_steps(run / "tb")
    assert tb["train/loss"] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- noise


NOISE_WORDS = ("precompiled_charsmap", "cuInit", "cudart_stub", "absl::InitializeLog")


def test_library_noise_is_off_by_default_and_back_with_verbose():
    cmd = [sys.executable, "-m", "promot_jax.cli", "tasks", "show", "toy_rte", "-n", "1"]
    env = {
        k: v for k, v in os.environ.items() if k not in ("PROMOT_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")
    }
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert not [w for w in NOISE_WORDS if w in quiet.stderr], quiet.stderr
    loud = subprocess.run([*cmd, "--verbose"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.stdout == quiet.stdout
    assert [w for w in NOISE_WORDS if w in loud.stderr], "nothing to silence: test is vacuous"


def test_the_filter_drops_only_the_listed_lines():
    program = (
        "import os, sys\n"
        "from promot_jax import library_noise\n"
        "library_noise.filter_stderr()\n"
        "os.write(2, b'normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity"
        " normalization.\\n')\n"
        "os.write(2, b'E0000 00:00:1796206634.488087    8747 cuda_platform.cc:52] failed call"
        " to cuInit: INTERNAL\\n')\n"
        "os.write(2, b'promot-jax: warning: our own\\n')\n"
        "os.write(2, b'\\r 50%|#####     | 1/2')\n"
        "print('E0000 something of its own', file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == (  # bytes: "\r" kept as the progress bar wrote it
        b"promot-jax: warning: our own\n\r 50%|#####     | 1/2E0000 something of its own\n"
    )


@pytest.mark.parametrize(
    "seeds, message",
    [
        ("1,x", "--seeds needs integers such as 10,11,12, got '1,x'"),
        ("", "--seeds needs a comma-separated list of integers"),
        ("3,,4", "--seeds needs a comma-separated list of integers"),
        ("5,5", "--seeds repeats a seed"),
        ("100,12", "seeds [100] chose the lab's settings"),
    ],
)
def test_bad_seeds_fail_before_anything_runs(capsys, tmp_path, seeds, message):
    out = tmp_path / "lab"
    try:
        code, err = _run(capsys, "lab", "--seeds", seeds, "--out", str(out))
    except SystemExit as exit_:  # argparse's own errors
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    assert message in err
    assert not out.exists()


def test_a_base_of_another_shape_fails_before_the_lab_writes(capsys, tmp_path):
    import dataclasses

    import jax

    from promot_jax import checkpoints, network
    from promot_jax.lab.config import base_model_config

    other = dataclasses.replace(base_model_config(), vocab_size=1024)  # toy vocabulary: 2176
    checkpoints.save_params(network.init_params(other, jax.random.key(0)), tmp_path / "base")
    out = tmp_path / "lab"
    code, err = _run(capsys, "lab", "--quick", "--base", str(tmp_path / "base"), "--out", str(out))
    assert code == 2
    line = _one_error_line(err)
    assert "is not a base for the lab" in line and "2176" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (("pretrain", "--size", "20m"), "unknown lab model size '20m'; the sizes are 2m, 10m"),
        (("--quick", "--size", "10m"), "--size only apply to `promot-jax lab pretrain`"),
        (("--quick", "--workers", "0"), "--workers must be >= 1, got 0"),
    ],
)
def test_a_bad_size_or_worker_count_fails_before_anything_runs(capsys, tmp_path, argv, says):
    out = tmp_path / "out"
    code, err = _run(capsys, "lab", *argv, "--out", str(out))
    assert code == 2
    assert says in _one_error_line(err)
    assert not out.exists()
