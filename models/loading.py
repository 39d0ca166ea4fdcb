"""The one way edgebvit loads a saved Keras model: no Python code from the file ever runs.

Keras's own ``safe_mode`` covers only the ``.keras`` zip format. A legacy HDF5 model (``.h5``, or
any file whose *content* is HDF5, whatever its name) and a Keras SavedModel store a ``Lambda``
layer's function as marshalled Python bytecode and run it while rebuilding the model. So, before
Keras sees the file, this module:

1. detects the real format from the content, not the name: the zip magic (``.keras``), the HDF5
   signature (legacy ``.h5``), or a directory with ``saved_model.pb`` (SavedModel);
2. reads the model's configuration *as JSON, without deserialising it* (HDF5: the
   ``model_config`` attribute via h5py; ``.keras``: ``config.json`` in the zip; SavedModel: the
   layer metadata in ``keras_metadata.pb``) and refuses any ``Lambda`` layer, any config entry that
   carries serialised Python code (``*_type: "lambda"``, Keras's ``__lambda__`` objects, base64
   marshal or pickle payloads), and, for ``.keras``, any unregistered class or function whose
   module Keras would import by name (only Keras, TensorFlow, larq, edgebvit and the modules the
   user named with ``--import`` are trusted);
3. loads with Keras in safe mode (``safe_mode=True``, and a safe-mode scope around the legacy
   loaders as a second line of defence), with ``compile=False`` so no training config (losses,
   metrics) is deserialised.

A SavedModel's functions are TensorFlow graphs: executing them runs graph ops, not Python from
the file. Only its Keras metadata could revive Python (a Lambda's bytecode), and that is checked
in step 2 like the other formats.

Every failure is a one-line ``ModelError`` that names the file and the root cause.

One file (~440 lines): the format sniffing, the config checks and the loading must stay together,
so that no route into Keras skips a check.
"""
from __future__ import annotations

import ast
import base64
import binascii
import importlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from edgebvit.errors import EdgebvitError, ModelError

KERAS, HDF5, SAVED_MODEL = "keras", "h5", "saved_model"

ZIP_MAGIC = b"PK\x03\x04"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block in front: the superblock signature sits at 0, 512, 1024, 2048, ...
_HDF5_OFFSETS = (0,) + tuple(512 << i for i in range(12))

# Modules a `.keras` config may name for Keras to import (unregistered classes and functions).
TRUSTED_MODULE_ROOTS = ("keras", "tf_keras", "tensorflow", "larq", "edgebvit", "builtins", "numpy")

LAMBDA_ADVICE = ("edgebvit refuses to load it; rebuild the model without Lambda layers (a registered custom layer "
                 "instead, its module passed with --import) and save it again, preferably in .keras format")


# ---- errors ----------------------------------------------------------------------------------

_BOILERPLATE_TAILS = ("Full object config:", "Full config:", "Received config=", "Call arguments received",
                      "Please ensure you are using a `keras.utils.custom_object_scope`")
_CONFIG_DUMP = re.compile(r"\s*(?:using |with |Received: )?config=[{\[].*$")
_TUPLE_OF_STRINGS = re.compile(r"^\((?:'[^']*'|\"[^\"]*\"|[-\w.]+)(?:, (?:'[^']*'|\"[^\"]*\"|[-\w.]+))+\)$")


def root_cause(err: BaseException, *, limit: int = 300) -> str:
    """The root cause of `err` as one trimmed line (Keras buries it after its boilerplate).

    Follows ``__cause__`` (and ``__context__`` unless suppressed) to the innermost exception, drops
    Keras's boilerplate (``Exception encountered when calling layer ...``, config dumps, the
    call-argument listing), keeps the outermost message's first clause as context when it adds
    something (``Error when deserializing class 'X': <cause>``) and cuts to `limit` characters.
    """
    chain: List[BaseException] = []
    e: Optional[BaseException] = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    texts = [t for t in (_clean_message(x) for x in chain) if t]
    if not texts:
        return type(err).__name__
    outer, inner = texts[0], texts[-1]
    if len(texts) == 1 or inner in outer:
        return _cut(outer, limit)
    head = _head(outer)
    if head and head not in inner:
        return _cut(f"{head}: {inner}", limit)
    return _cut(inner, limit)


def one_line(message: str, *, limit: int = 300) -> str:
    """A (Keras or converter) error message as one trimmed line, boilerplate dropped."""
    return _cut(_clean_text(message), limit)


