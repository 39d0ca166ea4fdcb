"""`--strategy`: tf.distribute's mirrored strategy on two logical CPUs and a two-process
multi-worker run on loopback; the replicas' trainable weights must stay identical."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# Binary (QuantizedVariables over mirrored variables) for the mirrored run; a tiny float CNN for
# the two-process run, whose two TensorFlow processes share the test machine's cores.
BINARY = {"model": "binaryvit_tiny_32",
          "model_overrides": {"depths": 1, "embed_dims": 32, "num_heads": 1, "pool_branches": [3]}}
CNN = {"model": "cnn_small_32", "model_overrides": {"widths": [8, 16], "convs_per_stage": 1}}
CFG = {"epochs": 1, "batch_size": 16, "steps_per_epoch": 3, "parity_images": 4, "optim": {"learning_rate": 1e-2}}

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import edgebvit
    import tensorflow as tf
    if sys.argv[2] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from edgebvit.training.config import RunConfig, merge
    from edgebvit.training import train

    class Record(tf.keras.callbacks.Callback):
        # Per-replica copies of every trainable variable, before and after training.
        def snapshot(self):
            out = []
            for v in self.model.student.trainable_variables:
                v = getattr(v, "latent_variable", v)
                out.append([np.array(x.numpy()) for x in getattr(v, "values", (v,))])
            return out
        def on_train_begin(self, logs=None):
            self.before = self.snapshot()
        def on_train_end(self, logs=None):
            after = self.snapshot()
            replicas = len(after[0])
            spread = max(float(np.max(np.abs(r - copies[0]))) for copies in after for r in copies)
            moved = max(float(np.max(np.abs(a[0] - b[0]))) for a, b in zip(after, self.before))
            np.savez(sys.argv[1] + "/weights.npz", *[copies[0] for copies in after])
            with open(sys.argv[1] + "/replicas.json", "w") as f:
                json.dump({"replicas": replicas, "spread": spread, "moved": moved,
                           "in_sync": self.model.distribute_strategy.num_replicas_in_sync}, f)

    cfg = merge(RunConfig(), json.loads(sys.argv[3]))
    train(cfg, sys.argv[1], extra_callbacks=(Record(),), verbose=2)
""")


def _launch(tmp_path, run, strategy, data, model, env_extra=None):
    script = tmp_path / "dist.py"
    script.write_text(SCRIPT)
    cfg = {**CFG, **model, "data": str(data), "strategy": strategy}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(script), str(run), strategy, json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_mirrored_on_two_logical_cpus_keeps_replicas_identical(tmp_path, data):
    run = tmp_path / "mirrored"
    proc = _launch(tmp_path, run, "mirrored", data, BINARY)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    rec = json.loads((run / "replicas.json").read_text())
    assert rec["replicas"] == 2 and rec["in_sync"] == 2
    assert rec["moved"] > 0  # it trained
    assert rec["spread"] == 0.0  # and both replicas hold the very same weights
    summary = json.loads((run / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["optimizer_steps"] == 3
    assert "8 images per replica" in out


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_on_loopback_keeps_workers_identical(tmp_path, data):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(_launch(tmp_path, tmp_path / f"worker{i}", "multi_worker", data, CNN, {"TF_CONFIG": tf_config}))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    recs = [json.loads((tmp_path / f"worker{i}" / "replicas.json").read_text()) for i in range(2)]
    assert all(r["in_sync"] == 2 and r["moved"] > 0 for r in recs)
    w0 = np.load(tmp_path / "worker0" / "weights.npz")
    w1 = np.load(tmp_path / "worker1" / "weights.npz")
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k])
    assert json.loads((tmp_path / "worker0" / "summary.json").read_text())["replicas"] == 2


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    import edgebvit  # noqa: F401
    from edgebvit.errors import EdgebvitError
    from edgebvit.training import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(EdgebvitError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(EdgebvitError, match="not valid JSON"):
        make_strategy("multi_worker")
