"""The end-to-end error bound of a compiled model with functions, reductions and norms.

The machine's result differs from the float32 model in two ways (``docs/compiler.md`` §8):
the compiler rounds the input, every weight, bias and constant to bf16, and the machine
rounds intermediate results. :func:`error_bound` evaluates the graph with the first
rounding applied (``R``: input and parameters rounded to bf16 as the compiler rounds them,
then exact arithmetic in float64) and propagates, through it, a first-order bound ``e`` on
``|x̂ − x|`` for each value, where ``x̂`` is what the machine computes: every op's result is
charged one rounding, ``u·(|x| + e)`` with u = 2⁻⁸ (whether the machine stores it in
tensor RAM in bf16 or keeps it in an fp32 accumulator, so the bound is conservative for
fused ops), and operand errors propagate by each op's rules below. A matrix layer or
reduction whose sums the compiler cut (``cut``) is charged one rounding more per partial
sum it rounds (one for a sum cut in two, two for one cut in three), each at its worst
case. A test then checks
``|VM − PyTorch| ≤ e + |R − PyTorch|``: the second term is the exact effect of rounding the
parameters, computed, not bounded. The streaming program computes timestep t of the same
graph, so the bound of the graph before ``streaming_transform`` holds for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from compiler.nnir import BINARY_OPS, FUNCTIONS, NNIR, REDUCTIONS, Node, evaluate
from isa.functions import Function, reference
from isa.numerics import round_to_bf16
from isa.program import Program

__all__ = ["U", "error_bound", "cut_layers"]

#: Relative error of one rounding to bf16 (8 significant bits).
U = 2.0**-8
#: Relative error of one fp32 addition.
_U32 = 2.0**-24

#: Lipschitz constants of the functions that are not monotone (SiLU, GELU: their slope
#: stays within these bounds everywhere).
_LIPSCHITZ = {Function.SILU: 1.1, Function.GELU: 1.13, Function.GELU_TANH: 1.13}


def _round(x: np.ndarray, e: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """The error of ``x̂`` (within ``e`` of ``x``) rounded once more."""
    return e + factor * U * (np.abs(x) + e)


def _fn_error(function: Function, x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The propagated error of a function: its largest change over ``[x − e, x + e]``."""
    if function in _LIPSCHITZ:
        return _LIPSCHITZ[function] * e
    y = reference(function, x)
    lo, hi = x - e, x + e
    if function in (Function.RECIP, Function.RSQRT, Function.LOG, Function.SQRT):
        # Monotone on each side of 0; an interval reaching the pole or the domain's edge
        # has no finite bound.
        crosses = (lo <= 0) & (hi >= 0) & (e > 0)
        if function == Function.SQRT:
            lo = np.maximum(lo, 0.0)
            crosses = np.zeros_like(crosses)
    else:
        crosses = np.zeros(x.shape, bool)
    with np.errstate(all="ignore"):
        spread = np.maximum(np.abs(reference(function, lo) - y),
                            np.abs(reference(function, hi) - y))
    return np.where(crosses, np.inf, spread)


def _linear(x: np.ndarray, e: np.ndarray, w: np.ndarray, b: np.ndarray | None,
            y: np.ndarray, cut: int) -> np.ndarray:
    aw = np.abs(w.astype(np.float64))
    mag = np.abs(x) @ aw.T
    return _round(y, e @ aw.T + w.shape[1] * _U32 * mag + _partial(mag, b, cut))


def _partial(mag: np.ndarray, b: np.ndarray | None, cut: int) -> np.ndarray | float:
    """The roundings of partial sums where the compiler cut a matrix layer's or a
    reduction's sums: ``cut`` partials (the sum of some of its terms plus the bias), each
    rounded to bf16 (``docs/compiler.md`` §5a), of magnitude at most the layer's
    ``Σ|w||x| + |b|``."""
    if not cut:
        return 0.0
    return cut * U * (mag + (0.0 if b is None else np.abs(b.astype(np.float64))))