def _head(text: str) -> str:
    """The first clause of a message: context for an inner cause."""
    head = re.split(r"(?<=[^.])\.\s|:\s", text, maxsplit=1)[0].rstrip(" .:")
    return head if len(head) <= 120 else ""


def _clean_message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        raw = f"KeyError {exc.args[0]!r}"
    elif len(exc.args) > 1 and all(isinstance(a, (str, int, float)) for a in exc.args):
        raw = " ".join(str(a) for a in exc.args)  # TypeError('Keyword argument not understood:', 'x')
    else:
        raw = str(exc)
    text = _clean_text(raw)
    if not text:
        return ""
    name = type(exc).__name__
    generic = ("Exception", "ValueError", "TypeError", "RuntimeError", "OSError", "IOError", "KeyError")
    return text if name in generic or text.startswith(name) else f"{name}: {text}"


def _clean_text(raw: str) -> str:
    kept: List[str] = []
    cause = ""
    for ln in (ln.strip() for ln in str(raw).strip().splitlines()):
        if not ln or ln.startswith("\u2022"):  # blank lines, Keras's "• x=..." argument bullets
            continue
        if ln.startswith("Exception encountered when calling"):
            continue  # the next line holds the reason
        if any(ln.startswith(t) for t in _BOILERPLATE_TAILS):
            break
        if ln.startswith("Exception encountered:"):
            cause = ln[len("Exception encountered:"):].strip()
            continue
        ln = _CONFIG_DUMP.sub("", ln)
        if ln:
            kept.append(ln)
    text = " ".join(kept)
    if cause:
        if _TUPLE_OF_STRINGS.match(cause):
            try:
                cause = " ".join(str(a) for a in ast.literal_eval(cause))
            except (ValueError, SyntaxError):
                pass
        text = f"{text.rstrip(' .:')}: {cause}" if text else cause
    for tail in _BOILERPLATE_TAILS:
        i = text.find(tail)
        if i > 0:
            text = text[:i].rstrip(" .,;:") + "."
    return text


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# ---- format detection --------------------------------------------------------------------------

def is_hdf5(path) -> bool:
    try:
        with open(path, "rb") as f:
            for off in _HDF5_OFFSETS:
                f.seek(off)
                head = f.read(len(HDF5_SIGNATURE))
                if len(head) < len(HDF5_SIGNATURE):
                    return False
                if head == HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def detect_format(path) -> str:
    """KERAS, HDF5 or SAVED_MODEL, from the content; ModelError for anything else."""
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return SAVED_MODEL
        raise ModelError(f"{p}: cannot load a Keras model (a directory without saved_model.pb)")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ModelError(f"{p}: cannot load a Keras model ({root_cause(err)})") from None
    if head == ZIP_MAGIC and zipfile.is_zipfile(p):
        return KERAS
    if is_hdf5(p):
        return HDF5
    raise ModelError(f"{p}: cannot load a Keras model (neither a .keras zip archive, an HDF5 file nor a "
                     "SavedModel directory)")


# ---- reading configs without deserialising them -------------------------------------------------

def read_configs(path, fmt: str) -> List[dict]:
    """The model's configuration(s) as plain JSON: nothing is deserialised, no code runs."""
    p = Path(path)
    if fmt == HDF5:
        import h5py

        try:
            with h5py.File(p, "r") as f:
                raw = f.attrs.get("model_config")
        except Exception as err:  # noqa: BLE001 - h5py raises OSError and friends
            raise ModelError(f"{p}: cannot load a Keras model ({root_cause(err)})") from None
        if raw is None:
            raise ModelError(f"{p}: cannot load a Keras model (an HDF5 file without a model_config: weights only? "
                             "export needs a whole model saved with model.save)")
        return [_json(p, raw)]
    if fmt == KERAS:
        try:
            with zipfile.ZipFile(p) as zf:
                raw = zf.read("config.json")
        except KeyError:
            raise ModelError(f"{p}: cannot load a Keras model (the zip archive has no config.json)") from None
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"{p}: cannot load a Keras model ({root_cause(err)})") from None
        return [_json(p, raw)]
    if fmt == SAVED_MODEL:
        return [_json(p, m) for m in _saved_model_metadata(p)]
    raise ValueError(fmt)


