#!/usr/bin/env python3
"""The official BinaryViT model (Le & Li, CVPRW 2023) in PyTorch, configured as edgebvit's
``binaryvit_tiny_32``, to time a training step side by side with the Keras model.

    /usr/bin/python3 tools/reference/binaryvit_torch.py --batch-size 128 --steps 10 --threads 2

Not part of the edgebvit package, and PyTorch is not a project dependency: run it with an
interpreter that has torch (Debian: ``apt-get install python3-torch``, then /usr/bin/python3).
Imports only torch, math and typing (plus argparse/json/time in ``__main__`` and the timer).

Ported from the official repository Phuoc-Hoan-Le/BinaryViT at commit ca16a431bd; same
operations in the same order, code rewritten:

| class here            | official class                 | official file                                 |
|-----------------------|--------------------------------|-----------------------------------------------|
| BinaryQuantizer       | BinaryQuantizer                | transformer/utils_quant.py                    |
| BiTBinaryQuantizer    | BiTBinaryQuantizer             | transformer/utils_quant.py                    |
| QuantizeLinear        | QuantizeLinear (1-bit path)    | transformer/utils_quant.py                    |
| BatchNormT            | BatchNormT (SyncBatchNormT on  | models.py                                     |
|                       | one process is the same)       |                                               |
| RPReLU, LayerScale    | RPReLU, LayerScale             | transformer/modeling_vit_extra_res.py         |
| ViTPatchEmbeddings    | ViTPatchEmbeddings             | transformer/modeling_vit_extra_res.py         |
| ViTEmbeddings         | ViTEmbeddings (+ the stem BN   | modeling_vit_extra_res.py (BN: ..._pyramid.py)|
|                       | of the pyramid's ViTEmbeddings)|                                               |
| ViTSelfAttention      | ViTSelfAttention               | transformer/modeling_vit_extra_res.py         |
| ViTSelfOutput         | ViTSelfOutput                  | transformer/modeling_vit_extra_res.py         |
| ViTAttention          | ViTAttention                   | transformer/modeling_vit_extra_res.py         |
| ViTIntermediate       | ViTIntermediate                | transformer/modeling_vit_extra_res.py         |
| ViTOutput             | ViTOutput                      | transformer/modeling_vit_extra_res.py         |
| ViTLayer              | ViTLayer                       | transformer/modeling_vit_extra_res.py         |
| ViTEncoder, ViTModel  | ViTEncoder, ViTModel           | transformer/modeling_vit_extra_res.py         |
| ViTForImageClassification | ViTForImageClassification  | transformer/modeling_vit_extra_res.py         |

That is the ``--model-type=extra-res`` model of the ladder rows 1-4 (the ReActNet-style binary
DeiT), with the flags of row 4 (scripts/run_reactdeit-small-patch16-224-avg_pool-multi_branch-ls.sh):
``--replace-ln-bn --weight-bits=1 --input-bits=1 --avg-res3 --avg-res5``, LayerScale on, no class
token (GAP head). Sizes are edgebvit's ``binaryvit_tiny_32``: 32x32x1 input, patch 4 (8x8 = 64
tokens), width 128, depth 4, 2 heads, MLP 512, 10 classes.

Where this differs from the official file, and why:

* ``stem_bn`` (default True): edgebvit's ``binaryvit_tiny_32`` has a BatchNorm after the stem conv
  (``BinaryViTConfig.stem_bn``), which the official *isotropic* ``ViTEmbeddings`` lacks and the
  official *pyramid* ``ViTEmbeddings`` (modeling_vit_extra_res_pyramid.py) has, applied to the
  (B, N, C) tokens before the position embedding. It is on here so both sides time the same graph;
  ``build_model(stem_bn=False)`` is the official isotropic embedding exactly (256 parameters and
  256 running statistics fewer).
* The pooling branches: the official ``ViTLayer.forward`` hard-codes ``view(-1, 384, 14, 14)`` and
  ``view(-1, 384, 196)`` (DeiT-S at 224); here the same reshapes use (C, H, W) = (128, 8, 8).
* ``ViTIntermediate`` hard-codes four copies in its concat and ``ViTOutput`` ``AvgPool1d(4)``: the
  MLP ratio 4 of both configurations, kept as the ratio here.
* Initialisation is PyTorch's default everywhere, which is what the official code effectively
  does: its ``init_weights(module, name='')`` lacks ``self``, so ``self.apply(self.init_weights)``
  binds the model itself as ``module`` and re-initialises nothing. Position embedding:
  trunc-normal(0.02) as in the official code (``torch.nn.init.trunc_normal_`` has the same
  defaults, a=-2, b=2, as timm's).
* HF ``transformers`` plumbing (config object, output dataclasses, attention outputs, gradient
  checkpointing, the Dropout / DropPath layers at p = 0) is left out; it does not change the math.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import nn


# ---------------------------------------------------------------------------------------------
# transformer/utils_quant.py
# ---------------------------------------------------------------------------------------------
class BinaryQuantizer(torch.autograd.Function):
    """Official ``BinaryQuantizer``: sign forward, Bi-Real ApproxSign gradient
    (2 + 2x on [-1, 0], 2 - 2x on (0, 1], 0 elsewhere)."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.sign(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        indicate_leftmid = ((input >= -1) & (input <= 0)).float()
        indicate_rightmid = ((input > 0) & (input <= 1)).float()
        grad_input = (indicate_leftmid * (2 + 2 * input) + indicate_rightmid * (2 - 2 * input)) * grad_output.clone()
        return grad_input


