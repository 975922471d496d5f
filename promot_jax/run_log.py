"""What a run reports while it trains: a progress bar, metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm


class RunLog:
    """Writes scalars to `run_dir/metrics.jsonl` (append-only) and TensorBoard (`run_dir/tb`).

    Only process 0 writes; the progress bar shows step, loss, tokens/s and ETA.
    """

    def __init__(self, run_dir: str | Path, total_steps: int, start_step: int, desc: str = ""):
        self.run_dir = Path(run_dir)
        self.enabled = jax.process_index() == 0
        self._writer = None
        self._jsonl = None
        self._bar = None
        if not self.enabled:
            return
        from clu import metric_writers

        self._writer = metric_writers.create_default_writer(
            str(self.run_dir / "tb"), just_logging=False, asynchronous=False
        )
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a")  # noqa: SIM115
        self._bar = tqdm(
            total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True
        )
        self._last = (time.perf_counter(), start_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self._writer.write_scalars(step, values)
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._jsonl.flush()

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
            self._jsonl.close()
