"""Issue #18, models/loading.py: the one safe loader. No code from a model file ever runs.

Each test builds a tiny model, saves it in the format under test and loads it through
`edgebvit.models.loading.load_keras_model` (what export and the teacher loader use).
"""
import json
import shutil
import sys
import zipfile

import numpy as np
import pytest

import edgebvit  # noqa: F401
from edgebvit.errors import EdgebvitError, ModelError


def _lambda_model(marker):
    """Dense -> Lambda whose function creates `marker`: it runs whenever Keras rebuilds the model."""
    import tensorflow as tf

    fn = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307 - the attack under test
    x = tf.keras.Input((4,))
    return tf.keras.Model(x, tf.keras.layers.Lambda(fn, name="payload")(tf.keras.layers.Dense(2)(x)))


def _save(model, path, marker, **kwargs):
    model.save(path, **kwargs)
    if marker.exists():
        marker.unlink()  # building/saving the model ran the lambda here, in the test: that is fine


@pytest.fixture()
def lambda_h5(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "lambda.h5"
    _save(_lambda_model(marker), path, marker)
    return path, marker


def test_hdf5_lambda_is_refused_without_running_it(lambda_h5):
    from edgebvit.models.loading import load_keras_model

    path, marker = lambda_h5
    with pytest.raises(ModelError) as err:
        load_keras_model(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path} contains a Lambda layer")
    assert "'payload'" in msg and "arbitrary Python code" in msg and "edgebvit refuses to load it" in msg
    assert not marker.exists()


def test_hdf5_content_under_a_keras_name_is_detected(lambda_h5, tmp_path):
    """Keras picks the format by name for .keras and by content otherwise: edgebvit by content always."""
    from edgebvit.models.loading import HDF5, detect_format, load_keras_model

    path, marker = lambda_h5
    disguised = tmp_path / "model.keras"
    shutil.copyfile(path, disguised)
    assert detect_format(disguised) == HDF5
    with pytest.raises(ModelError, match="contains a Lambda layer"):
        load_keras_model(disguised)
    assert not marker.exists()


def test_safe_mode_holds_even_if_the_config_check_missed_it(lambda_h5, monkeypatch):
    """Second line of defence: the legacy HDF5 loader runs inside Keras's safe-mode scope."""
    import edgebvit.models.loading as loading

    path, marker = lambda_h5
    monkeypatch.setattr(loading, "check_config", lambda *a, **k: None)
    with pytest.raises(ModelError, match="cannot load a Keras model .*deserialization of a Lambda layer"):
        loading.load_keras_model(path)
    assert not marker.exists()


def test_keras_zip_lambda_is_refused(tmp_path):
    from edgebvit.models.loading import load_keras_model

    marker = tmp_path / "MARKER"
    path = tmp_path / "lambda.keras"
    _save(_lambda_model(marker), path, marker)
    with pytest.raises(ModelError, match="contains a Lambda layer"):
        load_keras_model(path)
    assert not marker.exists()


@pytest.mark.slow
def test_savedmodel_lambda_is_refused(tmp_path):
    """A Keras SavedModel revives layers from their config too: its Lambda bytecode would run."""
    from edgebvit.models.loading import load_keras_model

    marker = tmp_path / "MARKER"
    path = tmp_path / "lambda_savedmodel"
    _save(_lambda_model(marker), str(path), marker, save_format="tf")
    with pytest.raises(ModelError, match="contains a Lambda layer"):
        load_keras_model(path)
    assert not marker.exists()


def test_marshalled_code_anywhere_in_a_config_is_refused(tmp_path):
    import base64
    import marshal

    from edgebvit.models.loading import check_config

    code = base64.b64encode(marshal.dumps((lambda: 1).__code__)).decode()
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "Custom", "config": {"name": "c", "hook": code}}]}}
    with pytest.raises(ModelError, match="'c' carries marshalled Python bytecode"):
        check_config(tmp_path / "m.h5", cfg, fmt="h5")
    cfg["config"]["layers"][0]["config"] = {"name": "w", "visitor": "x", "visitor_type": "lambda"}
    with pytest.raises(ModelError, match="'w' carries marshalled Python code"):
        check_config(tmp_path / "m.h5", cfg, fmt="h5")


