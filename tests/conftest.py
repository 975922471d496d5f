"""Test-session settings: fast XLA compiles and one compilation cache for every process.

The suite is dominated by compiling tiny models, not by running them: LLVM's
optimisation level 0 cuts CPU compile time about threefold, and the persistent
cache lets subprocesses (the CLI, the resume and sharding tests) reuse compiles.
"""

import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "promot_jax_test_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
