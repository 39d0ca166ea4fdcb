"""End to end on real Fashion-MNIST: train a few steps, export, run the flatbuffer in the LCE
interpreter and compare it with the Keras model, then benchmark it. Uses the public CLI."""
import json
from collections import Counter

import numpy as np
import pytest

from conftest import run_cli

DEPTH = 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, fashion_mnist_available):
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    proc = run_cli(
        "train", "--model", "binaryvit_tiny_32", "--data", "fashion_mnist",
        "--set", f"depths={DEPTH}", "--set", "embed_dims=64",
        "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "32",
        "--max-test-samples", "300", "--out", run_dir,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test accuracy" in proc.stdout
    return run_dir


def test_train_writes_the_run_directory(trained_run):
    for name in ("config.json", "model.keras", "metrics.csv", "metrics.json", "summary.json",
                 "parity_images.npz"):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "checkpoints").rglob("*.index")), "no checkpoint written"
    assert any((trained_run / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [0, 1]
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"] == "binaryvit_tiny_32" and cfg["data"] == "fashion_mnist"
    summary = json.loads((trained_run / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_images"] == 300
    with np.load(trained_run / "parity_images.npz") as z:
        assert z["x"].shape == (300, 32, 32, 1) and z["x"].dtype == np.float32
        assert -1.0 <= z["x"].min() and z["x"].max() <= 1.0  # real, normalised images
        assert len(np.unique(z["y"])) == 10


@pytest.fixture(scope="module")
def exported(trained_run):
    proc = run_cli("export", trained_run, "--tflite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return trained_run / "model.tflite"


def test_export_report_counts_binary_ops_and_parity(exported):
    report = json.loads(exported.with_suffix(".export.json").read_text())
    counts = report["inspection"]["op_counts"]
    # q, k, v, proj, fc1, fc2 of every block are binary convolutions.
    assert counts.get("LceBconv2d") == 6 * DEPTH, counts
    macs = report["inspection"]["macs"]
    assert macs["binary_share_excluding_attention"] >= 0.9
    assert macs["attention"] > 0
    assert report["parity"]["samples"] == 300
    assert report["parity"]["top1_agreement"] >= 0.99
    assert report["inspection"]["file_bytes"] == exported.stat().st_size


def test_flatbuffer_computes_what_keras_computes(trained_run, exported):
    """Independent of the export report: load both and compare on real held-out images."""
    import larq_compute_engine as lce
    import tensorflow as tf

    import edgebvit.models  # noqa: F401  (custom layers)

    model = tf.keras.models.load_model(trained_run / "model.keras", compile=False)
    with np.load(trained_run / "parity_images.npz") as z:
        x = z["x"][:100]
    keras_logits = model(x, training=False).numpy()
    interp = lce.testing.Interpreter(exported.read_bytes(), num_threads=2)
    lce_logits = np.concatenate([np.asarray(interp.predict(x[i : i + 1])) for i in range(len(x))])
    assert lce_logits.shape == keras_logits.shape == (100, 10)
    assert np.mean(lce_logits.argmax(-1) == keras_logits.argmax(-1)) >= 0.99
    assert np.max(np.abs(lce_logits - keras_logits)) < 1e-2

    from tensorflow.lite.python import schema_py_generated as schema

    fb = schema.Model.GetRootAsModel(exported.read_bytes(), 0)
    customs = Counter(
        fb.OperatorCodes(fb.Subgraphs(0).Operators(i).OpcodeIndex()).CustomCode()
        for i in range(fb.Subgraphs(0).OperatorsLength())
    )
    assert customs[b"LceBconv2d"] == 6 * DEPTH


def test_bench_writes_host_latency_json(exported):
    proc = run_cli("bench", exported, "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(exported.with_suffix(".bench.json").read_text())
    (rec,) = report["records"]
    lat = rec["latency"]
    assert lat["count"] == 5 and 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert any("reference" in n for n in rec["kernel_notes"]) or rec["facts"]["architecture"] != "x86_64"