def test_keras_config_may_not_make_keras_import_a_module(tmp_path, monkeypatch):
    """tf_keras imports any module a .keras config names (for unregistered classes), safe mode or not."""
    import tensorflow as tf

    from edgebvit.models.loading import load_keras_model

    marker = tmp_path / "IMPORTED"
    (tmp_path / "trust_evil_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    x = tf.keras.Input((4,))
    path = tmp_path / "evil.keras"
    tf.keras.Model(x, tf.keras.layers.Dense(2, name="d")(x)).save(path)
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    cfg = json.loads(files["config.json"])
    for layer in cfg["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer.update(module="trust_evil_mod", class_name="Evil", registered_name=None)
    files["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(ModelError) as err:
        load_keras_model(path)
    assert "import module 'trust_evil_mod'" in str(err.value) and "--import trust_evil_mod" in str(err.value)
    assert not marker.exists() and "trust_evil_mod" not in sys.modules


def test_load_error_names_the_root_cause(tmp_path):
    """Keras's message starts with a config dump and ends with the cause: the cause must survive."""
    import tensorflow as tf

    from edgebvit.models.loading import load_keras_model

    @tf.keras.utils.register_keras_serializable(package="trusttest")
    class BadConfig(tf.keras.layers.Layer):
        def get_config(self):
            return {**super().get_config(), "bogus": 1}

        def call(self, x):
            return x

    x = tf.keras.Input((4,))
    m = tf.keras.Model(x, BadConfig()(x))
    for name in ("bad.keras", "bad.h5"):
        m.save(tmp_path / name)
        with pytest.raises(ModelError) as err:
            load_keras_model(tmp_path / name)
        msg = str(err.value)
        assert "cannot load a Keras model" in msg and "BadConfig" in msg
        assert "Keyword argument not understood" in msg and "bogus" in msg, msg
        assert "config=" not in msg and "\n" not in msg


def test_import_modules_make_a_foreign_model_loadable(tmp_path, monkeypatch):
    """Quantizers and layers from another code base: --import MODULE registers them first."""
    import tensorflow as tf
    from tf_keras.src.saving import object_registration

    from edgebvit.models.loading import load_keras_model

    source = (
        "import tensorflow as tf\n"
        "@tf.keras.utils.register_keras_serializable(package='trust_foreign')\n"
        "class Doubler(tf.keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n"
    )
    (tmp_path / "trust_foreign_layers.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {}
    exec(compile(source, "trust_foreign_layers.py", "exec"), namespace)  # noqa: S102 - builds the file to load
    x = tf.keras.Input((4,))
    path = tmp_path / "foreign.h5"
    tf.keras.Model(x, namespace["Doubler"]()(x)).save(path)
    # Forget the registration, as in a fresh process that never imported the other code base.
    object_registration._GLOBAL_CUSTOM_OBJECTS.pop("trust_foreign>Doubler", None)
    object_registration._GLOBAL_CUSTOM_NAMES.pop(namespace["Doubler"], None)

    with pytest.raises(ModelError) as err:
        load_keras_model(path)
    assert "Doubler" in str(err.value) and "--import MODULE" in str(err.value)
    model = load_keras_model(path, import_modules=("trust_foreign_layers",))
    np.testing.assert_allclose(model(np.ones((1, 4), np.float32)), 2.0)
    with pytest.raises(ModelError, match=r"--import trust_no_such_module_xyz: cannot import it \(.*No module named"):
        load_keras_model(path, import_modules=("trust_no_such_module_xyz",))


def test_not_a_model_file_is_one_line(tmp_path):
    import tensorflow as tf

    from edgebvit.models.loading import load_keras_model

    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 64)
    weights = tmp_path / "w.h5"
    x = tf.keras.Input((3,))
    tf.keras.Model(x, tf.keras.layers.Dense(2)(x)).save_weights(weights)
    for path, want in ((junk, "neither a .keras zip archive"), (weights, "without a model_config"),
                       (tmp_path / "missing.keras", "no such file")):
        with pytest.raises(ModelError, match=want):
            load_keras_model(path)


def test_teacher_run_with_hdf5_lambda_is_refused(lambda_h5, tmp_path):
    """`edgebvit train --teacher RUN`: a run whose model.keras is really HDF5 with a Lambda."""
    from edgebvit.training.distill import load_teacher

    path, marker = lambda_h5
    run = tmp_path / "teacher_run"
    run.mkdir()
    shutil.copyfile(path, run / "model.keras")
    with pytest.raises(EdgebvitError) as err:
        load_teacher(str(run), input_shape=(4,), num_classes=2)
    assert isinstance(err.value, ModelError) and "contains a Lambda layer" in str(err.value)
    assert not marker.exists()


def test_hdf5_with_package_registered_layers_loads(tmp_path):
    """edgebvit registers its layers as 'edgebvit>Name'; legacy HDF5 configs name them bare."""
    import larq as lq
    import tensorflow as tf

    from edgebvit.models.layers import LearnableBias
    from edgebvit.models.layers.quantizers import ScaledSign
    from edgebvit.models.loading import load_keras_model

    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input((8, 8, 32))
    h = LearnableBias(name="move")(x)
    h = lq.layers.QuantConv2D(32, 1, input_quantizer="ste_sign", kernel_quantizer=ScaledSign(), use_bias=False,
                              name="bin")(h)
    m = tf.keras.Model(x, h)
    m.get_layer("move").set_weights([np.linspace(-1, 1, 32).astype(np.float32)])
    m.save(tmp_path / "edgebvit_layers.h5")
    loaded = load_keras_model(tmp_path / "edgebvit_layers.h5")
    xin = np.random.default_rng(0).normal(size=(2, 8, 8, 32)).astype(np.float32)
    np.testing.assert_allclose(loaded(xin), m(xin), rtol=1e-6)