def _json(path: Path, raw) -> dict:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        obj = json.loads(raw)
    except ValueError as err:
        raise ModelError(f"{path}: cannot load a Keras model (its model config is not valid JSON: {err})") from None
    return obj if isinstance(obj, dict) else {"config": obj}


def _saved_model_metadata(path: Path) -> List[str]:
    """Each Keras object's metadata JSON (keras_metadata.pb, or the object graph of older files)."""
    meta = path / "keras_metadata.pb"
    try:
        if meta.is_file():
            from tf_keras.protobuf import saved_metadata_pb2

            pb = saved_metadata_pb2.SavedMetadata()
            pb.ParseFromString(meta.read_bytes())
            return [node.metadata for node in pb.nodes if node.metadata]
        from tensorflow.core.protobuf import saved_model_pb2

        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
        out = []
        for graph in sm.meta_graphs:
            for node in graph.object_graph_def.nodes:
                if node.WhichOneof("kind") == "user_object" and node.user_object.metadata:
                    out.append(node.user_object.metadata)
        return out
    except EdgebvitError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt protobuf
        raise ModelError(f"{path}: cannot load a Keras model ({root_cause(err)})") from None


# ---- what a config may not contain ---------------------------------------------------------------

def _looks_like_code(s: str) -> Optional[str]:
    """'marshalled bytecode' / 'a pickle' when `s` is base64 of one (how Keras and others embed code)."""
    if len(s) < 24:
        return None
    compact = "".join(s.split())
    if len(compact) % 4:
        return None
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:1] in (b"\xe3", b"c") and len(raw) >= 16:
        return "marshalled Python bytecode"
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle"
    return None


def _walk(node, layer: str) -> Iterator[Tuple[str, dict, str, object]]:
    """(enclosing layer name, dict, key, value) for every entry of every dict in the config."""
    if isinstance(node, dict):
        cfg = node.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str) and "class_name" in node:
            layer = cfg["name"]
        for key, value in node.items():
            yield layer, node, key, value
            yield from _walk(value, layer)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value, layer)


def _is_lambda_class(name) -> bool:
    return isinstance(name, str) and (name == "Lambda" or name.endswith((">Lambda", ".Lambda")))


def check_config(path, config: dict, *, fmt: str, trusted_modules: Sequence[str] = ()) -> None:
    """ModelError if loading `config` would run Python code from the file."""
    roots = set(TRUSTED_MODULE_ROOTS) | {m.split(".")[0] for m in trusted_modules}
    for layer, d, key, value in _walk(config, "(model)"):
        if key == "class_name" and _is_lambda_class(value):
            raise ModelError(f"{path} contains a Lambda layer ({_layer_name(d, layer)!r}: arbitrary Python code): "
                             f"{LAMBDA_ADVICE}")
        if key == "class_name" and value == "__lambda__":
            raise ModelError(f"{path}: layer {layer!r} carries a serialised Python lambda: {LAMBDA_ADVICE}")
        if isinstance(key, str) and key.endswith("_type") and value == "lambda":
            raise ModelError(f"{path}: layer {layer!r} carries marshalled Python code ({key[:-5]!r}): {LAMBDA_ADVICE}")
        if isinstance(value, str):
            what = _looks_like_code(value)
            if what:
                raise ModelError(f"{path}: layer {layer!r} carries {what} (in {key!r}): edgebvit refuses to load "
                                 "code from a model file; rebuild the layer as a registered custom layer")
        if fmt == KERAS and key == "module" and isinstance(value, str) and "class_name" in d:
            if value.split(".")[0] not in roots and not _registered(d):
                name = d.get("registered_name") or d.get("class_name")
                raise ModelError(f"{path}: cannot load a Keras model (its config asks Keras to import module "
                                 f"{value!r} for {name!r}; edgebvit imports no module named by a model file: pass "
                                 f"--import {value} if you trust it)")


def _layer_name(d: dict, fallback: str) -> str:
    cfg = d.get("config")
    return cfg["name"] if isinstance(cfg, dict) and isinstance(cfg.get("name"), str) else fallback


def _registered(d: dict) -> bool:
    import tensorflow as tf

    names = [d.get("registered_name"), d.get("class_name")]
    if d.get("class_name") == "function":
        names.append(d.get("config"))
    return any(isinstance(n, str) and tf.keras.utils.get_registered_object(n) is not None for n in names)


