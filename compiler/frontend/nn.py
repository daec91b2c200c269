"""PyTorch modules the front end recognises as single NNIR operations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PaddedConv1d"]


class PaddedConv1d(nn.Conv1d):
    """A causal 1-D convolution: ``torch.nn.Conv1d`` after ``kernel_size - 1`` left zeros.

    The output has the input's sequence length, and output step ``t`` depends only on input
    steps ``t - kernel_size + 1 .. t``, which is what makes a stack of these layers streamable
    (see :meth:`compiler.nnir.NNIR.streaming_transform`). Parameters (``weight`` of shape
    ``(out_channels, in_channels / groups, kernel_size)`` and ``bias``) are named and
    initialised as in ``torch.nn.Conv1d``, so a ``Conv1d`` state dict loads into it.

    Input layout is ``[N, C, T]`` (or ``[C, T]``): channels second to last, time last.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Number of taps (1 or more); stride and dilation are 1.
    groups : int
        1, or ``in_channels`` for a depthwise convolution (which then needs
        ``out_channels == in_channels``).
    bias : bool
        Whether to add a learnable bias.

    Raises
    ------
    ValueError
        If ``groups`` is neither 1 nor depthwise, or a size is not a positive integer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        for what, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("groups", groups),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PaddedConv1d: {what} must be a positive integer, not {value!r}")
        if groups != 1 and not groups == in_channels == out_channels:
            raise ValueError(
                f"PaddedConv1d: groups={groups} is not supported with in_channels={in_channels} "
                f"and out_channels={out_channels}: use groups=1, or a depthwise convolution "
                f"with groups == in_channels == out_channels"
            )
        super().__init__(in_channels, out_channels, kernel_size, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` ([N, C, T] or [C, T]) causally; return [N, out_channels, T]."""
        return F.conv1d(
            F.pad(x, (self.kernel_size[0] - 1, 0)), self.weight, self.bias, groups=self.groups
        )
