"""What the libraries under promot-jax print that a user cannot act on, turned off by default.

TensorFlow's C++ runtime (tf.data's partial-cache notes, "failed call to cuInit" on a
machine without a GPU), tf-text's SentencePiece kernel ("precompiled_charsmap is
empty", once per vocabulary load) and absl's Python warnings from SeqIO's datasets fill
a lab's log many times over. Much of it is written by C++ straight to file descriptor 2,
before and after any logging setup, so `quiet()` also passes fd 2 through a filter that
drops exactly the lines `NOISE` describes and forwards everything else as it comes
(progress bars, tracebacks, promot-jax's own `promot-jax: warning: ...` lines).
`promot-jax --verbose` or `PROMOT_VERBOSE=1` keeps it all.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading

VERBOSE_ENV = "PROMOT_VERBOSE"

# One line each, as the libraries print them. C++ log lines look like
# "I0000 00:00:1796206631.154558    8747 cudart_stub.cc:31] ...".
_CPP = r"^[IWE]\d{4} [\d:.]+\s+\d+ "
NOISE = tuple(
    re.compile(p)
    for p in (
        _CPP + r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
        _CPP + r"cuda_(platform|executor|diagnostics)\.cc:\d+\]",
        _CPP + r"cpu_feature_guard\.cc:\d+\]",
        _CPP + r"cache_dataset_ops\.cc:\d+\] The calling iterator did not fully read",
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
        r"^normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty",
    )
)
_STARTS = ("I0", "W0", "E0", "WARNING: All log", "normalizer.cc")


def verbose_from_env() -> bool:
    value = os.environ.get(VERBOSE_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"environment variable {VERBOSE_ENV}={value!r}: use 1 (verbose) or 0")
    return value == "1"


def is_noise(line: str) -> bool:
    return any(p.match(line) for p in NOISE)


def quiet(filter_fd: bool = True) -> None:
    """Turns the libraries' noise off for this process (and the processes it starts);
    `filter_fd=False` leaves fd 2 as it is (a caller inside another program, e.g. pytest)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow loads
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    if filter_fd:
        filter_stderr()


_filter: _StderrFilter | None = None


def filter_stderr() -> None:
    """Passes this process's fd 2 through `is_noise` (once; undone at exit)."""
    global _filter
    if _filter is None:
        _filter = _StderrFilter()


class _StderrFilter:
    def __init__(self):
        sys.stderr.flush()
        self.real = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.read = read
        self.thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self.read, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = [line + b"\n" for line in lines if not is_noise(line.decode(errors="replace"))]
            # A partial line goes out now (a progress bar redraws with "\r"), unless it may
            # be the start of a noise line, which arrives whole a moment later.
            if pending and not pending.decode(errors="replace").startswith(_STARTS):
                out.append(pending)
                pending = b""
            if out:
                os.write(self.real, b"".join(out))
        if pending and not is_noise(pending.decode(errors="replace")):
            os.write(self.real, pending)

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # stderr already closed
            sys.stderr.flush()
        os.dup2(self.real, 2)  # the pipe's last writer closes: the pump drains and ends
        self.thread.join(timeout=5)
