"""Shared test fixtures. `import edgebvit` first: it selects tf_keras before TensorFlow loads."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgebvit  # noqa: F401

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def run_cli(*args, cwd=None, timeout=900):
    """Run the real `edgebvit` CLI in a subprocess, as a user would; returns CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "edgebvit", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )


@pytest.fixture(scope="session")
def fashion_mnist_available():
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (CI installs it)")
    return FASHION_MNIST_DIR


# The zoo-wide combined conversions (every BinaryViT variant, the BHViT ImageNet+32x32 models in
# one flatbuffer) take 4-15 minutes of conversion on 2 cores and were not yet verified green in a
# full run; they run only when asked for, e.g. `EDGEBVIT_HEAVY_TESTS=1 make test`.
heavy = pytest.mark.skipif(
    not os.environ.get("EDGEBVIT_HEAVY_TESTS"),
    reason="zoo-wide combined LCE conversion; set EDGEBVIT_HEAVY_TESTS=1 to run",
)