class BiTBinaryQuantizer(torch.autograd.Function):
    """Official ``BiTBinaryQuantizer`` (BiT's elastic binarizer of the attention probabilities):
    forward alpha * clamp(round(P / alpha), 0, 1); gradients as BiT's."""

    @staticmethod
    def forward(ctx, input, clip_val):
        ctx.save_for_backward(input, clip_val)
        return torch.round(input / clip_val).clamp(0.0, 1.0) * clip_val

    @staticmethod
    def backward(ctx, grad_output):
        input, clip_val = ctx.saved_tensors
        q_w = input / clip_val
        indicate_small = (q_w < 0.0).float()
        indicate_big = (q_w > 1.0).float()
        indicate_middle = 1.0 - indicate_small - indicate_big
        # The official code returns a shape-(1,) gradient for the 0-d alpha (``.unsqueeze(dim=0)``);
        # autograd reshapes it. Returned 0-d here, the same value.
        grad_clip_val = ((indicate_middle * (q_w.round() - q_w) + indicate_big) * grad_output).sum()
        grad_input = indicate_middle * grad_output.clone()
        return grad_input, grad_clip_val.reshape(clip_val.shape)


class QuantizeLinear(nn.Linear):
    """Official ``QuantizeLinear`` with weight_bits = input_bits = 1, no bias.

    Weights: alpha_o * sign(W - mean_in W) with alpha_o = mean_in |W| (uncentred, detached);
    straight-through gradient through clamp(W - mean, -1, 1). Inputs: ``BinaryQuantizer``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        scaling_factor = torch.mean(abs(self.weight), dim=1, keepdim=True)
        scaling_factor = scaling_factor.detach()
        real_weights = self.weight - torch.mean(self.weight, dim=-1, keepdim=True)
        binary_weights_no_grad = scaling_factor * torch.sign(real_weights)
        cliped_weights = torch.clamp(real_weights, -1.0, 1.0)
        weight = binary_weights_no_grad.detach() - cliped_weights.detach() + cliped_weights

        input = BinaryQuantizer.apply(input)
        out = nn.functional.linear(input, weight)
        if self.bias is not None:
            out += self.bias.view(1, -1).expand_as(out)
        return out


# ---------------------------------------------------------------------------------------------
# models.py
# ---------------------------------------------------------------------------------------------
class BatchNormT(nn.BatchNorm1d):
    """Official ``BatchNormT`` (``--replace-ln-bn``): BatchNorm1d over the channels of (B, N, C)
    tokens, statistics over B and N; eps 1e-5, momentum 0.1. The official forward is a copy of
    ``_BatchNorm.forward`` between two transposes; calling it is the same computation."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.transpose(-1, -2)).transpose(-1, -2)


