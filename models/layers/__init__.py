"""Shared building blocks of every family (BinaryViT, BHViT), one file per kind, timm-style.

Each layer is small, serializable (`get_config`) and named for what the papers call it; the spec
is docs/papers.md section 0 (shared blocks), 1 and 2, and the rules that decide how a block is
written are docs/lce.md:

* every token-wise linear layer is a 1x1 `lq.layers.QuantConv2D` on an NHWC token grid, because
  only `QuantConv2D` becomes `LceBconv2d` (a `QuantDense` stays a float FULLY_CONNECTED);
* activations are binarized with larq's own sign (`ApproxSign`), which the converter recognises;
* binary weights must constant-fold to +-alpha per output channel (LCE's `IsBinaryFilter`).

| file            | what it holds                                                               |
|-----------------|-----------------------------------------------------------------------------|
| base.py         | Keras registration, initialisers, BatchNorm with PyTorch defaults           |
| fused.py        | XLA-fused training kernels of the element-wise layers (same math)           |
| quantizers.py   | `ScaledSign`; larq's `ApproxSign` and `QuantConv2D` with training fast paths; |
|                 | the model surgery the trainer calls (binary-layer walks, Bop's STE mask,    |
|                 | the two-stage kernel switch)                                                |
| elementwise.py  | `LearnableBias`, `RPReLU`, `LayerScale`, position embedding, channel shortcuts |
| linear.py       | `binary_conv`, `binary_linear` (+ float twin), `BinarySign`                 |
| attention.py    | the shared scaled dot-product core, BiT's binarizer, BinaryViT's core, K/V reduction |
| tokens.py       | class / distillation / class-attention tokens, token rows, SPT              |
| blocks.py       | MLP, patch merging, pooling branches, classifier head                       |
| shifts.py, windows.py, qd.py | BHViT's shift branches, MSMHA windows, QD attention            |

Everything is re-exported here: ``from edgebvit.models import layers as L; L.RPReLU``.
"""
from edgebvit.models.layers.base import (BN_EPSILON, BN_MOMENTUM, PACKAGE, WEIGHT_INITS, batch_norm, bias_init,
                                         kernel_init, serializable, torch_default_init, trunc_normal, weight_init)
from edgebvit.models.layers import fused
from edgebvit.models.layers.quantizers import (STE_MASKS, ApproxSign, ReCUSign, ScaledSign, binary_latent_kernels,
                                               binary_layers, install_kernel_switch, latent, set_ste_mask)
from edgebvit.models.layers.elementwise import (ChannelAvgPool, ChannelSplit, ChannelTile, LayerScale,
                                                LearnableBias, PositionEmbedding, RPReLU, channel_shortcut)
from edgebvit.models.layers.linear import BinarySign, binary_conv, binary_linear, float_linear, token_linear
from edgebvit.models.layers.attention import (AttentionProbBinarizer, MultiHeadAttentionCore, scaled_dot_product,
                                              spatial_reduction, upsample_nearest)
from edgebvit.models.layers.tokens import (ClassToken, DiagonalShifts, LearnedTokens, PadTokens, PatchGrid,
                                           SpaceToDepth, TakeToken, TokenRange, shifted_patch_tokenization,
                                           token_row)
from edgebvit.models.layers.blocks import (HEAD_POOLINGS, classifier_head, mlp, multi_pool_branches, patch_merging,
                                           zero_padded_avg_pool)
from edgebvit.models.layers.shifts import ChannelShiftMix, ShiftMean, circular_roll
from edgebvit.models.layers.windows import (AppendMergedTokens, MergedTokens, TokenSplit, WindowMerge,
                                            WindowPartition, window_merge)
from edgebvit.models.layers.qd import QD_FORMS, GSBQuantizer, QDAttention, QDLsq, QDThermometer

__all__ = [
    "AppendMergedTokens", "ApproxSign", "AttentionProbBinarizer", "BN_EPSILON", "BN_MOMENTUM", "BinarySign",
    "ChannelAvgPool", "ChannelShiftMix", "ChannelSplit", "ChannelTile", "ClassToken", "DiagonalShifts",
    "GSBQuantizer", "HEAD_POOLINGS", "LayerScale", "LearnableBias", "LearnedTokens", "MergedTokens",
    "MultiHeadAttentionCore", "PACKAGE", "PadTokens", "PatchGrid", "PositionEmbedding", "QDAttention",
    "QDLsq", "QDThermometer", "QD_FORMS", "RPReLU", "ReCUSign", "STE_MASKS", "ScaledSign", "ShiftMean",
    "SpaceToDepth", "TakeToken", "TokenRange", "TokenSplit", "WindowMerge", "WindowPartition", "batch_norm",
    "binary_conv", "binary_latent_kernels", "binary_layers", "binary_linear", "channel_shortcut",
    "circular_roll", "classifier_head", "float_linear", "fused", "install_kernel_switch", "latent", "mlp",
    "multi_pool_branches", "patch_merging", "scaled_dot_product", "serializable", "set_ste_mask",
    "shifted_patch_tokenization", "spatial_reduction", "token_linear", "token_row", "torch_default_init",
    "trunc_normal", "upsample_nearest", "WEIGHT_INITS", "bias_init", "kernel_init", "weight_init", "window_merge",
    "zero_padded_avg_pool",
]
