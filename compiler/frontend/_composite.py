"""Composite operations built from NNIR ops, shared by the PyTorch and ONNX front ends.

Each function appends the NNIR nodes of one model operation (softmax, a norm, an activation
without a machine function of its own) to a front end's builder and returns the result, so
that both front ends build the same graph for the same computation. Every node gets the
operation's ``name``. ``docs/frontend.md`` lists what each becomes; ``docs/compiler.md`` how
the back end computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Builder", "Tensor", "fn", "scalar", "reduce", "power", "softmax", "log_softmax", "layer_norm",
    "rms_norm", "batch_norm", "divide", "leaky_relu", "hardsigmoid", "hardswish", "elu",
    "softplus",
]


class Tensor(Protocol):
    """A value of the graph being built (its node id and shape)."""

    id: int
    shape: tuple[int, ...]


class Builder(Protocol):
    """What the front ends' builder offers (``compiler.frontend.fx.nnir._Builder``)."""

    def add(self, op: str, operands: Any, attrs: dict, name: str) -> Any: ...

    def constant(self, value: Any, name: str) -> Any: ...

    nodes: list[Any]


def fn(b: Builder, function: str, x: Tensor, name: str) -> Any:
    """Return ``function(x)`` elementwise (a key of ``compiler.nnir.FUNCTIONS``)."""
    return b.add("fn", [x], {"function": function}, name)


def scalar(b: Builder, op: str, x: Tensor, value: float, name: str,
           reverse: bool = False) -> Any:
    """Return ``x op value`` (``value op x`` if ``reverse``)."""
    return b.add(op, [x], {"scalar": float(value), "reverse": reverse}, name)


def _binary(b: Builder, op: str, x: Tensor, y: Tensor, name: str) -> Any:
    return b.add(op, [x, y], {}, name)


def _row_constant(b: Builder, value: np.ndarray, rank: int, name: str) -> Any:
    """Return a constant vector over the last axis, with ``rank`` axes (for broadcasting)."""
    value = np.asarray(value, np.float32)
    return b.constant(value.reshape((1,) * (rank - 1) + value.shape), name)


def reduce(b: Builder, op: str, x: Tensor, axis: int, keepdim: bool, name: str) -> Any:
    """Return ``sum``/``mean``/``amax`` of ``x`` over ``axis`` (dropped unless
    ``keepdim``)."""
    y = b.add(op, [x], {"axis": axis}, name)
    if keepdim:
        return y
    return b.add("reshape", [y], {"shape": tuple(x.shape[:axis] + x.shape[axis + 1:])}, name)


def _last(b: Builder, op: str, x: Tensor, name: str) -> Any:
    return reduce(b, op, x, len(x.shape) - 1, True, name)


def softmax(b: Builder, x: Tensor, axis: int, name: str) -> Any:
    """Return softmax over ``axis``: ``e = exp(x − max x)``, ``e · (1 / Σ e)``."""
    e = fn(b, "exp", _binary(b, "sub", x, reduce(b, "amax", x, axis, True, name), name), name)
    r = fn(b, "reciprocal", reduce(b, "sum", e, axis, True, name), name)
    return _binary(b, "mul", e, r, name)


def log_softmax(b: Builder, x: Tensor, axis: int, name: str) -> Any:
    """Return log-softmax over ``axis``: ``d − log Σ exp d`` with ``d = x − max x``."""
    d = _binary(b, "sub", x, reduce(b, "amax", x, axis, True, name), name)
    s = reduce(b, "sum", fn(b, "exp", d, name), axis, True, name)
    return _binary(b, "sub", d, fn(b, "log", s, name), name)


def power(b: Builder, x: Tensor, exponent: float, name: str) -> Any:
    """Return ``x ** exponent`` for the exponents the machine has: 1, 2 (``x · x``), ½
    (sqrt), −½ (rsqrt) and −1 (reciprocal); None for any other."""
    if exponent == 1:
        return x
    if exponent == 2:
        return _binary(b, "mul", x, x, name)
    functions = {0.5: "sqrt", -0.5: "rsqrt", -1: "reciprocal"}
    return fn(b, functions[exponent], x, name) if exponent in functions else None


def _affine(b: Builder, y: Any, weight: np.ndarray | None, bias: np.ndarray | None,
            name: str) -> Any:
    rank = len(y.shape)
    # A weight of ones and a bias of zeros (how norms are initialised) change nothing.
    if weight is not None and (weight != 1).any():
        y = _binary(b, "mul", y, _row_constant(b, weight, rank, name), name)
    if bias is not None and (bias != 0).any():
        y = _binary(b, "add", y, _row_constant(b, bias, rank, name), name)
    return y


def layer_norm(b: Builder, x: Tensor, weight: np.ndarray | None, bias: np.ndarray | None,
               eps: float, name: str) -> Any:
    """Return LayerNorm over the last axis: ``d = x − mean x``,
    ``d · rsqrt(mean d² + eps)``, then ``· weight + bias`` (each optional)."""
    d = _binary(b, "sub", x, _last(b, "mean", x, name), name)
    var = _last(b, "mean", _binary(b, "mul", d, d, name), name)
    r = fn(b, "rsqrt", scalar(b, "add", var, eps, name), name)
    return _affine(b, _binary(b, "mul", d, r, name), weight, bias, name)


