"""Shared test fixtures. `import edgebvit` first: it selects tf_keras before TensorFlow loads."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def randomize_bn(model, rng):
    """Trained-looking BN statistics, so logits are not near-tied at init (parity is then meaningful)."""
    import tensorflow as tf

    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, mu, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0.0, 0.3, b.shape),
                               rng.normal(0.0, 0.3, mu.shape), rng.uniform(0.5, 1.5, v.shape)])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A toy 4-class .npz dataset of 16x16 grayscale images (64 train, 16 test) for training tests."""
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(p, x_train=rng.integers(0, 256, (64, 16, 16), dtype=np.uint8), y_train=np.arange(64) % 4,
             x_test=rng.integers(0, 256, (16, 16, 16), dtype=np.uint8), y_test=np.arange(16) % 4)
    return p


@pytest.fixture(scope="session")
def fashion_mnist_available():
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (CI installs it)")
    return FASHION_MNIST_DIR


# The zoo-wide combined conversions (every BinaryViT variant in one flatbuffer, the BHViT
# ImageNet+32x32 models in another) cost about 4 + 3 minutes on 2 cores. They run by default (CI
# included); `EDGEBVIT_SKIP_HEAVY=1 make test` skips them for quick local iterations.
heavy = pytest.mark.skipif(
    bool(os.environ.get("EDGEBVIT_SKIP_HEAVY")),
    reason="zoo-wide combined LCE conversion skipped by EDGEBVIT_SKIP_HEAVY",
)
