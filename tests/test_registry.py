"""The registry's one vocabulary: family / role / tag filters, shared field names with their old
spellings, idempotent registration, and `edgebvit models --family`."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import edgebvit  # noqa: F401
import edgebvit.models as zoo
from edgebvit.cli import cli
from edgebvit.errors import ModelError
from edgebvit.models.registry import register_model, resolve_config
from edgebvit.training.data import normalize

SHARED_FIELDS = {"input_shape", "num_classes", "patch_size", "embed_dims", "depths", "num_heads", "mlp_ratios",
                 "fp_downsample"}


def test_both_families_share_one_vocabulary():
    for family in ("binaryvit", "bhvit"):
        names = zoo.list_models(family=family)
        assert names and all(zoo.get_model_info(n).family == family for n in names)
        config = zoo.get_model_info(names[0]).config
        assert SHARED_FIELDS <= {f.name for f in dataclasses.fields(config)}
        assert callable(config.validate)


def test_filters_by_family_role_and_tag():
    assert set(zoo.families()) == {"binaryvit", "bhvit", "cnn"}
    assert zoo.list_models(family="bhvit", tag="32x32") == ["bhvit_tiny_32", "bhvit_small_32", "bhvit_tiny_32_gsb",
                                                            "bhvit_tiny_32_recu"]
    literature = zoo.list_models(tag="literature")
    assert literature and all(zoo.get_model_info(n).family == "binaryvit" for n in literature)
    ladder = zoo.list_models("binaryvit_deit_s*", tag="ladder")
    assert ladder == ["binaryvit_deit_s_cls_224", "binaryvit_deit_s_gap_224", "binaryvit_deit_s_pool_224",
                      "binaryvit_deit_s_224"]
    teachers = zoo.list_models(role="teacher")
    assert "cnn_small_32" in teachers and not set(teachers) & set(zoo.list_models(role="student"))
    # every variant carries at least one tag, so `--tag` can reach every one of them
    assert all(zoo.get_model_info(n).tags for n in zoo.list_models())


def test_old_field_spellings_map_to_the_shared_names():
    assert resolve_config("binaryvit_tiny_32", embed_dim=64, depth=2) == resolve_config(
        "binaryvit_tiny_32", embed_dims=64, depths=2)
    assert resolve_config("bhvit_tiny_32", stem_patch=4, dims=(64, 128, 256, 512)).patch_size == 4
    with pytest.raises(ModelError, match="has no option embed_dimz"):
        resolve_config("binaryvit_tiny_32", embed_dimz=64)


def test_registration_is_idempotent_but_refuses_a_different_definition():
    info = zoo.get_model_info("cnn_small_32")
    again = register_model(info.name, family=info.family, config=info.config, build=info.build,
                           description=info.description, role=info.role, tags=info.tags)
    assert again is info
    with pytest.raises(ValueError, match="registered twice"):
        register_model(info.name, family=info.family, config=dataclasses.replace(info.config, dropout=0.5),
                       build=info.build, description=info.description, role=info.role, tags=info.tags)


def test_normalize_is_one_definition_for_arrays_and_tensors():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    a = normalize(x)
    b = normalize(tf.constant(x)).numpy()
    assert a.dtype == np.float32 and a.min() == -1.0 and a.max() == 1.0
    np.testing.assert_array_equal(a, b)


def test_models_cli_filters_by_family():
    res = CliRunner().invoke(cli, ["models", "--family", "bhvit", "--no-counts"])
    assert res.exit_code == 0, res.output
    rows = [ln.split()[0] for ln in res.output.splitlines()[1:]]
    assert rows == zoo.list_models(family="bhvit")
    bad = CliRunner().invoke(cli, ["models", "--family", "resnet", "--no-counts"])
    assert bad.exit_code == 2 and "unknown family 'resnet'" in bad.output