# ---------------------------------------------------------------------------------------------
# transformer/modeling_vit_extra_res.py
# ---------------------------------------------------------------------------------------------
class RPReLU(nn.Module):
    """Official ``RPReLU``: PReLU_c(x - move1) + move2 (slope 0.25, shifts 0)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.move1 = nn.Parameter(torch.zeros(hidden_size))
        self.prelu = nn.PReLU(hidden_size)
        self.move2 = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu((x - self.move1).transpose(-1, -2)).transpose(-1, -2) + self.move2


class LayerScale(nn.Module):
    """Official ``LayerScale``: x * alpha + move; ``init_ones=True`` starts alpha at 0.1, else 0."""

    def __init__(self, hidden_size: int, init_ones: bool = True) -> None:
        super().__init__()
        if init_ones:
            self.alpha = nn.Parameter(torch.ones(hidden_size) * 0.1)
        else:
            self.alpha = nn.Parameter(torch.zeros(hidden_size))
        self.move = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha + self.move


class ViTPatchEmbeddings(nn.Module):
    """Official ``ViTPatchEmbeddings``: float PxP stride-P conv (with bias), then (B, N, C) tokens
    in row-major grid order (``flatten(2).transpose(1, 2)``)."""

    def __init__(self, image_size: int, patch_size: int, num_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.projection = nn.Conv2d(num_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("channel dimension of the pixel values does not match the configuration")
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    """Official ``ViTEmbeddings`` without class token (GAP head): patch embedding + position
    embedding (trunc-normal 0.02). ``stem_bn`` adds the BN of the pyramid's ``ViTEmbeddings``
    (modeling_vit_extra_res_pyramid.py) between them, as edgebvit's ``stem_bn=True``."""

    def __init__(self, image_size: int, patch_size: int, num_channels: int, hidden_size: int,
                 stem_bn: bool = True) -> None:
        super().__init__()
        self.patch_embeddings = ViTPatchEmbeddings(image_size, patch_size, num_channels, hidden_size)
        num_patches = self.patch_embeddings.num_patches
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches, hidden_size))
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        self.norm = BatchNormT(hidden_size) if stem_bn else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeddings = self.patch_embeddings(pixel_values)
        if self.norm is not None:
            embeddings = self.norm(embeddings)
        return embeddings + self.position_embeddings


class ViTSelfAttention(nn.Module):
    """Official ``ViTSelfAttention`` (input_bits = 1): binary q/k/v linears with BN, identity
    residual and RPReLU; Q, K, V = sign(. + move2); softmax(QK^T / sqrt(d)) binarized by BiT's
    elastic quantizer (alpha init 0.005); context BN + q/k/v pre-activations, then RPReLU."""

    def __init__(self, hidden_size: int, num_attention_heads: int) -> None:
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_attention_heads} heads")
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = hidden_size // num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size

        self.moveq = nn.Parameter(torch.zeros(hidden_size))
        self.movek = nn.Parameter(torch.zeros(hidden_size))
        self.movev = nn.Parameter(torch.zeros(hidden_size))

        self.query = QuantizeLinear(hidden_size, self.all_head_size)
        self.key = QuantizeLinear(hidden_size, self.all_head_size)
        self.value = QuantizeLinear(hidden_size, self.all_head_size)

        self.normq = BatchNormT(hidden_size)
        self.normk = BatchNormT(hidden_size)
        self.normv = BatchNormT(hidden_size)

        self.rpreluq = RPReLU(hidden_size)
        self.rpreluk = RPReLU(hidden_size)
        self.rpreluv = RPReLU(hidden_size)

        self.moveq2 = nn.Parameter(torch.zeros(hidden_size))
        self.movek2 = nn.Parameter(torch.zeros(hidden_size))
        self.movev2 = nn.Parameter(torch.zeros(hidden_size))

        self.att_prob_clip = nn.Parameter(torch.tensor(0.005))

        self.norm_context = BatchNormT(hidden_size)
        self.rprelu_context = RPReLU(hidden_size)

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mixed_query_layer = self.normq(self.query(hidden_states + self.moveq)) + hidden_states
        mixed_key_layer = self.normk(self.key(hidden_states + self.movek)) + hidden_states
        mixed_value_layer = self.normv(self.value(hidden_states + self.movev)) + hidden_states

        mixed_query_layer = self.rpreluq(mixed_query_layer)
        mixed_key_layer = self.rpreluk(mixed_key_layer)
        mixed_value_layer = self.rpreluv(mixed_value_layer)

        query_layer = BinaryQuantizer.apply(mixed_query_layer + self.moveq2)
        key_layer = BinaryQuantizer.apply(mixed_key_layer + self.movek2)
        value_layer = BinaryQuantizer.apply(mixed_value_layer + self.movev2)

        query_layer = self.transpose_for_scores(query_layer)
        key_layer = self.transpose_for_scores(key_layer)
        value_layer = self.transpose_for_scores(value_layer)

        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = BiTBinaryQuantizer.apply(attention_probs, self.att_prob_clip)
        # (attention dropout, p = 0 in every binary run: left out)

        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        context_layer = context_layer.view(context_layer.size()[:-2] + (self.all_head_size,))

        context_layer = self.norm_context(context_layer) + mixed_query_layer + mixed_key_layer + mixed_value_layer
        return self.rprelu_context(context_layer)