# ---- loading ---------------------------------------------------------------------------------------

def import_user_modules(modules: Sequence[str]) -> None:
    """Import the user's `--import` modules (they register custom layers and quantizers)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as err:  # noqa: BLE001 - a module may raise anything, even SystemExit
            if isinstance(err, KeyboardInterrupt):
                raise
            raise ModelError(f"--import {name}: cannot import it ({root_cause(err)}); install it or fix the module "
                             "name") from None


def _safe_mode_scope():
    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # a tf_keras without it: the config check above is the guard
        import contextlib

        return contextlib.nullcontext()
    return SafeModeScope(True)


def load_keras_model(path, *, import_modules: Sequence[str] = ()):
    """Load a whole Keras model from `path` (.keras, HDF5, SavedModel) without running code from it.

    `import_modules` are imported first (their custom objects register themselves) and are also
    trusted as modules a ``.keras`` config may name. Raises ModelError with one line otherwise.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or directory")
    fmt = detect_format(p)
    if isinstance(import_modules, str):
        import_modules = (import_modules,)
    import_user_modules(import_modules)
    import tensorflow as tf

    import larq  # noqa: F401  (registers larq's layers and quantizers for deserialisation)

    import edgebvit.models  # noqa: F401  (registers edgebvit's custom layers)

    for config in read_configs(p, fmt):
        check_config(p, config, fmt=fmt, trusted_modules=import_modules)
    try:
        with _safe_mode_scope():
            if fmt == KERAS:
                model = _load_keras_zip(p)
            elif fmt == HDF5:
                import h5py

                # An h5py.File: Keras takes the HDF5 route whatever the file is called.
                with h5py.File(p, "r") as f:
                    model = tf.keras.models.load_model(f, compile=False, custom_objects=legacy_aliases())
            else:
                model = tf.keras.models.load_model(str(p), compile=False, custom_objects=legacy_aliases())
    except EdgebvitError:
        raise
    except Exception as err:  # noqa: BLE001 - Keras raises many types for a bad file
        cause = root_cause(err)
        hint = ""
        if "Unknown" in cause or "Could not deserialize" in cause or "cannot be imported" in cause:
            hint = "; pass --import MODULE for the package that defines it"
        raise ModelError(f"{p}: cannot load a Keras model ({cause}){hint}") from None
    if not isinstance(model, tf.keras.Model):
        raise ModelError(f"{p}: not a Keras model (loaded a {type(model).__name__}); save the model with "
                         "model.save, not tf.saved_model.save")
    return model


def legacy_aliases() -> dict:
    """Objects registered as 'package>Name' under their bare 'Name', for the legacy loaders.

    HDF5 and SavedModel configs name custom classes by bare class name, and the legacy
    deserialiser looks them up only by that name, so an object registered with a package prefix
    (edgebvit's own layers and quantizers, `register_keras_serializable(package=...)` elsewhere)
    is "Unknown" there. Only unambiguous names that shadow no Keras or larq built-in are aliased;
    these are classes already imported and registered in this process, not code from the file.
    """
    import larq as lq
    import tensorflow as tf

    registered = tf.keras.utils.get_custom_objects()
    builtins = (tf.keras.layers, tf.keras.activations, tf.keras.initializers, tf.keras.constraints,
                tf.keras.regularizers, tf.keras.optimizers, tf.keras.losses, tf.keras.metrics,
                lq.layers, lq.quantizers, lq.constraints)
    found: dict = {}
    for name, obj in registered.items():
        if ">" not in name:
            continue
        bare = name.rsplit(">", 1)[-1]
        if bare in registered or any(hasattr(mod, bare) for mod in builtins):
            continue
        found.setdefault(bare, set()).add(obj)
    return {bare: next(iter(objs)) for bare, objs in found.items() if len(objs) == 1}


def _load_keras_zip(p: Path):
    import tensorflow as tf

    if p.name.endswith(".keras"):
        return tf.keras.models.load_model(str(p), compile=False, safe_mode=True)
    # A .keras archive under another name: Keras picks the format by name, so give it one.
    with tempfile.TemporaryDirectory(prefix="edgebvit-load-") as tmp:
        link = Path(tmp) / "model.keras"
        try:
            os.symlink(p.resolve(), link)
        except OSError:
            import shutil

            shutil.copyfile(p, link)
        return tf.keras.models.load_model(str(link), compile=False, safe_mode=True)
