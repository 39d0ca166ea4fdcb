"""models/binaryvit.py: the ablation ladder as switches, config validation, and the ImageNet
configurations against the parameter counts computed from the official code (docs/papers.md 1.1)."""
import numpy as np
import pytest

import edgebvit  # noqa: F401
import larq as lq
import tensorflow as tf

import edgebvit.models as zoo
from edgebvit.errors import ModelError
from edgebvit.models import binaryvit as B
from edgebvit.models.profile import profile_model

SMALL = dict(input_shape=(16, 16, 1), num_classes=10, patch_size=4, depths=1, embed_dims=32, num_heads=1, mlp_ratios=2)
PYRAMID = dict(input_shape=(16, 16, 1), num_classes=10, patch_size=2, depths=(1, 1), embed_dims=(32, 64),
               num_heads=(1, 2), mlp_ratios=(2, 2), sr_ratios=(2, 1))


def _names(model):
    return {l.name for l in model.layers}


def test_quickstart_model_is_isotropic_row4_of_about_0_8m_binary_params():
    cfg = zoo.get_model_info("binaryvit_tiny_32").config
    assert cfg == B.BinaryViTConfig()  # the defaults are the quickstart model
    assert cfg.input_shape[:2] == (32, 32) and len(cfg.stages()) == 1
    assert (cfg.head, cfg.pool_branches, cfg.layerscale) == ("gap", (3, 5), True)
    stats = profile_model(zoo.create_model("binaryvit_tiny_32"))
    assert 0.75e6 <= stats.binary_params <= 0.85e6


@pytest.mark.parametrize("row,name", [
    (1, "binaryvit_deit_s_cls_224"), (2, "binaryvit_deit_s_gap_224"), (3, "binaryvit_deit_s_pool_224"),
    (4, "binaryvit_deit_s_224"), (5, "binaryvit_pyramid_s_224"), (6, "binaryvit_pyramid_s_224_fpmerge"),
])
def test_imagenet_ladder_rows_are_switches(row, name):
    cfg = zoo.get_model_info(name).config
    assert cfg.input_shape == (224, 224, 3) and cfg.num_classes == 1000
    assert (cfg.head == "cls") == (row == 1)
    assert bool(cfg.pool_branches) == (row >= 3)
    assert cfg.layerscale == (row >= 4)
    assert (len(cfg.stages()) == 4) == (row >= 5)
    assert cfg.fp_downsample == (row == 6)
    cfg.validate()


def test_per_stage_fields_broadcast_and_must_agree():
    specs = B.BinaryViTConfig(depths=(1, 2), embed_dims=(32, 64), num_heads=2).stages()
    assert [(s.depth, s.dim, s.heads, s.mlp_ratio) for s in specs] == [(1, 32, 2, 4), (2, 64, 2, 4)]
    assert B.BinaryViTConfig(depths=[1, 1], embed_dims=[32, 64]).stages()[1].dim == 64  # JSON lists
    with pytest.raises(ModelError, match="embed_dims has 3 values"):
        B.BinaryViTConfig(depths=(1, 1), embed_dims=(32, 64, 128)).stages()


@pytest.mark.parametrize("overrides,match", [
    (dict(head="cls", pool_branches=(3,)), "need a grid"),
    (dict(head="cls", pool_branches=(), depths=(1, 1), embed_dims=(32, 64)), "isotropic"),
    (dict(head="avg"), "head must be"),
    (dict(num_heads=3), "does not split"),
    (dict(patch_size=5), "not divisible"),
    (dict(depths=(1, 1), embed_dims=(32, 48)), "must be 64"),
    (dict(sr_ratios=3), "does not reduce"),
    (dict(spt=True, patch_size=1), "even patch"),
    (dict(attn_prob_quant="ternary"), "attn_prob_quant"),
    (dict(init="xavier"), "init must be one of trunc_normal, torch"),
])
def test_invalid_configs_are_one_line_model_errors(overrides, match):
    with pytest.raises(ModelError, match=match):
        zoo.create_model("binaryvit_tiny_32", **{**SMALL, **overrides})


def test_cls_row_carries_tokens_as_one_row_and_reads_the_class_token():
    m = zoo.create_model("binaryvit_tiny_32_cls", **SMALL)
    assert m.get_layer("cls_token").output_shape == (None, 1, 17, 32)  # 4x4 patches + cls
    assert m.get_layer("pos_embed").embedding.shape == (1, 1, 17, 32)
    assert isinstance(m.get_layer("head_cls"), zoo.binaryvit.L.TakeToken)
    names = _names(m)
    assert not any("_avg" in n or n.endswith("_ls") for n in names)  # rows 1-2: no pools, no affine
    assert "head_gap" not in names


def test_gap_pool_affine_rows_add_exactly_their_parts():
    gap, pool, affine = (_names(zoo.create_model(n, **SMALL)) for n in
                         ("binaryvit_tiny_32_gap", "binaryvit_tiny_32_pool", "binaryvit_tiny_32"))
    assert "head_gap" in gap and "cls_token" not in gap
    assert pool - gap == {f"block0_pool_avg{t}{s}" for t in ("1x3", "3x1", "1x5", "5x1") for s in ("", "_pad", "_ls")}
    assert affine - pool == {"block0_attn_ls", "block0_mlp_ls"}


