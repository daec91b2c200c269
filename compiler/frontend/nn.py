"""PyTorch modules the front end recognises as single NNIR operations (or, for the
recurrences, as one NNIR ``scan`` per layer)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PaddedConv1d", "LSTM", "Scan"]


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


class LSTM(nn.Module):
    """A ``torch.nn.LSTM`` whose forward returns only the output sequence.

    The wrapped layer is the attribute ``lstm`` (so ``model.lstm.lstm.num_layers`` works as
    in the reference's API); the initial states are zero. Every argument is passed to
    ``torch.nn.LSTM``; ``compiler.frontend.fx.nnir.to_nnir`` accepts what it accepts of a
    ``torch.nn.LSTM`` (``docs/frontend.md``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 **kwargs: Any) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last layer's hidden state at every step, laid out like ``x``."""
        return self.lstm(x)[0]


class Scan(nn.Module):
    """A recurrence: ``step`` applied along a sequence axis, its state carried along.

    ``step(x_t, state) -> (y_t, new_state)`` is any module the front end translates; it
    sees one step of ``x`` (the sequence axis removed). ``x``, the state and ``y_t`` may each
    be a tensor or a list of tensors (``step`` then takes and returns lists likewise).

    ``scan(x, h0, input_axis=0, output_axis=0)`` returns the outputs ``y_t`` stacked along
    ``output_axis`` (a list of such stacks when ``y_t`` is a list). For the compiler, ``h0``
    must be a constant (a buffer, a parameter, or made by ``torch.zeros``/``torch.full`` in
    ``forward``), and each state keeps its shape.
    """

    def __init__(self, step: nn.Module) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: Any, h0: Any, input_axis: int = 0,
                output_axis: int = 0) -> Any:
        """Run ``step`` over the ``input_axis`` of ``x``; return the stacked outputs."""
        xs = x if isinstance(x, (list, tuple)) else [x]
        state = h0
        ys = []
        for t in range(xs[0].shape[input_axis]):
            x_t = [v.select(input_axis, t) for v in xs]
            y, state = self.step(x_t if isinstance(x, (list, tuple)) else x_t[0], state)
            ys.append(y)
        if isinstance(ys[0], (list, tuple)):
            return [torch.stack(y, dim=output_axis) for y in zip(*ys, strict=True)]
        return torch.stack(ys, dim=output_axis)
