"""What a run reports while it trains: a progress bar, metrics.jsonl and TensorBoard.

In a `gs://` run directory, where an object cannot be appended to, both are kept on the
host (TensorBoard's events in a local temporary folder) and uploaded whole, each
upload atomic: at most every `SYNC_SECONDS`, before every checkpoint (`flush`) and at
the end, so a resumed run finds every scalar up to its checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time

import jax
from tqdm.auto import tqdm

from promot_jax import paths, run_dirs
from promot_jax.paths import Path

METRICS_JSONL = "metrics.jsonl"
TB_DIR = "tb"
SYNC_SECONDS = 30.0  # a gs:// run directory's scalars are uploaded at most this often


def drop_records_after(run_dir: Path, step: int) -> None:
    """Removes the scalars of steps after `step` from metrics.jsonl and the TensorBoard
    event files (each rewritten atomically; files with nothing to drop are untouched)."""
    run_dir = paths.path(run_dir)
    metrics = run_dir / METRICS_JSONL
    if metrics.is_file():
        lines = metrics.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.strip() or json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            run_dirs.write_atomic(metrics, "".join(kept))
    tb = run_dir / TB_DIR
    if not tb.is_dir():
        return
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in sorted(tb.glob("events.out.tfevents.*")):
        with paths.local_copy(path) as name:
            records = list(RawEventFileLoader(name).Load())
        kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
        if len(kept) == len(records):
            continue
        buffer = io.BytesIO()
        writer = RecordWriter(buffer)
        for record in kept:
            writer.write(record)
        run_dirs.write_atomic(path, buffer.getvalue())


class RunLog:
    """Writes scalars to `run_dir/metrics.jsonl` and TensorBoard (`run_dir/tb`).

    A run resumed at `start_step` first drops what an interrupted run recorded after that
    step (it is recomputed), so both hold each step once. Only process 0 writes; the
    progress bar shows step, loss, tokens/s and ETA.
    """

    def __init__(self, run_dir: str | Path, total_steps: int, start_step: int, desc: str = ""):
        self.run_dir = paths.path(run_dir)
        self.enabled = jax.process_index() == 0
        self.remote = paths.is_remote(self.run_dir)
        self._writer = None
        self._jsonl = None
        self._bar = None
        if not self.enabled:
            return
        from clu import metric_writers

        drop_records_after(self.run_dir, start_step)
        if self.remote:
            metrics = self.run_dir / METRICS_JSONL
            self._lines = metrics.read_text().splitlines(keepends=True) if metrics.exists() else []
            self._tb_local = tempfile.mkdtemp(prefix="promot_jax_tb_")
            self._synced = time.monotonic()
        self._writer = metric_writers.create_default_writer(
            self._tb_local if self.remote else str(self.run_dir / TB_DIR),
            just_logging=False,
            asynchronous=False,
        )
        if not self.remote:
            self._jsonl = open(self.run_dir / METRICS_JSONL, "a")  # noqa: SIM115
        self._bar = tqdm(
            total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True
        )
        self._last = (time.perf_counter(), start_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self._writer.write_scalars(step, values)
        line = json.dumps({"step": step, "time": time.time(), **values}) + "\n"
        if self.remote:
            self._lines.append(line)
            if time.monotonic() - self._synced >= SYNC_SECONDS:
                self._sync()
            return
        self._jsonl.write(line)
        self._jsonl.flush()

    def flush(self) -> None:
        """Makes every scalar so far durable (a gs:// run directory's are uploaded)."""
        if self.enabled and self.remote:
            self._sync()

    def _sync(self) -> None:
        """Uploads metrics.jsonl and the TensorBoard event files whole (gs:// only)."""
        self._writer.flush()
        run_dirs.write_atomic(self.run_dir / METRICS_JSONL, "".join(self._lines))
        for root, _, names in os.walk(self._tb_local):
            for name in names:
                local = os.path.join(root, name)
                rel = os.path.relpath(local, self._tb_local)
                with open(local, "rb") as f:
                    run_dirs.write_atomic(self.run_dir / TB_DIR / rel, f.read())
        self._synced = time.monotonic()

    def progress(self, step: int, loss: float, tokens: float) -> None:
        """Advances the bar to `step`; `tokens`: target tokens since the last call."""
        if not self.enabled:
            return
        now = time.perf_counter()
        then, prev = self._last
        self._last = (now, step)
        rate = tokens / max(now - then, 1e-9)
        self._bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
        self._bar.update(step - prev)

    def close(self) -> None:
        if self.enabled:
            self._bar.close()
            self._writer.flush()
            if self.remote:
                try:
                    self._sync()
                finally:
                    self._writer.close()
                    shutil.rmtree(self._tb_local, ignore_errors=True)
            else:
                self._jsonl.close()