def _node_error(node: Node, xs: list[np.ndarray], es: list[np.ndarray], y: np.ndarray,
                cut: int = 0) -> np.ndarray:
    """The bound on the error of ``node``'s result ``y`` from its operands' (``xs``, ``es``);
    ``cut``: the most partial sums the compiler rounds in one of the node's sums."""
    op, a = node.op, node.attrs
    if op in ("input", "constant"):
        return np.zeros_like(y)
    if op == "linear":
        return _linear(xs[0], es[0], a["weight"], a["bias"], y, cut)
    if op == "conv1d":
        mag_node = Node(node.id, op, node.inputs, node.shape, node.precision,
                        {**a, "weight": np.abs(a["weight"]), "bias": None}, node.name)
        mag = evaluate(mag_node, [np.abs(xs[0]).astype(np.float32)]).astype(np.float64)
        prop = evaluate(mag_node, [es[0].astype(np.float32)]).astype(np.float64)
        taps = a["weight"].shape[1] * a["kernel_size"]
        bias = None if a["bias"] is None else a["bias"].reshape(-1, 1)
        return _round(y, prop + taps * _U32 * mag + _partial(mag, bias, cut))
    if op in BINARY_OPS:
        if len(xs) == 1:
            s = abs(float(a["scalar"]))
            if op == "mul":
                return _round(y, s * es[0])
            return _round(y, es[0], 0.0 if op in ("maximum", "minimum") else 1.0)
        (x0, x1), (e0, e1) = xs, es
        if op == "mul":
            return _round(y, np.abs(x0) * e1 + np.abs(x1) * e0 + e0 * e1)
        if op in ("add", "sub"):
            return _round(y, e0 + e1)
        return np.maximum(e0, e1) + 0 * y  # maximum/minimum of two values: exact
    if op in ("relu", "neg", "clamp", "slice", "concat", "transpose", "reshape", "output"):
        moved = evaluate(node, [e.astype(np.float64) for e in es])
        return np.asarray(moved, np.float64)
    if op == "fn":
        function = FUNCTIONS[a["function"]]
        factor = 1.5 if function == Function.RECIP else 1.0  # ≤ 0.75 ulp (subnormals)
        return _round(y, _fn_error(function, xs[0], es[0]), factor)
    if op in REDUCTIONS:
        axis = a["axis"]
        n = xs[0].shape[axis]
        mag = np.sum(np.abs(xs[0]), axis=axis, keepdims=True)
        if op == "amax":
            return np.max(es[0], axis=axis, keepdims=True) + 0 * y
        # A mean is a sum by tiles of bf16(1/n), which R uses too.
        scale = 1.0 if op == "sum" else _inverse(n)
        return _round(y, scale * (np.sum(es[0], axis=axis, keepdims=True) + n * _U32 * mag)
                      + _partial(scale * mag, None, cut))
    raise ValueError(f"no error rule for op {op!r}")


def error_bound(nnir: NNIR, *inputs: np.ndarray, cut: Mapping[str, int] | None = None
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return, per output of the non-streaming ``nnir`` run on ``inputs``, the value of
    ``R`` (the graph with input and parameters rounded to bf16, in float64) and the bound
    on the machine's distance from it (see the module docstring). ``cut`` maps the names
    of the nodes some of whose sums the compiler cut to the partial sums it rounds in one
    of them (:func:`cut_layers`)."""
    cut = cut or {}
    values: dict[int, np.ndarray] = {}
    errors: dict[int, np.ndarray] = {}
    for node in nnir.nodes:
        node = _rounded(node)
        xs = [values[i] for i in node.inputs]
        if node.op == "input":
            y = _bf16(np.asarray(inputs[node.attrs["index"]]))
        elif node.op in REDUCTIONS or node.op == "fn" or node.op in BINARY_OPS:
            y = _evaluate64(node, xs)
        else:
            y = np.asarray(evaluate(node, xs), np.float64)
        values[node.id] = y
        with np.errstate(all="ignore"):
            errors[node.id] = np.broadcast_to(
                _node_error(node, xs, [errors[i] for i in node.inputs], y,
                            cut.get(node.name or f"%{node.id}", 0)), y.shape)
    return [(values[i], errors[i]) for i in nnir.outputs]


def cut_layers(program: Program) -> dict[str, int]:
    """Return, per name of a node some of whose sums ``program`` cuts, the most partial
    sums it rounds in one of them (its ``meta["layers"]``' ``partial_roundings``)."""
    return {layer["name"]: layer["partial_roundings"]
            for layer in program.meta.get("layers", []) if layer.get("partial_sums")}


def _inverse(n: int) -> float:
    """1/n as the compiler's mean tile holds it (bf16)."""
    return float(round_to_bf16(np.float32(1.0 / n)))


def _bf16(x: np.ndarray) -> np.ndarray:
    return np.asarray(round_to_bf16(np.asarray(x, np.float32)), np.float64)


def _rounded(node: Node) -> Node:
    """``node`` with its weights, biases, constants and scalar rounded to bf16, as the
    compiler rounds them."""
    attrs = dict(node.attrs)
    for key in ("weight", "bias", "value"):
        if attrs.get(key) is not None:
            attrs[key] = _bf16(attrs[key]).astype(np.float32)
    if "scalar" in attrs:
        attrs["scalar"] = float(_bf16(np.float32(attrs["scalar"])))
    return Node(node.id, node.op, node.inputs, node.shape, node.precision, attrs, node.name)


def _evaluate64(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    """Float64 semantics of the elementwise ops and reductions (``mean``: by bf16(1/n))."""
    a = node.attrs
    if node.op == "fn":
        return reference(FUNCTIONS[a["function"]], xs[0])
    if node.op in REDUCTIONS:
        axis = a["axis"]
        if node.op == "amax":
            return np.max(xs[0], axis=axis, keepdims=True)
        scale = 1.0 if node.op == "sum" else _inverse(xs[0].shape[axis])
        return np.sum(xs[0], axis=axis, keepdims=True) * scale
    f = BINARY_OPS[node.op]
    if len(xs) == 2:
        return f(*xs)
    s = np.float64(a["scalar"])
    return f(s, xs[0]) if a["reverse"] else f(xs[0], s)