def rms_norm(b: Builder, x: Tensor, weight: np.ndarray | None, eps: float, name: str) -> Any:
    """Return RMSNorm over the last axis: ``x · rsqrt(mean x² + eps) · weight``."""
    ms = _last(b, "mean", _binary(b, "mul", x, x, name), name)
    r = fn(b, "rsqrt", scalar(b, "add", ms, eps, name), name)
    return _affine(b, _binary(b, "mul", x, r, name), weight, None, name)


def batch_norm(b: Builder, x: Tensor, stats: Sequence[np.ndarray | None], eps: float,
               foldable: bool, name: str) -> Any:
    """Return an eval-mode BatchNorm over axis 1 of ``x`` ([N, C] or [N, C, L]).

    ``stats`` are the running mean and variance, weight and bias (None: 1 and 0). It is the
    per-channel ``x · scale + shift``, ``scale = weight / sqrt(var + eps)``, ``shift = bias
    − mean · scale`` (in float64), folded into the weight and bias of the ``conv1d`` or
    ``linear`` node computing ``x`` when ``foldable`` (the caller knows nothing else uses
    ``x``), else two elementwise ops with constants.
    """
    mean, var = (np.asarray(v, np.float64) for v in stats[:2])
    w = np.ones_like(mean) if stats[2] is None else np.asarray(stats[2], np.float64)
    bias = np.zeros_like(mean) if stats[3] is None else np.asarray(stats[3], np.float64)
    scale = w / np.sqrt(var + eps)
    shift = bias - mean * scale
    source = b.nodes[x.id]
    if foldable and ((source.op == "conv1d" and len(x.shape) == 3)
                     or (source.op == "linear" and len(x.shape) == 2)):
        weight = source.attrs["weight"].astype(np.float64)
        old = source.attrs["bias"]
        old = np.zeros(weight.shape[0]) if old is None else old.astype(np.float64)
        source.attrs = {**source.attrs,
                        "weight": _frozen(weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))),
                        "bias": _frozen(old * scale + shift)}
        return x
    shape = [1] * len(x.shape)
    shape[1] = len(scale)
    y = _binary(b, "mul", x, b.constant(scale.astype(np.float32).reshape(shape), name), name)
    return _binary(b, "add", y, b.constant(shift.astype(np.float32).reshape(shape), name), name)


def _frozen(value: np.ndarray) -> np.ndarray:
    array = np.array(value, dtype=np.float32)
    array.flags.writeable = False
    return array


def divide(b: Builder, x: Tensor, y: Tensor, name: str) -> Any:
    """Return ``x / y`` for a non-constant ``y``: ``x · (1 / y)``."""
    return _binary(b, "mul", x, fn(b, "reciprocal", y, name), name)


def leaky_relu(b: Builder, x: Tensor, slope: float, name: str) -> Any:
    """Return LeakyReLU: ``max(x, slope·x)`` for ``0 ≤ slope ≤ 1``, ``min`` above 1, and
    ``relu(x) + slope·min(x, 0)`` for a negative slope."""
    if slope < 0:
        neg = scalar(b, "mul", b.add("clamp", [x], {"min": None, "max": 0.0}, name), slope,
                     name)
        return _binary(b, "add", b.add("relu", [x], {}, name), neg, name)
    op = "maximum" if slope <= 1 else "minimum"
    return _binary(b, op, x, scalar(b, "mul", x, slope, name), name)


def hardsigmoid(b: Builder, x: Tensor, alpha: float, beta: float, name: str) -> Any:
    """Return ``clamp(alpha·x + beta, 0, 1)`` (PyTorch: alpha 1/6, beta 1/2)."""
    y = scalar(b, "add", scalar(b, "mul", x, alpha, name), beta, name)
    return b.add("clamp", [y], {"min": 0.0, "max": 1.0}, name)


def hardswish(b: Builder, x: Tensor, name: str) -> Any:
    """Return ``x · hardsigmoid(x)``."""
    return _binary(b, "mul", x, hardsigmoid(b, x, 1.0 / 6.0, 0.5, name), name)


def elu(b: Builder, x: Tensor, alpha: float, name: str) -> Any:
    """Return ELU: the machine's (alpha 1), else ``relu(x) + alpha · min(elu₁(x), 0)``."""
    e = fn(b, "elu", x, name)
    if alpha == 1.0:
        return e
    neg = scalar(b, "mul", b.add("clamp", [e], {"min": None, "max": 0.0}, name), alpha, name)
    return _binary(b, "add", b.add("relu", [x], {}, name), neg, name)


def softplus(b: Builder, x: Tensor, beta: float, name: str) -> Any:
    """Return ``softplus(beta·x) / beta`` (PyTorch's linear region above its threshold is
    within bf16 rounding of this: ``softplus(z) − z < e⁻²⁰`` for ``z > 20``)."""
    if beta == 1.0:
        return fn(b, "softplus", x, name)
    y = fn(b, "softplus", scalar(b, "mul", x, beta, name), name)
    return scalar(b, "mul", y, 1.0 / beta, name)
