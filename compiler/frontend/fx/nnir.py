"""Translation of a shape-annotated ``torch.fx.GraphModule`` to :class:`compiler.nnir.NNIR`."""

from __future__ import annotations

import functools
import inspect
import numbers
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from compiler.frontend import _composite as composite
from compiler.frontend import _recurrent as recurrent
from compiler.frontend.nn import PaddedConv1d, Scan
from compiler.nnir import NNIR, Node, broadcastable, compact, evaluate, infer_shape
from isa.numerics import NumberFormat

__all__ = ["to_nnir"]


def to_nnir(
    graph_module: fx.GraphModule,
    inputs_precisions: Sequence[NumberFormat] | None = None,
    outputs_precisions: Sequence[NumberFormat] | None = None,
) -> NNIR:
    """Translate a traced PyTorch model to NNIR.

    Parameters
    ----------
    graph_module : torch.fx.GraphModule
        A model traced and shape-annotated by :func:`compiler.frontend.fx.prepare_shape`.
    inputs_precisions, outputs_precisions : sequence of NumberFormat, optional
        Precision of each model input / output, in order; default all ``NumberFormat.BF16``,
        the only precision the machine's ports carry (fp32 is refused). Every other node is
        BF16.

    Returns
    -------
    NNIR
        A graph whose ``input`` nodes follow the model's arguments and whose ``output`` nodes
        follow its (possibly tuple) result. Operations on constants only are folded;
        relabels that change nothing are dropped.

    Raises
    ------
    ValueError
        If any operation is unsupported: one error lists every such operation with where it
        came from (module path, or fx node name and source line). Also if the module has no
        shape annotations, the precision lists have the wrong length, or a precision is not
        BF16.
    """
    if not isinstance(graph_module, fx.GraphModule):
        raise ValueError(
            f"to_nnir takes the GraphModule returned by compiler.frontend.fx.prepare_shape, "
            f"not {type(graph_module).__name__}"
        )
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    (output,) = [n for n in graph_module.graph.nodes if n.op == "output"]
    n_outputs = len(_flatten(output.args[0]))
    inputs_precisions = _precisions("inputs_precisions", inputs_precisions, len(placeholders))
    outputs_precisions = _precisions("outputs_precisions", outputs_precisions, n_outputs)
    converter = _Converter(graph_module, inputs_precisions, outputs_precisions)
    for node in graph_module.graph.nodes:
        converter.convert(node)
    if converter.errors:
        raise ValueError(
            "Unsupported operations encountered translating to NNIR:\n"
            + "\n".join(f"  - {e}" for e in converter.errors)
        )
    b = converter.builder
    return compact(b.nodes, b.inputs, b.outputs, streaming=False)


def _precisions(
    what: str, precisions: Sequence[NumberFormat] | None, count: int
) -> list[NumberFormat]:
    if precisions is None:
        return [NumberFormat.BF16] * count
    precisions = list(precisions)
    if len(precisions) != count or not all(isinstance(p, NumberFormat) for p in precisions):
        raise ValueError(f"{what} must be a list of {count} NumberFormat, not {precisions!r}")
    for k, p in enumerate(precisions):
        if p != NumberFormat.BF16:
            # The machine's ports carry bf16 beats; fp32 there needs a machine change.
            raise ValueError(f"{what}[{k}] is {p}: the machine's inputs and outputs are "
                             "bf16 only; leave the option out (values are rounded to bf16 "
                             "on the way in)")
    return precisions


@dataclass(frozen=True)
class _Tensor:
    """A tensor value during translation: the NNIR node holding it and its shape."""

    id: int
    shape: tuple[int, ...]


class _Unsupported(Exception):
    """The current fx node cannot be translated (message: why)."""


class _Failed:
    """Value of an fx node whose translation failed (its users are skipped, not reported)."""


_FAILED = _Failed()


@dataclass(frozen=True)
class _Unavailable:
    """A result the machine does not compute (a recurrent layer's final state): using it is
    an error saying ``why``."""

    why: str


