"""BHViT's shift-based MLP enhancement (docs/papers.md 2.5): parameter-free circular shifts
along H, W and channel chunks, written as slices + concat (`tf.roll` has no TFLite op)."""
from __future__ import annotations

import tensorflow as tf

from edgebvit.models.layers.base import serializable


def circular_roll(x: tf.Tensor, shift: int, axis: int) -> tf.Tensor:
    """``np.roll(x, shift, axis)`` from two slices and a concat (`tf.roll` has no TFLite op)."""
    size = x.shape[axis]
    s = shift % size
    if s == 0:
        return x
    head = [slice(None)] * len(x.shape)
    tail = [slice(None)] * len(x.shape)
    head[axis] = slice(size - s, None)  # the last s entries wrap around to the front
    tail[axis] = slice(0, size - s)
    return tf.concat([x[tuple(head)], x[tuple(tail)]], axis=axis)


@serializable
class ShiftMean(tf.keras.layers.Layer):
    """`Shift` (taps=3) / `Shift2` (taps=5): circular mean of rolls by -k..k along H or W."""

    def __init__(self, *, taps: int, axis: int, **kwargs):
        super().__init__(**kwargs)
        if taps < 1 or taps % 2 == 0 or axis not in (1, 2):
            raise ValueError(f"ShiftMean needs an odd taps >= 1 and axis 1 (H) or 2 (W), got {taps}, {axis}")
        self.taps = int(taps)
        self.axis = int(axis)

    def call(self, x):
        k = self.taps // 2
        total = x
        for s in range(1, k + 1):
            total = total + circular_roll(x, s, self.axis) + circular_roll(x, -s, self.axis)
        return total * (1.0 / self.taps)

    def get_config(self):
        return {**super().get_config(), "taps": self.taps, "axis": self.axis}


@serializable
class ChannelShiftMix(tf.keras.layers.Layer):
    """`Shift_channel_mix`: four channel chunks rolled by +s on H, -s on H, +s on W, -s on W."""

    def __init__(self, *, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.shift = int(shift)

    def call(self, x):
        c = x.shape[-1]
        q = c // 4
        parts = [x[..., i * q:(i + 1) * q] for i in range(4)]
        rolled = [
            circular_roll(parts[0], self.shift, 1),
            circular_roll(parts[1], -self.shift, 1),
            circular_roll(parts[2], self.shift, 2),
            circular_roll(parts[3], -self.shift, 2),
        ]
        return tf.concat(rolled, axis=-1)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}