class ViTSelfOutput(nn.Module):
    """Official ``ViTSelfOutput``: RPReLU(BN(BinLinear(x + move)) + x), then LayerScale(0.1)."""

    def __init__(self, hidden_size: int, layerscale: bool = True) -> None:
        super().__init__()
        self.dense = QuantizeLinear(hidden_size, hidden_size)
        self.move = nn.Parameter(torch.zeros(hidden_size))
        self.norm = BatchNormT(hidden_size)
        self.rprelu = RPReLU(hidden_size)
        self.layerscale = LayerScale(hidden_size) if layerscale else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.dense(hidden_states + self.move)) + hidden_states
        out = self.rprelu(out)
        return self.layerscale(out)


class ViTAttention(nn.Module):
    """Official ``ViTAttention``: ``ViTSelfAttention`` then ``ViTSelfOutput``."""

    def __init__(self, hidden_size: int, num_attention_heads: int, layerscale: bool = True) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(hidden_size, num_attention_heads)
        self.output = ViTSelfOutput(hidden_size, layerscale)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(hidden_states))


class ViTIntermediate(nn.Module):
    """Official ``ViTIntermediate`` (fc1, C -> rC): RPReLU(BN(BinLinear(x + move)) + concat([x] * r)).
    No GELU (commented out in the official code)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        if intermediate_size % hidden_size:
            raise ValueError("intermediate size must be a multiple of the hidden size (tiled shortcut)")
        self.repeats = intermediate_size // hidden_size  # the official code hard-codes 4 copies
        self.dense = QuantizeLinear(hidden_size, intermediate_size)
        self.move = nn.Parameter(torch.zeros(hidden_size))
        self.norm = BatchNormT(intermediate_size)
        self.rprelu = RPReLU(intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.dense(hidden_states + self.move)) + torch.cat((hidden_states,) * self.repeats, dim=-1)
        return self.rprelu(out)


class ViTOutput(nn.Module):
    """Official ``ViTOutput`` (fc2, rC -> C): RPReLU(BN(BinLinear(h + move)) + AvgPool1d(r)(h)),
    the mean of r consecutive channels; then LayerScale(0.1)."""

    def __init__(self, hidden_size: int, intermediate_size: int, layerscale: bool = True) -> None:
        super().__init__()
        self.dense = QuantizeLinear(intermediate_size, hidden_size)
        self.move = nn.Parameter(torch.zeros(intermediate_size))
        self.norm = BatchNormT(hidden_size)
        self.rprelu = RPReLU(hidden_size)
        self.pooling = nn.AvgPool1d(intermediate_size // hidden_size)  # official: AvgPool1d(4)
        self.layerscale = LayerScale(hidden_size) if layerscale else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.dense(hidden_states + self.move)) + self.pooling(hidden_states)
        out = self.rprelu(out)
        return self.layerscale(out)


class ViTLayer(nn.Module):
    """Official ``ViTLayer`` (pre-norm block, BN for LN, drop-path 0):

        xn  = BN_before(x);  x = x + Attention(xn)
        xn2 = BN_after(x);   out = x + Output(Intermediate(xn2))
        out += LS_h3(AvgPool 3x1(xn2)) + LS_w3(AvgPool 1x3(xn2))      (--avg-res3)
        out += LS_h5(AvgPool 5x1(xn2)) + LS_w5(AvgPool 1x5(xn2))      (--avg-res5)

    The pools are stride 1, zero padding (k-1)/2, count_include_pad (PyTorch's default), on the
    (B, C, H, W) view of the tokens, each LayerScale starting at alpha = 0.
    """

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int, grid: int,
                 pool_branches: Sequence[int] = (3, 5), layerscale: bool = True) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.grid = grid
        self.attention = ViTAttention(hidden_size, num_attention_heads, layerscale)
        self.intermediate = ViTIntermediate(hidden_size, intermediate_size)
        self.output = ViTOutput(hidden_size, intermediate_size, layerscale)
        self.layernorm_before = BatchNormT(hidden_size)
        self.layernorm_after = BatchNormT(hidden_size)

        unknown = set(pool_branches) - {3, 5}
        if unknown:
            raise ValueError(f"the official code has pooling branches 3 and 5 only, got {sorted(unknown)}")
        self.avg_res3 = 3 in pool_branches
        self.avg_res5 = 5 in pool_branches
        if self.avg_res5:
            k = 5
            self.avg_res_w5 = nn.AvgPool2d((1, k), stride=1, padding=(0, (k - 1) // 2))
            self.layerscale_w5 = LayerScale(hidden_size, init_ones=False)
            self.avg_res_h5 = nn.AvgPool2d((k, 1), stride=1, padding=((k - 1) // 2, 0))
            self.layerscale_h5 = LayerScale(hidden_size, init_ones=False)
        if self.avg_res3:
            k = 3
            self.avg_res_w3 = nn.AvgPool2d((1, k), stride=1, padding=(0, (k - 1) // 2))
            self.layerscale_w3 = LayerScale(hidden_size, init_ones=False)
            self.avg_res_h3 = nn.AvgPool2d((k, 1), stride=1, padding=((k - 1) // 2, 0))
            self.layerscale_h3 = LayerScale(hidden_size, init_ones=False)

    def _pool(self, pool: nn.Module, scale: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        # The official reshapes, with (384, 14, 14) / 196 replaced by (C, H, W) / N of this config.
        c, g = self.hidden_size, self.grid
        grid = xn.permute(0, 2, 1).view(-1, c, g, g).contiguous()
        return scale(pool(grid).view(-1, c, g * g).permute(0, 2, 1).contiguous())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states_norm = self.layernorm_before(hidden_states)
        attention_output = self.attention(hidden_states_norm)
        hidden_states = attention_output + hidden_states

        hidden_states_norm = self.layernorm_after(hidden_states)
        layer_output = self.intermediate(hidden_states_norm)
        layer_output = self.output(layer_output) + hidden_states
        if self.avg_res3:
            layer_output += self._pool(self.avg_res_h3, self.layerscale_h3, hidden_states_norm)
            layer_output += self._pool(self.avg_res_w3, self.layerscale_w3, hidden_states_norm)
        if self.avg_res5:
            layer_output += self._pool(self.avg_res_h5, self.layerscale_h5, hidden_states_norm)
            layer_output += self._pool(self.avg_res_w5, self.layerscale_w5, hidden_states_norm)
        return layer_output


class ViTEncoder(nn.Module):
    """Official ``ViTEncoder``: the blocks in sequence."""

    def __init__(self, num_hidden_layers: int, **layer_kwargs) -> None:
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(**layer_kwargs) for _ in range(num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states)
        return hidden_states


class ViTModel(nn.Module):
    """Official ``ViTModel``: embeddings, encoder, final norm (BN, ``--replace-ln-bn``)."""

    def __init__(self, image_size: int, patch_size: int, num_channels: int, hidden_size: int,
                 num_hidden_layers: int, num_attention_heads: int, intermediate_size: int,
                 pool_branches: Sequence[int], layerscale: bool, stem_bn: bool) -> None:
        super().__init__()
        self.embeddings = ViTEmbeddings(image_size, patch_size, num_channels, hidden_size, stem_bn)
        self.encoder = ViTEncoder(
            num_hidden_layers, hidden_size=hidden_size, num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size, grid=self.embeddings.patch_embeddings.grid,
            pool_branches=pool_branches, layerscale=layerscale,
        )
        self.layernorm = BatchNormT(hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.encoder(self.embeddings(pixel_values)))


class ViTForImageClassification(nn.Module):
    """Official ``ViTForImageClassification`` without class token: mean of the final tokens, then
    a float ``nn.Linear`` classifier. Returns the logits."""

    def __init__(self, *, image_size: int = 32, patch_size: int = 4, num_channels: int = 1,
                 hidden_size: int = 128, num_hidden_layers: int = 4, num_attention_heads: int = 2,
                 intermediate_size: int = 512, num_labels: int = 10,
                 pool_branches: Sequence[int] = (3, 5), layerscale: bool = True, stem_bn: bool = True) -> None:
        super().__init__()
        self.vit = ViTModel(image_size, patch_size, num_channels, hidden_size, num_hidden_layers,
                            num_attention_heads, intermediate_size, pool_branches, layerscale, stem_bn)
        self.classifier = nn.Linear(hidden_size, num_labels)
        # (the official ``self.apply(self.init_weights)`` re-initialises nothing: see the docstring)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        sequence_output = self.vit(pixel_values)
        return self.classifier(torch.mean(sequence_output, dim=1))


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
# edgebvit's binaryvit_tiny_32 (models/binaryvit.py: TINY_32 + ROW4_AFFINE, stem_bn default True)
TINY_32: Dict[str, object] = dict(
    image_size=32, patch_size=4, num_channels=1, hidden_size=128, num_hidden_layers=4,
    num_attention_heads=2, intermediate_size=4 * 128, num_labels=10,
    pool_branches=(3, 5), layerscale=True, stem_bn=True,
)


def build_model(**overrides) -> nn.Module:
    """The official binary DeiT (extra-res, ladder row 4) in the configuration of edgebvit's
    ``binaryvit_tiny_32``; keyword overrides change fields of ``TINY_32`` (e.g. ``stem_bn=False``
    for the official isotropic embedding)."""
    unknown = set(overrides) - set(TINY_32)
    if unknown:
        raise TypeError(f"unknown fields {sorted(unknown)}; known: {sorted(TINY_32)}")
    return ViTForImageClassification(**{**TINY_32, **overrides})


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (every ``nn.Parameter`` here is trainable)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_buffers(model: nn.Module, bn_stats_only: bool = True) -> int:
    """BatchNorm running mean/var elements (Keras counts these as non-trainable params); with
    ``bn_stats_only=False`` also the ``num_batches_tracked`` counters (one per BN)."""
    return sum(b.numel() for name, b in model.named_buffers()
               if not bn_stats_only or name.endswith(("running_mean", "running_var")))


def time_train_step(batch_size: int = 128, steps: int = 10, warmup: int = 3,
                    threads: Optional[int] = None) -> dict:
    """Time full training steps (forward, cross-entropy, backward, Adam lr 1e-3 step) on fixed
    random data (N(0, 1) images, random labels, seed 0), after `warmup` untimed steps."""
    import time

    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    model = build_model()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(batch_size, TINY_32["num_channels"], TINY_32["image_size"], TINY_32["image_size"])
    labels = torch.randint(0, int(TINY_32["num_labels"]), (batch_size,))

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()  # (CPU ops are synchronous; this only reads the value)
    elapsed = time.perf_counter() - start
    return {
        "images_per_second": batch_size * steps / elapsed,
        "ms_per_step": 1000.0 * elapsed / steps,
        "parameters": count_parameters(model),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _main(argv: Optional[Sequence[str]] = None) -> None:
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--counts", action="store_true",
                   help="print parameter and buffer counts instead of timing")
    args = p.parse_args(argv)
    if args.counts:
        model = build_model()
        print(json.dumps({"parameters": count_parameters(model), "bn_running_stats": count_buffers(model),
                          "buffers_all": count_buffers(model, bn_stats_only=False),
                          "torch_version": torch.__version__}))
        return
    print(json.dumps(time_train_step(args.batch_size, args.steps, args.warmup, args.threads)))


if __name__ == "__main__":
    _main()
