"""edgebvit: train, export, verify and benchmark binary vision transformers for the edge.

Importing this package selects legacy Keras (tf_keras) *before* TensorFlow loads: larq only
works with tf_keras, and TensorFlow decides which Keras `tf.keras` is at its first import.
"""
import os as _os

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if _os.environ["TF_USE_LEGACY_KERAS"] not in ("1", "true", "True"):
    # Someone forced Keras 3; larq cannot work then, and silently mixing them corrupts models.
    raise ImportError(
        "edgebvit needs TF_USE_LEGACY_KERAS=1 (larq requires tf_keras); "
        f"it is set to {_os.environ['TF_USE_LEGACY_KERAS']!r}"
    )
# TF/XLA print CUDA-plugin registration errors at import on CPU-only hosts; they are noise here.
# Set TF_CPP_MIN_LOG_LEVEL yourself to see TensorFlow's C++ logs again.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

from edgebvit.errors import EdgebvitError  # noqa: E402  (after the environment is set)

__all__ = ["EdgebvitError", "__version__"]