def test_pyramid_has_sr_attention_and_binary_or_float_merging():
    m = zoo.create_model("binaryvit_pyramid_tiny_32", **PYRAMID)
    assert m.get_layer("stage0_block0_attn_sr_pool").output_shape == (None, 4, 4, 32)  # 8x8 / 2
    assert m.get_layer("stage0_block0_attn_k_up").output_shape == (None, 8, 8, 32)
    assert "stage1_block0_attn_sr_pool" not in _names(m)  # r = 1 in stage 2
    merge = m.get_layer("merge0_conv")
    assert isinstance(merge, lq.layers.QuantConv2D) and merge.output_shape == (None, 4, 4, 64)
    assert m.get_layer("merge0_pos_embed").embedding.shape == (1, 4, 4, 64)
    star = zoo.create_model("binaryvit_pyramid_tiny_32_fpmerge", **PYRAMID)
    assert type(star.get_layer("merge0_conv")) is tf.keras.layers.Conv2D
    assert "merge0_rprelu" not in _names(star)
    assert m.output_shape == star.output_shape == (None, 10)


def test_spt_and_lsa_switches_apply_to_any_variant():
    m = zoo.create_model("binaryvit_pyramid_tiny_32", **PYRAMID, spt=True, lsa=True)
    assert m.get_layer("stem_spt_s2d").output_shape == (None, 8, 8, 4 * 5)  # 2x2 patches of 5 images
    assert "stem_conv" not in _names(m)
    cores = [l for l in m.layers if isinstance(l, zoo.binaryvit.L.MultiHeadAttentionCore)]
    assert cores and all(c.lsa for c in cores)
    cls = zoo.create_model("binaryvit_tiny_32_cls", **SMALL, spt=True, lsa=True)
    assert cls.output_shape == (None, 10)


def test_float_twin_has_no_binary_layers_and_same_layer_names():
    binary = zoo.create_model("binaryvit_tiny_32", **SMALL)
    twin = zoo.create_model("vit_tiny_32_fp", **SMALL)
    assert not [l for l in twin.layers if isinstance(l, (lq.layers.QuantConv2D, zoo.binaryvit.L.BinarySign))]
    assert _names(twin) - {"block0_attn_q_sign", "block0_attn_k_sign", "block0_attn_v_sign"} <= _names(binary)


def test_saved_model_reloads_with_identical_outputs(tmp_path):
    m = zoo.create_model("binaryvit_pyramid_tiny_32", **PYRAMID, spt=True, lsa=True)
    m.save(tmp_path / "m.keras")
    loaded = tf.keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), m(x).numpy(), rtol=1e-5, atol=1e-6)


# ---- ImageNet configurations against the official code's counts (docs/papers.md 1.1) --------------

@pytest.mark.slow
@pytest.mark.parametrize("name,total_m,binary_m", [
    ("binaryvit_deit_s_cls_224", 22.0, 21.2),  # binary DeiT-S (ladder row 1)
    ("binaryvit_pyramid_s_224", 22.5, 21.2),  # BinaryViT
    ("binaryvit_pyramid_s_224_fpmerge", 22.5, 20.5),  # BinaryViT*
])
def test_imagenet_parameter_counts_match_the_official_code(name, total_m, binary_m):
    model = zoo.create_model(name)
    stats = profile_model(model)
    # Parameters as PyTorch counts them: BN running statistics are buffers, not parameters.
    bn_stats = sum(int(np.prod(w.shape)) for l in model.submodules
                   if isinstance(l, tf.keras.layers.BatchNormalization) for w in (l.moving_mean, l.moving_variance))
    assert stats.total_params - bn_stats == pytest.approx(total_m * 1e6, rel=0.02)
    assert stats.binary_params == pytest.approx(binary_m * 1e6, rel=0.02)
    assert model.output_shape == (None, 1000)


def test_torch_init_draws_kernels_and_biases_uniform_in_one_over_sqrt_fan_in():
    """init=torch is PyTorch's nn.Linear/nn.Conv2d default (what the official code trains from);
    the default stays trunc-normal 0.02 with zero biases. Counts and layer names are unchanged."""
    tf.keras.utils.set_random_seed(0)
    base = zoo.create_model("binaryvit_tiny_32")
    torch = zoo.create_model("binaryvit_tiny_32", init="torch")
    assert [w.name for w in base.weights] == [w.name for w in torch.weights]
    assert base.count_params() == torch.count_params()
    w = {v.name: v.numpy() for v in torch.weights}
    for name, fan_in in (("stem_conv/kernel:0", 16), ("stem_conv/bias:0", 16), ("block0_attn_q/kernel:0", 128),
                         ("head/kernel:0", 128), ("head/bias:0", 128)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(w[name]).max() <= bound and np.abs(w[name]).max() > 0.9 * bound, name
        assert np.std(w[name]) == pytest.approx(bound / np.sqrt(3), rel=0.15), name
    b = {v.name: v.numpy() for v in base.weights}
    assert np.abs(b["block0_attn_q/kernel:0"]).max() <= 0.04 + 1e-6 and not b["head/bias:0"].any()
    assert np.abs(w["pos_embed/embedding:0"]).max() <= 0.04 + 1e-6  # embeddings stay trunc-normal 0.02