class _Builder:
    """Appends NNIR nodes, folding every operation whose operands are all constants."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.constants: dict[int, np.ndarray] = {}

    def add(
        self,
        op: str,
        operands: Sequence[_Tensor],
        attrs: dict,
        name: str,
        precision: NumberFormat = NumberFormat.BF16,
    ) -> _Tensor:
        if _identity(op, attrs):
            return operands[0]
        shape = infer_shape(op, [t.shape for t in operands], attrs)
        node = Node(len(self.nodes), op, [t.id for t in operands], shape, precision, attrs, name)
        if op != "output" and operands and all(t.id in self.constants for t in operands):
            return self.constant(evaluate(node, [self.constants[t.id] for t in operands]), name)
        self.nodes.append(node)
        return _Tensor(node.id, shape)

    def constant(self, value: np.ndarray | torch.Tensor, name: str) -> _Tensor:
        array = _frozen(value)
        t = self.add("constant", [], {"value": array}, name)
        self.constants[t.id] = array
        return t

    def input(self, shape: tuple[int, ...], precision: NumberFormat, name: str) -> _Tensor:
        node = Node(
            len(self.nodes), "input", [], shape, precision, {"index": len(self.inputs)}, name
        )
        self.nodes.append(node)
        self.inputs.append(node.id)
        return _Tensor(node.id, shape)

    def output(self, x: _Tensor, precision: NumberFormat, name: str) -> None:
        t = self.add("output", [x], {"index": len(self.outputs)}, name, precision)
        self.outputs.append(t.id)


def _identity(op: str, attrs: dict) -> bool:
    """Return whether an op with these attributes returns its operand (``x · 1``, ``x + 0``,
    ``x − 0``: a multiply by a weight of ones, a norm without shift)."""
    if "scalar" not in attrs or attrs["reverse"]:
        return False
    return (op, attrs["scalar"]) in (("mul", 1.0), ("add", 0.0), ("sub", 0.0))


def _frozen(value: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
    """Return a read-only float32 copy of a weight (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    array = np.array(value, dtype=np.float32)
    array.flags.writeable = False
    return array


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [leaf for v in value for leaf in _flatten(v)]
    return [value]


class _Converter:
    """Translates fx nodes one at a time, collecting the unsupported ones."""

    def __init__(
        self,
        gm: fx.GraphModule,
        inputs_precisions: list[NumberFormat],
        outputs_precisions: list[NumberFormat],
    ) -> None:
        self.gm = gm
        self.inputs_precisions = inputs_precisions
        self.outputs_precisions = outputs_precisions
        self.builder = _Builder()
        self.env: dict[fx.Node, Any] = {}
        self.errors: list[str] = []
        self.node: fx.Node | None = None  # the fx node being translated
        self.name = ""  # NNIR name of the fx node being translated
        self.modules = self._modules()
        self.functions = self._functions()
        self.methods = self._methods()

    # -- driver ---------------------------------------------------------------------------

    def convert(self, node: fx.Node) -> None:
        """Translate one fx node, or record why it cannot be translated."""
        self.node, self.name = node, _node_name(node)
        what, handler = self._dispatch(node)
        if handler is None or isinstance(handler, str):
            reason = f": {handler}" if handler else ""
            self.errors.append(f"unsupported {what} at {_where(node)}{reason}")
            self.env[node] = _FAILED
            return
        args = fx.node.map_aggregate(node.args, self._value)
        kwargs = fx.node.map_aggregate(node.kwargs, self._value)
        values = _flatten([list(args), list(kwargs.values())])
        if any(v is _FAILED for v in values):
            self.env[node] = _FAILED
            return
        unavailable = [v for v in values if isinstance(v, _Unavailable)]
        if unavailable and handler != self._getitem and node.op != "output":
            self.errors.append(f"{what} at {_where(node)}: {unavailable[0].why}")
            self.env[node] = _FAILED
            return
        try:
            try:
                inspect.signature(handler).bind(*args, **kwargs)
            except TypeError as e:
                raise _Unsupported(f"unsupported arguments ({e})") from e
            value = handler(*args, **kwargs)
        except _Unsupported as e:
            self.errors.append(f"{what} at {_where(node)}: {e}")
            value = _FAILED
        if isinstance(value, _Tensor) and "tensor_meta" in node.meta:
            expected = tuple(node.meta["tensor_meta"].shape)
            if value.shape != expected:
                raise RuntimeError(
                    f"internal error translating {_where(node)}: NNIR shape {list(value.shape)}"
                    f", PyTorch shape {list(expected)}"
                )
        self.env[node] = value

    def _value(self, arg: Any) -> Any:
        return self.env[arg] if isinstance(arg, fx.Node) else arg

    def _dispatch(self, node: fx.Node) -> tuple[str, Callable[..., Any] | str | None]:
        """Return (description, handler) of a node.

        The handler is None for an unsupported op, or a string saying why it is unsupported.
        """
        if node.op == "placeholder":
            return "input", self._placeholder
        if node.op == "get_attr":
            return "attribute", self._get_attr
        if node.op == "output":
            return "output", self._output
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            what = f"module {_class_name(type(module))}"
            if isinstance(module, nn.Conv1d) and not isinstance(module, PaddedConv1d):
                return what, _plain_conv1d(module)
            for cls, handler in self.modules:
                if isinstance(module, cls):
                    if isinstance(handler, str):
                        return what, handler
                    return what, functools.partial(handler, module)
            return what, None
        if node.op == "call_method":
            return f"method Tensor.{node.target}", self.methods.get(node.target)
        return f"function {_function_name(node.target)}", self.functions.get(node.target)

    # -- graph boundary -------------------------------------------------------------------

    def _placeholder(self, *default: Any) -> _Tensor:
        assert self.node is not None
        if "tensor_meta" not in self.node.meta:
            raise ValueError(
                f"input {self.node.name!r} has no shape annotation: trace the model with "
                f"compiler.frontend.fx.prepare_shape(model, *inputs) first"
            )
        shape = tuple(self.node.meta["tensor_meta"].shape)
        precision = self.inputs_precisions[len(self.builder.inputs)]
        return self.builder.input(shape, precision, str(self.node.target))

    def _get_attr(self) -> _Tensor:
        assert self.node is not None
        value = self.gm
        for part in str(self.node.target).split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor):
            raise _Unsupported(f"attribute of type {type(value).__name__} is not a tensor")
        return self.builder.constant(value, self.name)

    def _output(self, result: Any) -> None:
        for i, value in enumerate(_flatten(result)):
            if isinstance(value, _Unavailable):
                raise _Unsupported(f"output {i}: {value.why}")
            if not isinstance(value, _Tensor):
                raise _Unsupported(f"output {i} is a {type(value).__name__}, not a tensor")
            self.builder.output(value, self.outputs_precisions[i], f"output {i}")

    # -- dispatch tables ------------------------------------------------------------------

    def _modules(self) -> list[tuple[type, Callable[..., Any] | str]]:
        return [
            (PaddedConv1d, self._padded_conv1d),
            (nn.LSTM, self._lstm),
            (nn.GRU, self._gru),
            (nn.RNN, self._rnn),
            (Scan, self._scan),
            (nn.Linear, lambda m, x: self._linear(x, m.weight, m.bias)),
            (nn.ReLU, lambda m, x: self._unary("relu", x)),
            (nn.ReLU6, lambda m, x: self._clamp(x, 0.0, 6.0)),
            (nn.Hardtanh, lambda m, x: self._clamp(x, m.min_val, m.max_val)),
            (nn.Identity, lambda m, x: x),
            (nn.Dropout, lambda m, x: self._dropout(x, m.p, m.training)),
            (nn.Dropout1d, lambda m, x: self._dropout(x, m.p, m.training)),
            (nn.Flatten, lambda m, x: self._relabel(x)),
            (nn.Unflatten, lambda m, x: self._relabel(x)),
            (nn.Tanh, lambda m, x: self._fn("tanh", x)),
            (nn.Sigmoid, lambda m, x: self._fn("sigmoid", x)),
            (nn.SiLU, lambda m, x: self._fn("silu", x)),
            (nn.GELU, lambda m, x: self._gelu(x, m.approximate)),
            (nn.Softplus, lambda m, x: self._softplus(x, m.beta, m.threshold)),
            (nn.ELU, lambda m, x: self._elu(x, m.alpha)),
            (nn.LeakyReLU, lambda m, x: self._leaky_relu(x, m.negative_slope)),
            (nn.Hardswish, lambda m, x: composite.hardswish(self.builder, self._tensor(x),
                                                            self.name)),
            (nn.Hardsigmoid, lambda m, x: self._hardsigmoid(x)),
            (nn.Softmax, lambda m, x: self._softmax(False)(x, m.dim)),
            (nn.LogSoftmax, lambda m, x: self._softmax(True)(x, m.dim)),
            (nn.LayerNorm, self._layer_norm_module),
            (nn.RMSNorm, lambda m, x: self._rms_norm(x, m.normalized_shape, m.weight, m.eps)),
            (nn.BatchNorm1d, self._batch_norm_module),
        ]

    def _functions(self) -> dict[Any, Callable[..., Any]]:
        b = self._binary
        return {
            operator.add: lambda a, c: b("add", a, c),
            operator.sub: lambda a, c: b("sub", a, c),
            operator.mul: lambda a, c: b("mul", a, c),
            operator.truediv: self._div,
            operator.floordiv: self._static(operator.floordiv),
            operator.neg: lambda x: self._unary("neg", x),
            operator.pos: lambda x: x,
            operator.matmul: self._matmul,
            operator.getitem: self._getitem,
            getattr: self._getattr,
            torch.add: self._add_alpha("add"),
            torch.sub: self._add_alpha("sub"),
            torch.subtract: self._add_alpha("sub"),
            torch.mul: lambda input, other: b("mul", input, other),
            torch.multiply: lambda input, other: b("mul", input, other),
            torch.div: self._div,
            torch.true_divide: self._div,
            torch.neg: lambda input: self._unary("neg", input),
            torch.negative: lambda input: self._unary("neg", input),
            torch.maximum: lambda input, other: b("maximum", input, other),
            torch.minimum: lambda input, other: b("minimum", input, other),
            torch.max: self._pointwise_max("maximum"),
            torch.min: self._pointwise_max("minimum"),
            torch.relu: lambda input: self._unary("relu", input),
            F.relu: lambda input, inplace=False: self._unary("relu", input),
            F.relu6: lambda input, inplace=False: self._clamp(input, 0.0, 6.0),
            torch.clamp: self._clamp,
            torch.clip: self._clamp,
            F.hardtanh: lambda input, min_val=-1.0, max_val=1.0, inplace=False: self._clamp(
                input, min_val, max_val
            ),
            F.linear: self._linear,
            torch.matmul: self._matmul,
            torch.narrow: self._narrow,
            torch.cat: self._cat,
            torch.concat: self._cat,
            torch.concatenate: self._cat,
            torch.transpose: self._transpose,
            torch.swapaxes: self._transpose,
            torch.swapdims: self._transpose,
            torch.t: lambda input: self._transpose(input, 0, -1),
            torch.permute: self._permute,
            torch.reshape: self._relabel,
            torch.flatten: self._relabel,
            torch.squeeze: self._relabel,
            torch.unsqueeze: self._relabel,
            F.dropout: lambda input, p=0.5, training=True, inplace=False: self._dropout(
                input, p, training
            ),
            torch.tanh: lambda input: self._fn("tanh", input),
            torch.pow: self._pow,
            operator.pow: self._pow,
            F.tanh: lambda input: self._fn("tanh", input),
            torch.sigmoid: lambda input: self._fn("sigmoid", input),
            F.sigmoid: lambda input: self._fn("sigmoid", input),
            torch.exp: lambda input: self._fn("exp", input),
            torch.log: lambda input: self._fn("log", input),
            torch.abs: lambda input: self._fn("abs", input),
            torch.absolute: lambda input: self._fn("abs", input),
            torch.sqrt: lambda input: self._fn("sqrt", input),
            torch.rsqrt: lambda input: self._fn("rsqrt", input),
            torch.reciprocal: lambda input: self._fn("reciprocal", input),
            F.silu: lambda input, inplace=False: self._fn("silu", input),
            F.gelu: lambda input, approximate="none": self._gelu(input, approximate),
            F.softplus: lambda input, beta=1.0, threshold=20.0: self._softplus(
                input, beta, threshold),
            F.elu: lambda input, alpha=1.0, inplace=False: self._elu(input, alpha),
            F.leaky_relu: lambda input, negative_slope=0.01, inplace=False: self._leaky_relu(
                input, negative_slope),
            F.hardswish: lambda input, inplace=False: composite.hardswish(
                self.builder, self._tensor(input), self.name),
            F.hardsigmoid: lambda input, inplace=False: self._hardsigmoid(input),
            torch.sum: self._reduction("sum"),
            torch.mean: self._reduction("mean"),
            torch.amax: self._reduction("amax"),
            torch.softmax: self._softmax(False),
            F.softmax: self._softmax(False),
            torch.log_softmax: self._softmax(True),
            F.log_softmax: self._softmax(True),
            F.layer_norm: self._layer_norm,
            F.rms_norm: self._rms_norm,
            F.batch_norm: self._batch_norm,
        }

    def _methods(self) -> dict[str, Callable[..., Any]]:
        b = self._binary
        return {
            "add": self._add_alpha("add"),
            "sub": self._add_alpha("sub"),
            "mul": lambda x, other: b("mul", x, other),
            "div": self._div,
            "neg": lambda x: self._unary("neg", x),
            "relu": lambda x: self._unary("relu", x),
            "clamp": self._clamp,
            "clip": self._clamp,
            "maximum": lambda x, other: b("maximum", x, other),
            "minimum": lambda x, other: b("minimum", x, other),
            "matmul": self._matmul,
            "narrow": self._narrow,
            "transpose": self._transpose,
            "swapaxes": self._transpose,
            "swapdims": self._transpose,
            "t": lambda x: self._transpose(x, 0, -1),
            "permute": lambda x, *dims: self._permute(x, _dims(dims)),
            "reshape": self._relabel,
            "view": self._relabel,
            "flatten": self._relabel,
            "squeeze": self._relabel,
            "unsqueeze": self._relabel,
            "contiguous": lambda x: x,
            **{name: functools.partial(self._fn, function) for name, function in (
                ("tanh", "tanh"), ("sigmoid", "sigmoid"), ("exp", "exp"), ("log", "log"),
                ("abs", "abs"), ("absolute", "abs"), ("sqrt", "sqrt"), ("rsqrt", "rsqrt"),
                ("reciprocal", "reciprocal"))},
            "pow": self._pow,
            "sum": self._reduction("sum"),
            "mean": self._reduction("mean"),
            "amax": self._reduction("amax"),
            "softmax": self._softmax(False),
            "log_softmax": self._softmax(True),
            "size": self._size,
            "dim": lambda x: len(self._tensor(x).shape),
        }

    # -- operand helpers ------------------------------------------------------------------

    def _tensor(self, value: Any) -> _Tensor:
        if isinstance(value, _Unavailable):
            raise _Unsupported(value.why)
        if not isinstance(value, _Tensor):
            raise _Unsupported(f"expected a tensor operand, got {value!r}")
        return value

    def _constant_value(self, t: _Tensor) -> np.ndarray | None:
        return self.builder.constants.get(t.id)

    def _shape(self) -> tuple[int, ...]:
        """PyTorch's output shape of the fx node being translated."""
        assert self.node is not None
        if "tensor_meta" not in self.node.meta:
            raise _Unsupported("no shape annotation (trace with prepare_shape)")
        return tuple(self.node.meta["tensor_meta"].shape)

    @staticmethod
    def _static(fn: Callable[..., Any]) -> Callable[..., Any]:
        def static(*args: Any) -> Any:
            if any(isinstance(a, _Tensor) for a in args):
                raise _Unsupported("only supported on Python numbers (shape arithmetic)")
            return fn(*args)

        return static

    # -- ops ------------------------------------------------------------------------------

    def _padded_conv1d(self, module: PaddedConv1d, x: Any) -> _Tensor:
        x = self._tensor(x)
        attrs = {
            "weight": _frozen(module.weight),
            "bias": _frozen(module.bias),
            "groups": module.groups,
            "kernel_size": module.kernel_size[0],
        }
        if len(x.shape) < 2:
            raise _Unsupported(f"input shape {list(x.shape)} has no [C, T] axes")
        return self.builder.add("conv1d", [x], attrs, self.name)

    def _linear(self, input: Any, weight: Any, bias: Any = None) -> _Tensor:
        x = self._tensor(input)
        w = weight if isinstance(weight, torch.Tensor) else self._const_operand(weight, "weight")
        if bias is not None and not isinstance(bias, torch.Tensor):
            bias = self._const_operand(bias, "bias")
        attrs = {"weight": _frozen(w), "bias": _frozen(bias)}
        if attrs["weight"].ndim != 2:
            raise _Unsupported(f"weight of shape {list(attrs['weight'].shape)} is not 2-d")
        return self.builder.add("linear", [x], attrs, self.name)

    def _const_operand(self, value: Any, what: str) -> np.ndarray:
        array = self._constant_value(self._tensor(value))
        if array is None:
            raise _Unsupported(f"the {what} is not a constant (dynamic weights are unsupported)")
        return array

    def _matmul(self, input: Any, other: Any) -> _Tensor:
        a, b = self._tensor(input), self._tensor(other)
        wa, wb = self._constant_value(a), self._constant_value(b)
        if wb is not None and wb.ndim == 2 and len(a.shape) >= 1:
            return self.builder.add(
                "linear", [a], {"weight": _frozen(wb.T), "bias": None}, self.name
            )
        if wa is not None and wa.ndim == 2 and len(b.shape) >= 2:
            # W @ x contracts axis -2 of x: x^T, then Linear, then transpose back.
            perm = tuple(range(len(b.shape) - 2)) + (len(b.shape) - 1, len(b.shape) - 2)
            xt = self.builder.add("transpose", [b], {"perm": perm}, self.name)
            y = self.builder.add("linear", [xt], {"weight": _frozen(wa), "bias": None}, self.name)
            return self.builder.add("transpose", [y], {"perm": perm}, self.name)
        raise _Unsupported(
            f"matmul of shapes {list(a.shape)} and {list(b.shape)} needs one operand to be a "
            f"2-d constant (and the other at least 1-d / 2-d)"
        )

    def _binary(self, op: str, a: Any, b: Any) -> Any:
        """Elementwise ``a op b`` for any mix of tensors and Python numbers."""
        if not isinstance(a, _Tensor) and not isinstance(b, _Tensor):
            return self._static(_PYTHON_BINARY[op])(a, b)
        for t in (a, b):
            if isinstance(t, _Tensor) or isinstance(t, numbers.Real):
                continue
            raise _Unsupported(f"operand {t!r} is neither a tensor nor a number")
        a, b = self._scalar_of(a, b), self._scalar_of(b, a)
        if not isinstance(b, _Tensor):
            return self.builder.add(op, [a], {"scalar": float(b), "reverse": False}, self.name)
        if not isinstance(a, _Tensor):
            reverse = op == "sub"
            attrs = {"scalar": float(a), "reverse": reverse}
            return self.builder.add(op, [b], attrs, self.name)
        if a.shape == b.shape or broadcastable(a.shape, b.shape):
            return self.builder.add(op, [a, b], {}, self.name)
        out = tuple(np.broadcast_shapes(a.shape, b.shape))
        const_a, const_b = self._constant_value(a), self._constant_value(b)
        if const_b is not None and out == a.shape:
            b = self._lift_rank(const_b, len(out))
        elif const_a is not None and out == b.shape:
            a = self._lift_rank(const_a, len(out))
        else:
            raise _Unsupported(
                f"operands of shapes {list(a.shape)} and {list(b.shape)}: only operands "
                f"of the same rank may be broadcast"
            )
        return self.builder.add(op, [a, b], {}, self.name)

    def _scalar_of(self, value: Any, other: Any = None) -> Any:
        """Return ``value`` as a float if it is a constant tensor that might as well be one.

        That is: one element, or all elements equal and no larger than ``other`` (the other
        operand) after broadcasting. Anything else is returned unchanged.
        """
        if not isinstance(value, _Tensor):
            return value
        array = self._constant_value(value)
        if array is None or array.size == 0:
            return value
        if array.size > 1:
            shape = other.shape if isinstance(other, _Tensor) else ()
            if np.broadcast_shapes(array.shape, shape) != shape or (array != array.flat[0]).any():
                return value
        return float(array.flat[0])

    def _lift_rank(self, value: np.ndarray, rank: int) -> _Tensor:
        return self.builder.constant(
            value.reshape((1,) * (rank - value.ndim) + value.shape), self.name
        )

    def _add_alpha(self, op: str) -> Callable[..., Any]:
        def add(input: Any, other: Any, *, alpha: float = 1) -> Any:
            if alpha != 1:
                other = self._binary("mul", other, alpha)
            return self._binary(op, input, other)

        return add

    def _div(self, input: Any, other: Any, *, rounding_mode: str | None = None) -> Any:
        if rounding_mode is not None:
            raise _Unsupported(f"rounding_mode={rounding_mode!r}")
        if not isinstance(input, _Tensor) and not isinstance(other, _Tensor):
            return self._static(operator.truediv)(input, other)
        other = self._scalar_of(other)
        if isinstance(other, numbers.Real):
            return self._binary("mul", input, float(_reciprocal(np.float64(other))))
        divisor = self._constant_value(self._tensor(other))
        if divisor is not None:
            return self._binary(
                "mul", input, self.builder.constant(_reciprocal(divisor), self.name))
        # By a tensor: 1 / y on the function unit, then a multiply.
        return self._binary("mul", input, self._fn("reciprocal", other))

    def _pointwise_max(self, op: str) -> Callable[..., Any]:
        def fn(input: Any, other: Any) -> Any:
            if not isinstance(other, _Tensor):
                raise _Unsupported("only the pointwise form (two tensors) is supported")
            return self._binary(op, input, other)

        return fn

    def _unary(self, op: str, x: Any) -> _Tensor:
        return self.builder.add(op, [self._tensor(x)], {}, self.name)

    def _clamp(self, input: Any, min: Any = None, max: Any = None) -> _Tensor:
        bounds = [self._scalar_of(v) for v in (min, max)]
        if any(v is not None and not isinstance(v, numbers.Real) for v in bounds):
            raise _Unsupported("clamp bounds must be numbers or None")
        lo, hi = (None if v is None else float(v) for v in bounds)
        x = self._tensor(input)
        if lo == 0.0 and hi is None:
            return self.builder.add("relu", [x], {}, self.name)
        return self.builder.add("clamp", [x], {"min": lo, "max": hi}, self.name)

    def _dropout(self, x: Any, p: float, training: bool) -> Any:
        if training and p > 0:
            raise _Unsupported("dropout in training mode; call model.eval() before tracing")
        return self._tensor(x)

    def _relabel(self, x: Any, *args: Any, **kwargs: Any) -> _Tensor:
        """A reshape-like op (view, flatten, squeeze, ...): becomes ``reshape`` to its shape."""
        x = self._tensor(x)
        source = self.builder.nodes[x.id]
        if source.op == "reshape":  # a reshape of a reshape is one reshape
            x = _Tensor(source.inputs[0], self.builder.nodes[source.inputs[0]].shape)
        shape = self._shape()
        if shape == x.shape:
            return x
        return self.builder.add("reshape", [x], {"shape": shape}, self.name)

    def _transpose(self, x: Any, dim0: int, dim1: int) -> _Tensor:
        x = self._tensor(x)
        perm = list(range(len(x.shape)))
        if perm:
            d0, d1 = (_axis(d, len(x.shape)) for d in (dim0, dim1))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        return self._permute(x, perm)

    def _permute(self, input: Any, dims: Sequence[int]) -> _Tensor:
        x = self._tensor(input)
        perm = tuple(_axis(d, len(x.shape)) for d in dims)
        source = self.builder.nodes[x.id]
        if source.op == "transpose":  # a transpose of a transpose is one transpose
            perm = tuple(source.attrs["perm"][p] for p in perm)
            x = _Tensor(source.inputs[0], self.builder.nodes[source.inputs[0]].shape)
        if perm == tuple(range(len(x.shape))):
            return x
        return self.builder.add("transpose", [x], {"perm": perm}, self.name)

    def _slice(self, x: _Tensor, axis: int, start: int, stop: int) -> _Tensor:
        if (start, stop) == (0, x.shape[axis]):
            return x
        attrs = {"axis": axis, "start": start, "stop": max(start, stop)}
        return self.builder.add("slice", [x], attrs, self.name)

    def _narrow(self, input: Any, dim: int, start: int, length: int) -> _Tensor:
        x = self._tensor(input)
        axis = _axis(dim, len(x.shape))
        start = start + x.shape[axis] if start < 0 else start
        return self._slice(x, axis, start, start + length)

    def _getitem(self, value: Any, index: Any) -> Any:
        if not isinstance(value, _Tensor):
            return self._static(operator.getitem)(value, index)
        index = index if isinstance(index, tuple) else (index,)
        if sum(i is Ellipsis for i in index) > 1:
            raise _Unsupported("more than one Ellipsis")
        n_real = sum(i is not None and i is not Ellipsis for i in index)
        if n_real > len(value.shape):
            raise _Unsupported(f"too many indices for shape {list(value.shape)}")
        if Ellipsis in index:
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (len(value.shape) - n_real) + index[k + 1 :]
        x, axis = value, 0
        for i in index:
            if i is None:
                continue
            if isinstance(i, bool) or not isinstance(i, (int, slice)):
                raise _Unsupported(f"index {i!r}: only integers and slices are supported")
            size = x.shape[axis]
            if isinstance(i, int):
                if not -size <= i < size:
                    raise _Unsupported(f"index {i} is out of range for size {size}")
                start, stop, step = i % size, i % size + 1, 1
            else:
                start, stop, step = i.indices(size)
            if step != 1:
                raise _Unsupported(f"slice step {step}: only step 1 is supported")
            x = self._slice(x, axis, start, stop)
            axis += 1
        return self._relabel(x)

    def _getattr(self, value: Any, attr: str) -> Any:
        x = self._tensor(value)
        if attr == "shape":
            return torch.Size(x.shape)
        if attr == "ndim":
            return len(x.shape)
        if attr == "T":
            return self._permute(x, tuple(reversed(range(len(x.shape)))))
        if attr == "mT":
            return self._transpose(x, -2, -1)
        raise _Unsupported(f"tensor attribute {attr!r}")

    def _size(self, x: Any, dim: int | None = None) -> Any:
        shape = torch.Size(self._tensor(x).shape)
        return shape if dim is None else shape[dim]

    def _cat(self, tensors: Sequence[Any], dim: int = 0) -> _Tensor:
        operands = [self._tensor(t) for t in tensors]
        axis = _axis(dim, len(operands[0].shape))
        if len(operands) == 1:
            return operands[0]
        return self.builder.add("concat", operands, {"axis": axis}, self.name)

    # -- functions, reductions and norms (compiler/frontend/_composite.py) ----------------

    def _fn(self, function: str, x: Any) -> _Tensor:
        return composite.fn(self.builder, function, self._tensor(x), self.name)

    def _pow(self, input: Any, exponent: Any) -> Any:
        if not isinstance(input, _Tensor) and not isinstance(exponent, _Tensor):
            return self._static(operator.pow)(input, exponent)
        exponent = self._scalar_of(exponent)
        y = None
        if isinstance(exponent, numbers.Real):
            y = composite.power(self.builder, self._tensor(input), float(exponent), self.name)
        if y is None:
            raise _Unsupported(f"exponent {exponent!r}: only 1, 2, 0.5, -0.5 and -1")
        return y

    def _gelu(self, x: Any, approximate: str) -> _Tensor:
        if approximate not in ("none", "tanh"):
            raise _Unsupported(f"approximate={approximate!r} (only 'none' and 'tanh')")
        return self._fn("gelu" if approximate == "none" else "gelu_tanh", x)

    def _softplus(self, x: Any, beta: float, threshold: float) -> _Tensor:
        if not beta > 0:
            raise _Unsupported(f"beta={beta} (only beta > 0)")
        if beta * threshold < 15:
            # Below about 15, x and softplus(x) differ at bf16 resolution, so PyTorch's
            # switch to x at the threshold would be visible.
            raise _Unsupported(f"threshold={threshold} with beta={beta}: only thresholds "
                               "with beta * threshold >= 15 (the default 20 is)")
        return composite.softplus(self.builder, self._tensor(x), float(beta), self.name)

    def _elu(self, x: Any, alpha: float) -> _Tensor:
        return composite.elu(self.builder, self._tensor(x), float(alpha), self.name)

    def _leaky_relu(self, x: Any, slope: float) -> _Tensor:
        return composite.leaky_relu(self.builder, self._tensor(x), float(slope), self.name)

    def _hardsigmoid(self, x: Any) -> _Tensor:
        return composite.hardsigmoid(self.builder, self._tensor(x), 1.0 / 6.0, 0.5, self.name)

    def _one_axis(self, x: _Tensor, dims: Any, what: str) -> int:
        """Return the one axis ``dims`` names (None or (): all axes, so ``x`` must be 1-d).

        The back end reduces only the data (last) axis; a streaming model's other axes
        become it once time is removed, which ``to_program`` checks."""
        rank = len(x.shape)
        if dims is None or dims == ():
            dims = list(range(rank))
        elif isinstance(dims, int):
            dims = [dims]
        axes = sorted({_axis(int(d), rank) for d in dims})
        if len(axes) != 1:
            raise _Unsupported(f"{what} over axes {axes} of a {rank}-d tensor: only over one "
                               "axis")
        return axes[0]

    def _reduction(self, op: str) -> Callable[..., Any]:
        def reduce(input: Any, dim: Any = None, keepdim: bool = False, *,
                   dtype: Any = None) -> _Tensor:
            x = self._tensor(input)
            if dtype is not None and not dtype.is_floating_point:
                raise _Unsupported(f"dtype={dtype}")
            axis = self._one_axis(x, dim, op)
            return composite.reduce(self.builder, op, x, axis, bool(keepdim), self.name)

        return reduce

    def _softmax(self, log: bool) -> Callable[..., Any]:
        def softmax(input: Any, dim: Any = None, _stacklevel: int = 3,
                    dtype: Any = None) -> _Tensor:
            x = self._tensor(input)
            if dim is None:
                raise _Unsupported("softmax without dim")
            axis = self._one_axis(x, dim, "softmax")
            f = composite.log_softmax if log else composite.softmax
            return f(self.builder, x, axis, self.name)

        return softmax

    def _norm_shape(self, x: _Tensor, normalized_shape: Any) -> None:
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
            tuple(normalized_shape)
        if shape != x.shape[-1:]:
            raise _Unsupported(f"normalized_shape {list(shape)} of input {list(x.shape)}: "
                               "only the last axis")

    def _optional_constant(self, value: Any, what: str) -> np.ndarray | None:
        if value is None or isinstance(value, torch.Tensor):
            return _frozen(value)
        return self._const_operand(value, what)

    def _layer_norm_module(self, m: nn.LayerNorm, x: Any) -> _Tensor:
        return self._layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)

    def _layer_norm(self, input: Any, normalized_shape: Any, weight: Any = None,
                    bias: Any = None, eps: float = 1e-5) -> _Tensor:
        x = self._tensor(input)
        self._norm_shape(x, normalized_shape)
        w = self._optional_constant(weight, "weight")
        b = self._optional_constant(bias, "bias")
        return composite.layer_norm(self.builder, x, w, b, float(eps), self.name)

    def _rms_norm(self, input: Any, normalized_shape: Any, weight: Any = None,
                  eps: float | None = None) -> _Tensor:
        x = self._tensor(input)
        self._norm_shape(x, normalized_shape)
        w = self._optional_constant(weight, "weight")
        # PyTorch's default eps is the machine epsilon of the input's dtype (float32).
        eps = float(torch.finfo(torch.float32).eps) if eps is None else float(eps)
        return composite.rms_norm(self.builder, x, w, eps, self.name)

    def _batch_norm_module(self, m: nn.BatchNorm1d, x: Any) -> _Tensor:
        if m.training:
            raise _Unsupported("batch norm in training mode; call model.eval() before tracing")
        if m.running_mean is None:
            raise _Unsupported("track_running_stats=False normalises with the batch's own "
                               "statistics, which mixes samples")
        return self._batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias,
                                False, 0.0, m.eps)

    def _batch_norm(self, input: Any, running_mean: Any, running_var: Any, weight: Any = None,
                    bias: Any = None, training: bool = False, momentum: float = 0.1,
                    eps: float = 1e-5) -> _Tensor:
        x = self._tensor(input)
        if training:
            raise _Unsupported("batch norm in training mode; call model.eval() before tracing")
        if len(x.shape) not in (2, 3):
            raise _Unsupported(f"input shape {list(x.shape)}: BatchNorm1d takes [N, C] or "
                               "[N, C, L]")
        stats = [self._optional_constant(v, what) for v, what in (
            (running_mean, "running mean"), (running_var, "running variance"),
            (weight, "weight"), (bias, "bias"))]
        # Folded into the layer before it when that layer's call is the operand and nothing
        # else uses its output (not through a pass-through such as Dropout either).
        source = self.node.args[0] if self.node is not None else None
        foldable = (isinstance(source, fx.Node) and len(source.users) == 1 and (
            source.target is F.linear or (source.op == "call_module" and isinstance(
                self.gm.get_submodule(str(source.target)), PaddedConv1d | nn.Linear))))
        return composite.batch_norm(self.builder, x, stats, float(eps), foldable, self.name)


    # -- recurrences (compiler/frontend/_recurrent.py) ------------------------------------

    def _lstm(self, m: nn.LSTM, input: Any, hx: Any = None) -> tuple[Any, ...]:
        x, axis, rows = self._sequence(m, input)
        hidden, layers = m.hidden_size, m.num_layers
        if hx is None:
            h0 = c0 = np.zeros((layers,) + rows + (hidden,), np.float32)
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h0, c0 = (self._initial_state(v, (layers,) + rows + (hidden,)) for v in hx)
        else:
            raise _Unsupported("hx must be a tuple (h0, c0) of constants")
        for k in range(layers):
            body = recurrent.lstm_body(*self._layer_weights(m, k), rows, f"{self.name}.l{k}")
            x = self._scan_node([x], body, (h0[k], c0[k]), axis)
        final = _Unavailable(f"the final state (h_n, c_n) of {_class_name(type(m))} is not "
                             "computed: use the output sequence (element 0)")
        return x, (final, final)

    def _gru(self, m: nn.GRU, input: Any, hx: Any = None) -> tuple[Any, ...]:
        return self._one_state(m, input, hx, recurrent.gru_body)

    def _rnn(self, m: nn.RNN, input: Any, hx: Any = None) -> tuple[Any, ...]:
        body = functools.partial(recurrent.rnn_body, nonlinearity=m.nonlinearity)
        return self._one_state(m, input, hx, body)

    def _one_state(self, m: nn.RNNBase, input: Any, hx: Any,
                   make_body: Callable[..., NNIR]) -> tuple[Any, ...]:
        """A GRU or RNN: one state ``h`` per layer (``hx``: [layers, *rows, H])."""
        x, axis, rows = self._sequence(m, input)
        shape = (m.num_layers,) + rows + (m.hidden_size,)
        h0 = np.zeros(shape, np.float32) if hx is None else self._initial_state(hx, shape)
        for k in range(m.num_layers):
            body = make_body(*self._layer_weights(m, k), rows, f"{self.name}.l{k}")
            x = self._scan_node([x], body, (h0[k],), axis)
        return x, _Unavailable(f"the final state h_n of {_class_name(type(m))} is not "
                               "computed: use the output sequence (element 0)")

    def _sequence(self, m: nn.RNNBase, input: Any) -> tuple[_Tensor, int, tuple[int, ...]]:
        """Check what a recurrent layer supports; return its input, its sequence axis and
        the shape of one step's rows (the input without the sequence and feature axes)."""
        if m.bidirectional:
            raise _Unsupported("bidirectional=True: the backward direction needs the whole "
                               "sequence before its first output, which a stream does not have")
        if getattr(m, "proj_size", 0):
            raise _Unsupported(f"proj_size={m.proj_size}: LSTM projections are not supported")
        if m.dropout and m.training and m.num_layers > 1:
            raise _Unsupported(f"dropout={m.dropout} between layers in training mode; call "
                               "model.eval() before tracing")
        x = self._tensor(input)
        if len(x.shape) not in (2, 3):
            raise _Unsupported(f"input shape {list(x.shape)}: [T, I] or [T, N, I] "
                               "([N, T, I] with batch_first) expected")
        axis = 1 if m.batch_first and len(x.shape) == 3 else 0
        rows = tuple(s for k, s in enumerate(x.shape[:-1]) if k != axis)
        return x, axis, rows

    @staticmethod
    def _layer_weights(m: nn.RNNBase, k: int) -> list[np.ndarray | None]:
        return [_frozen(getattr(m, f"{what}_l{k}", None))
                for what in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def _initial_state(self, value: Any, shape: tuple[int, ...]) -> np.ndarray:
        """Return a constant initial state (``[layers, *rows, H]``) as an array."""
        array = self._constant_value(self._tensor(value))
        if array is None:
            raise _Unsupported("the initial state depends on the model's input: only a "
                               "constant initial state is supported")
        if array.shape != shape:
            raise _Unsupported(f"initial state of shape {list(array.shape)}, expected "
                               f"{list(shape)}")
        return array

    def _scan_node(self, xs: list[_Tensor], body: NNIR, init: tuple[np.ndarray, ...],
                   axis: int, output_axis: int | None = None) -> _Tensor:
        return self._scan_nodes(xs, body, init, axis, axis if output_axis is None
                                else output_axis, 1)[0]

    def _scan_nodes(self, xs: list[_Tensor], body: NNIR, init: Sequence[np.ndarray],
                    axis: int, output_axis: int, outputs: int) -> list[_Tensor]:
        """Return one ``scan`` node per step output, all sharing ``body``."""
        init = tuple(_frozen(v) for v in init)
        try:
            return [self.builder.add("scan", xs, {
                "body": body, "init": init, "axis": axis, "output_axis": output_axis,
                "outputs": outputs, "output": k}, self.name) for k in range(outputs)]
        except ValueError as e:
            raise _Unsupported(str(e)) from e

    def _scan(self, m: Scan, x: Any, h0: Any, input_axis: int = 0,
              output_axis: int = 0) -> _Tensor | list[_Tensor]:
        from compiler.frontend.fx import prepare_shape  # the package imports this module

        x_list, h_list = isinstance(x, (list, tuple)), isinstance(h0, (list, tuple))
        seqs = [self._tensor(v) for v in (x if x_list else [x])]
        axis = _axis(input_axis, len(seqs[0].shape))
        inits = []
        for v in h0 if h_list else [h0]:
            init = self._constant_value(self._tensor(v))
            if init is None:
                raise _Unsupported("the initial state h0 depends on the model's input: only a "
                                   "constant initial state is supported")
            inits.append(init)
        example = [torch.zeros(s.shape[:axis] + s.shape[axis + 1:]) for s in seqs]
        example += [torch.tensor(init) for init in inits]
        try:
            call = _step_call(m.step, len(seqs), len(inits), x_list, h_list)
            step, flat = prepare_shape(call, *example)
            body = to_nnir(step)
            outputs = len(flat) - len(inits)
        except ValueError as e:
            lines = str(e).splitlines()
            why = "; ".join(line.strip().removeprefix("- ") for line in lines[1:]) or lines[0]
            raise _Unsupported(f"in its step module: {why}") from e
        if outputs < 1:
            raise _Unsupported(f"the step returns {len(flat)} tensors: it must return "
                               f"(output, new_state) with {len(inits)} state tensor(s)")
        out_rank = len(body.node(body.outputs[0]).shape) + 1
        ys = self._scan_nodes(seqs, body, inits, axis, _axis(output_axis, out_rank), outputs)
        return ys if call.y_list else ys[0]


class _StepCall(nn.Module):
    """A ``Scan`` step as a module of flat tensor arguments (inputs, then states) returning
    a flat tuple (outputs, new states), which is what tracing needs; ``x_list``/``h_list``:
    whether the step takes lists. Its ``forward`` takes exactly ``step_inputs + states``
    arguments, because torch.fx makes one placeholder per named parameter."""

    def __init__(self, step: nn.Module, step_inputs: int, x_list: bool, h_list: bool) -> None:
        super().__init__()
        self.step = step
        self.step_inputs, self.x_list, self.h_list = step_inputs, x_list, h_list
        self.y_list = False  # whether the step returns a list of outputs (set by tracing)

    def call(self, *args: torch.Tensor) -> tuple[Any, ...]:
        n = self.step_inputs
        x = list(args[:n]) if self.x_list else args[0]
        h = list(args[n:]) if self.h_list else args[n]
        y, new = self.step(x, h)
        self.y_list = isinstance(y, (list, tuple))
        ys = list(y) if self.y_list else [y]
        return (*ys, *new) if self.h_list and isinstance(new, (list, tuple)) else (*ys, new)


def _step_call(step: nn.Module, step_inputs: int, states: int, x_list: bool,
               h_list: bool) -> _StepCall:
    """Return a :class:`_StepCall` whose ``forward`` has ``step_inputs + states`` named
    parameters (generated: torch.fx reads a function's parameter names, and ``*args``
    would be one placeholder)."""
    params = ", ".join(f"a{k}" for k in range(step_inputs + states))
    scope: dict[str, Any] = {}
    exec(f"def forward(self, {params}):\n    return self.call({params})\n", scope)
    cls = type("StepCall", (_StepCall,), {"forward": scope["forward"]})
    return cls(step, step_inputs, x_list, h_list)


def _reciprocal(divisor: np.ndarray | np.float64) -> Any:
    """Return ``1 / divisor`` as IEEE arithmetic has it: ``1 / ±0`` is ±inf, as in PyTorch.

    ``x * (1 / 0)`` is then ±inf for a nonzero ``x`` and NaN for ``x = 0``, which is
    PyTorch's ``x / 0``.
    """
    with np.errstate(divide="ignore"):
        return np.divide(1.0, divisor)


def _plain_conv1d(module: nn.Conv1d) -> str:
    """Return why a ``torch.nn.Conv1d`` is refused: which of its settings cannot stream."""
    (k,), (stride,), (dilation,) = module.kernel_size, module.stride, module.dilation
    padding = module.padding
    span = (k - 1) * dilation
    problems = []
    if stride != 1:
        problems.append(f"stride={stride} (only 1 is supported)")
    if dilation != 1:
        problems.append(f"dilation={dilation} (only 1 is supported)")
    # Output step t reads input steps t - pad .. t - pad + span (PyTorch pads both ends).
    pad = (span // 2 if padding == "same" else 0) if isinstance(padding, str) else padding[0]
    shown = padding if isinstance(padding, str) else pad
    if pad > 0 and span > pad:
        problems.append(f"padding={shown!r} looks ahead {span - pad} step(s): a streamed "
                        "output cannot wait for future inputs")
    if padding != "same" and span != 2 * pad:
        change = "shortens" if span > 2 * pad else "lengthens"
        problems.append(f"padding={shown!r} with kernel_size={k} {change} the sequence by "
                        f"{abs(span - 2 * pad)} step(s)")
    if module.padding_mode != "zeros":
        problems.append(f"padding_mode={module.padding_mode!r}")
    head = "; ".join(problems) if problems else \
        f"kernel_size={k}, padding=0 streams, but only PaddedConv1d is translated"
    return (f"{head}; use compiler.frontend.nn.PaddedConv1d (causal: kernel_size - 1 zeros "
            "on the left, length-preserving, stride and dilation 1) instead")


_PYTHON_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "maximum": max,
    "minimum": min,
}


def _dims(dims: tuple[Any, ...]) -> Sequence[int]:
    """Arguments of ``x.permute(...)``: either ``(0, 2, 1)`` or ``((0, 2, 1),)``."""
    return dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims


def _axis(dim: int, rank: int) -> int:
    if not -rank <= dim < rank:
        raise _Unsupported(f"dim {dim} is out of range for a {rank}-d tensor")
    return dim % rank


def _class_name(cls: type) -> str:
    """``torch.nn.GELU`` rather than ``torch.nn.modules.activation.GELU``."""
    if cls.__module__.startswith("torch.nn.modules."):
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


# Public namespaces that PyTorch's C functions live in, and the prefix of their C names.
_NAMESPACES = (
    ("torch.fft", torch.fft, "fft_"),
    ("torch.linalg", torch.linalg, "linalg_"),
    ("torch.special", torch.special, "special_"),
    ("torch.nn.functional", F, ""),
    ("torch", torch, ""),
    ("operator", operator, ""),
)


def _function_name(fn: Any) -> str:
    """The public name of a function, e.g. ``torch.fft.fft`` for the C ``fft_fft``."""
    name = getattr(fn, "__name__", repr(fn))
    for public, namespace, prefix in _NAMESPACES:
        short = name.removeprefix(prefix)
        if name.startswith(prefix) and getattr(namespace, short, None) is fn:
            return f"{public}.{short}"
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in ')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _source_line(node: fx.Node) -> str | None:
    """``file.py:12`` of the innermost model frame that created the node, if recorded."""
    frames = [
        (path, line)
        for path, line in _FRAME.findall(node.stack_trace or "")
        if not path.startswith(_TORCH_DIR)
    ]
    if not frames:
        return None
    path, line = frames[-1]
    return f"{os.path.basename(path)}:{line}"


def _module_path(node: fx.Node) -> str | None:
    """Path of the (non-leaf) module whose forward created a function or method node."""
    stack = node.meta.get("nn_module_stack")
    return next(reversed(stack.values()))[0] if stack else None


def _where(node: fx.Node) -> str:
    """Where a node came from, for error messages."""
    if node.op == "call_module":
        return f"'{node.target}'"
    where = f"node '{node.name}'"
    if path := _module_path(node):
        where += f" in '{path}'"
    line = _source_line(node)
    return f"{where} ({line})" if line else where


def _node_name(node: fx.Node) -> str:
    """The NNIR ``name`` of the nodes an fx node becomes.

    A module path (``blocks.0.conv``), or an fx node name with the path of the module it is in
    and its source line (``blocks.0/add_1 (model.py:12)``).
    """
    if node.op == "call_module":
        return str(node.target)
    path = _module_path(node)
    name = f"{path}/{node.name}" if path else node.name
    line = _source_line(node)
    return f"{name} ({line})" if line else name
