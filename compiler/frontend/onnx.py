"""Translation of an ONNX model (a file or an ``onnx.ModelProto``) to :class:`compiler.nnir.NNIR`.

The graph built is the one the PyTorch front end (:mod:`compiler.frontend.fx.nnir`) builds for
the same computation: the same ops, attributes, folding of constants and merging of relabels,
so that a model exported with ``torch.onnx.export`` compiles to the same program either way.
``docs/frontend.md`` lists the ONNX ops and their limits.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.frontend import _composite as composite
from compiler.frontend.fx.nnir import _Builder, _frozen, _precisions, _Tensor
from compiler.nnir import NNIR, broadcastable, compact
from isa.numerics import NumberFormat

__all__ = ["MAX_OPSET", "MIN_OPSET", "ModelFileError", "to_nnir"]

#: Versions of the default (``ai.onnx``) opset this importer reads: from the first version with
#: today's input lists of Squeeze, Unsqueeze, Clip, Slice, Pad and Dropout, to the newest that
#: the pinned ``onnx`` package defines.
MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()

_DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element types of the tensors a model may take as input, and cast between (NNIR values
# are floats, bf16 on chip whatever the model's type).
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


class ModelFileError(ValueError):
    """The ONNX file does not exist, cannot be parsed, or is not a valid ONNX model."""


def to_nnir(
    model: str | os.PathLike[str] | onnx.ModelProto,
    inputs_precisions: Sequence[NumberFormat] | None = None,
    outputs_precisions: Sequence[NumberFormat] | None = None,
) -> NNIR:
    """Translate an ONNX model to NNIR.

    Parameters
    ----------
    model : str, os.PathLike or onnx.ModelProto
        An ONNX file, or a loaded model. Every graph input needs a static shape (no symbolic
        dimensions); initializers and ``Constant`` nodes are constants.
    inputs_precisions, outputs_precisions : sequence of NumberFormat, optional
        Precision of each graph input / output, in order; default all ``NumberFormat.BF16``.

    Returns
    -------
    NNIR
        A graph whose ``input`` nodes follow the graph inputs (initializers excluded) and whose
        ``output`` nodes follow the graph outputs. Operations on constants only are evaluated
        (with the ``onnx`` package's reference implementation), whatever the op; relabels that
        change nothing are dropped. Node names are the PyTorch front end's (module path, or fx
        node name and source line) when the file carries ``torch.onnx.export``'s metadata,
        otherwise the ONNX node names.

    Raises
    ------
    ModelFileError
        One line if the file does not exist or is not a valid ONNX model.
    ValueError
        One line if the model imports a version of the ``ai.onnx`` opset outside
        ``MIN_OPSET..MAX_OPSET``, if an input has no static shape or is not a float tensor, or
        if the precision lists have the wrong length. If operations are unsupported, one error
        lists every such node with its op type (and the reason, for a supported op used in an
        unsupported way).
    """
    proto, source = _load(model)
    opset = _default_opset(proto, source)
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    inputs_precisions = _precisions("inputs_precisions", inputs_precisions, len(inputs))
    outputs_precisions = _precisions("outputs_precisions", outputs_precisions, len(graph.output))
    converter = _Converter(proto, opset, source)
    for value, precision in zip(inputs, inputs_precisions, strict=True):
        converter.input(value, precision)
    for node in graph.node:
        converter.convert(node)
    for value, precision in zip(graph.output, outputs_precisions, strict=True):
        converter.output(value.name, precision)
    if converter.errors:
        raise ValueError(
            "Unsupported operations encountered translating to NNIR:\n"
            + "\n".join(f"  - {e}" for e in converter.errors)
        )
    b = converter.builder
    return compact(b.nodes, b.inputs, b.outputs, streaming=False)


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Return the checked model, its local functions inlined, and how to name it in errors."""
    if isinstance(model, onnx.ModelProto):
        proto, source = model, "ONNX model"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        source = f"ONNX file {str(path)!r}"
        if not path.is_file():
            raise ModelFileError(f"{source} does not exist or is not a file")
        try:
            proto = onnx.load(path)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ModelFileError(f"{source} is not an ONNX model ({_first_line(e)})") from None
        except (onnx.checker.ValidationError, OSError) as e:  # e.g. its external data is missing
            raise ModelFileError(f"{source} cannot be loaded ({_first_line(e)})") from None
    else:
        raise ValueError(
            f"to_nnir takes an ONNX file path or an onnx.ModelProto, not {type(model).__name__}"
        )
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise ModelFileError(f"{source} is not a valid ONNX model ({_first_line(e)})") from None
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    return proto, source


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _default_opset(proto: onnx.ModelProto, source: str) -> int:
    """Return the model's ``ai.onnx`` opset version; refuse versions this importer does not know."""
    versions = [o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise ValueError(f"{source} does not import the ai.onnx opset")
    version = versions[0]
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise ValueError(
            f"{source} uses opset ai.onnx version {version}, which this importer does not "
            f"read (versions {MIN_OPSET} to {MAX_OPSET}); convert it with "
            f"onnx.version_converter.convert_version(model, "
            f"{MIN_OPSET if version < MIN_OPSET else MAX_OPSET})"
        )
    return version


class _Unsupported(Exception):
    """The current ONNX node cannot be translated (message: why)."""


class _Failed:
    """Value of a node whose translation failed (its users are skipped, not reported)."""


_FAILED = _Failed()


@dataclass(frozen=True)
class _Padded:
    """A ``Pad`` of zeros before the last axis, kept until the ``Conv`` that consumes it."""

    x: _Tensor
    left: int


#: What a value can be during translation: a tensor of the NNIR graph, a constant (any dtype:
#: shapes and indices are int64), a pending Pad, or a failure.
_Value = _Tensor | np.ndarray | _Padded | _Failed


class _Converter:
    """Translates ONNX nodes one at a time, collecting the unsupported ones."""

    def __init__(self, proto: onnx.ModelProto, opset: int, source: str) -> None:
        self.opset = opset
        self.source = source
        self.builder = _Builder()
        self.values: dict[str, _Value] = {
            t.name: _constant_array(t) for t in proto.graph.initializer
        }
        self.errors: list[str] = []
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in proto.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {v.name for v in proto.graph.output}
        self.producers = {name: node.op_type for node in proto.graph.node for name in node.output}
        # Shapes the file declares (exporters record most), checked against the NNIR's.
        self.declared_shapes = {
            v.name: shape
            for v in [*proto.graph.value_info, *proto.graph.output]
            if (shape := _static_shape(v)) is not None
        }
        self.fused: set[int] = set()  # ids of Add nodes already translated with their MatMul
        self.node: onnx.NodeProto | None = None
        self.name = ""  # NNIR name of the ONNX node being translated
        self.handlers: dict[str, Callable[..., Any]] = {
            "Identity": lambda x: self._tensor(x),
            "Cast": lambda x, *, to, **_: self._cast(x, to),
            "CastLike": self._cast_like,
            "Dropout": self._dropout,
            "Relu": lambda x: self._unary("relu", x),
            "Neg": lambda x: self._unary("neg", x),
            "Clip": self._clip,
            "Add": lambda a, b: self._binary("add", a, b),
            "Sub": lambda a, b: self._binary("sub", a, b),
            "Mul": lambda a, b: self._binary("mul", a, b),
            "Div": self._div,
            "Max": lambda *xs: self._variadic("maximum", xs),
            "Min": lambda *xs: self._variadic("minimum", xs),
            "Sum": lambda *xs: self._variadic("add", xs),
            "MatMul": self._matmul,
            "Gemm": self._gemm,
            "Conv": self._conv,
            "Pad": self._pad,
            "Concat": self._concat,
            "Slice": self._slice,
            "Transpose": self._transpose,
            "Reshape": self._relabel,
            "Flatten": self._relabel,
            "Squeeze": self._relabel,
            "Unsqueeze": self._relabel,
            **{op: functools.partial(self._fn, function) for op, function in (
                ("Tanh", "tanh"), ("Sigmoid", "sigmoid"), ("Exp", "exp"), ("Log", "log"),
                ("Abs", "abs"), ("Sqrt", "sqrt"), ("Reciprocal", "reciprocal"),
                ("Softplus", "softplus"))},
            "Gelu": self._gelu,
            "Pow": self._pow,
            "Elu": lambda x, *, alpha=1.0: composite.elu(
                self.builder, self._tensor(x), float(alpha), self.name),
            "LeakyRelu": lambda x, *, alpha=0.01: composite.leaky_relu(
                self.builder, self._tensor(x), float(alpha), self.name),
            "HardSigmoid": lambda x, *, alpha=0.2, beta=0.5: composite.hardsigmoid(
                self.builder, self._tensor(x), float(alpha), float(beta), self.name),
            "HardSwish": lambda x: composite.hardswish(self.builder, self._tensor(x),
                                                       self.name),
            "ReduceSum": self._reduce("sum"),
            "ReduceMean": self._reduce("mean"),
            "ReduceMax": self._reduce("amax"),
            "Softmax": lambda x, *, axis=-1: self._softmax(composite.softmax, x, axis),
            "LogSoftmax": lambda x, *, axis=-1: self._softmax(composite.log_softmax, x, axis),
            "LayerNormalization": self._layer_norm,
            "BatchNormalization": self._batch_norm,
        }

    # -- graph boundary -------------------------------------------------------------------

    def input(self, value: onnx.ValueInfoProto, precision: NumberFormat) -> None:
        """Add the ``input`` node of a graph input (initializers excluded)."""
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type not in _FLOAT_TYPES:
            raise ValueError(f"{self.source}: input {value.name!r} is not a float tensor")
        shape = _static_shape(value)
        if shape is None:
            dims = tensor_type.shape.dim
            symbolic = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
            raise ValueError(
                f"{self.source}: input {value.name!r} has no static shape (symbolic dimensions "
                f"{symbolic}); export the model with fixed input shapes"
            )
        self.values[value.name] = self.builder.input(shape, precision, value.name)

    def output(self, name: str, precision: NumberFormat) -> None:
        """Add the ``output`` node of a graph output."""
        value = self.values[name]
        if isinstance(value, _Failed):
            return
        if isinstance(value, _Padded):
            self.errors.append(f"output {name!r} is a Pad, which is supported only before a Conv")
            return
        if isinstance(value, np.ndarray):
            value = self.builder.constant(value, name)
        index = len(self.builder.outputs)
        self.builder.output(value, precision, f"output {index}")

    # -- driver ---------------------------------------------------------------------------

    def convert(self, node: onnx.NodeProto) -> None:
        """Translate one ONNX node, or record why it cannot be translated."""
        self.node, self.name = node, _node_name(node)
        if id(node) in self.fused:
            return
        args = [self.values[i] if i else None for i in node.input]
        if any(isinstance(a, _Failed) for a in args):
            self._set_outputs(node, _FAILED)
            return
        what = f"op {node.op_type}"
        if node.domain not in _DEFAULT_DOMAINS:
            self._fail(f"unsupported op {node.domain}.{node.op_type} at {_where(node)}: opset "
                       f"{node.domain!r} is not supported (only ai.onnx)")
            return
        try:
            if all(a is None or isinstance(a, np.ndarray) for a in args):
                results = self._evaluate(node, args)
            elif node.op_type in ("Shape", "Size"):
                (x,) = (self._tensor(a) for a in args)
                results = self._evaluate(node, [np.zeros(x.shape, np.float32)])
            elif node.op_type not in self.handlers:
                self._fail(f"unsupported {what} at {_where(node)}")
                return
            else:
                handler, attributes = self.handlers[node.op_type], _attributes(node)
                try:
                    inspect.signature(handler).bind(*args, **attributes)
                except TypeError as e:
                    raise _Unsupported(f"unsupported inputs or attributes ({e})") from e
                results = handler(*args, **attributes)
        except _Unsupported as e:
            self._fail(f"{what} at {_where(node)}: {e}")
            return
        self._set_outputs(node, results)

    def _fail(self, message: str) -> None:
        assert self.node is not None
        self.errors.append(message)
        self._set_outputs(self.node, _FAILED)

    def _set_outputs(self, node: onnx.NodeProto, results: Any) -> None:
        results = results if isinstance(results, list) else [results]
        for k, name in enumerate(node.output):
            if not name:
                continue
            value = results[k] if k < len(results) else _FAILED
            declared = self.declared_shapes.get(name)
            if isinstance(value, _Tensor) and declared is not None and value.shape != declared:
                raise RuntimeError(
                    f"internal error translating {_where(node)} ({node.op_type}): NNIR shape "
                    f"{list(value.shape)}, ONNX shape {list(declared)}"
                )
            self.values[name] = value

    def _evaluate(self, node: onnx.NodeProto, args: Sequence[np.ndarray | None]) -> list[Any]:
        """Run ``node`` on constant operands with the onnx reference implementation."""
        names = [f"in{k}" if a is not None else "" for k, a in enumerate(args)]
        single = onnx.helper.make_node(
            node.op_type, names, [f"out{k}" for k in range(len(node.output))], domain=node.domain
        )
        single.attribute.extend(node.attribute)
        feeds = {n: a for n, a in zip(names, args, strict=True) if n}
        try:
            results = ReferenceEvaluator(single, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:  # the reference implementation raises anything on bad input
            raise _Unsupported(
                f"cannot evaluate it on its constant operands ({_first_line(e)})"
            ) from None
        return [np.asarray(r) for r in results]

    # -- operand helpers ------------------------------------------------------------------

    def _tensor(self, value: Any) -> _Tensor:
        """Return an operand as an NNIR tensor (a constant becomes a ``constant`` node)."""
        if isinstance(value, np.ndarray):
            return self.builder.constant(value.astype(np.float32), self.name)
        if isinstance(value, _Padded):
            raise _Unsupported("its operand is a Pad, which is supported only before a Conv")
        if not isinstance(value, _Tensor):
            raise _Unsupported("a required operand is missing")
        return value

    def _constant(self, value: Any, what: str) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise _Unsupported(f"the {what} is not a constant")
        return value

    def _ints(self, value: Any, what: str) -> list[int]:
        return [int(v) for v in self._constant(value, what).reshape(-1)]

    def _shape_of(self, args: Sequence[Any]) -> tuple[int, ...]:
        """Output shape of the current node, evaluated on zeros shaped like its tensor operand."""
        assert self.node is not None
        zeros = [
            np.zeros(a.shape, np.float32) if isinstance(a, _Tensor) else a for a in args
        ]
        return tuple(self._evaluate(self.node, zeros)[0].shape)

    # -- ops ------------------------------------------------------------------------------

    def _cast(self, x: Any, to: int) -> _Tensor:
        """A cast between float types changes nothing: every NNIR tensor is bf16 on chip."""
        if to not in _FLOAT_TYPES:
            raise _Unsupported(f"cast to {onnx.TensorProto.DataType.Name(to)}: only casts "
                               f"between float types are supported")
        return self._tensor(x)

    def _cast_like(self, x: Any, like: Any, **_: Any) -> _Tensor | np.ndarray:
        """Cast ``x`` to the type of ``like``: a constant to float32 if ``like`` is a tensor."""
        if isinstance(like, np.ndarray):
            return self._cast(x, onnx.helper.np_dtype_to_tensor_dtype(like.dtype))
        return x.astype(np.float32) if isinstance(x, np.ndarray) else self._tensor(x)

    def _unary(self, op: str, x: Any) -> _Tensor:
        return self.builder.add(op, [self._tensor(x)], {}, self.name)

    def _scalar_of(self, value: Any, other: Any) -> Any:
        """Return a constant operand as a float if it might as well be one (as the PyTorch
        front end: one element, or all equal and no larger than the other operand)."""
        if not isinstance(value, np.ndarray) or value.size == 0:
            return value
        if value.size > 1:
            shape = other.shape if isinstance(other, _Tensor) else ()
            if np.broadcast_shapes(value.shape, shape) != shape or (value != value.flat[0]).any():
                return value
        return float(value.flat[0])

    def _binary(self, op: str, a: Any, b: Any) -> _Tensor:
        a, b = self._scalar_of(a, b), self._scalar_of(b, a)
        if isinstance(b, float):
            return self.builder.add(op, [self._tensor(a)], {"scalar": b, "reverse": False},
                                    self.name)
        if isinstance(a, float):
            attrs = {"scalar": a, "reverse": op == "sub"}
            return self.builder.add(op, [self._tensor(b)], attrs, self.name)
        shapes = [x.shape for x in (a, b)]
        if shapes[0] == shapes[1] or broadcastable(shapes[0], shapes[1]):
            return self.builder.add(op, [self._tensor(a), self._tensor(b)], {}, self.name)
        out = tuple(np.broadcast_shapes(*shapes))
        if isinstance(b, np.ndarray) and out == a.shape:
            b = self._lift_rank(b, len(out))
        elif isinstance(a, np.ndarray) and out == b.shape:
            a = self._lift_rank(a, len(out))
        else:
            raise _Unsupported(
                f"operands of shapes {list(shapes[0])} and {list(shapes[1])}: only operands "
                f"of the same rank may be broadcast"
            )
        return self.builder.add(op, [self._tensor(a), self._tensor(b)], {}, self.name)

    def _lift_rank(self, value: np.ndarray, rank: int) -> _Tensor:
        return self.builder.constant(
            value.reshape((1,) * (rank - value.ndim) + value.shape), self.name
        )

    def _variadic(self, op: str, operands: Sequence[Any]) -> Any:
        result = operands[0]
        for other in operands[1:]:
            result = self._binary(op, result, other)
        return self._tensor(result)

    def _div(self, a: Any, b: Any) -> _Tensor:
        if not isinstance(b, np.ndarray):
            # By a tensor: 1 / b on the function unit, then a multiply.
            return self._binary("mul", a, self._fn("reciprocal", b))
        b = self._scalar_of(b, a)
        if isinstance(b, float):
            return self._binary("mul", a, 1.0 / b)
        return self._binary("mul", a, (1.0 / b.astype(np.float32)).astype(np.float32))

    # -- functions, reductions and norms (compiler/frontend/_composite.py) ----------------

    def _fn(self, function: str, x: Any) -> _Tensor:
        return composite.fn(self.builder, function, self._tensor(x), self.name)

    def _pow(self, x: Any, exponent: Any) -> _Tensor:
        e = self._scalar_of(exponent, x)
        y = None
        if isinstance(e, float):
            y = composite.power(self.builder, self._tensor(x), e, self.name)
        if y is None:
            raise _Unsupported("the exponent must be a constant 1, 2, 0.5, -0.5 or -1")
        return y

    def _gelu(self, x: Any, *, approximate: str = "none") -> _Tensor:
        if approximate not in ("none", "tanh"):
            raise _Unsupported(f"approximate={approximate!r} (only 'none' and 'tanh')")
        return self._fn("gelu" if approximate == "none" else "gelu_tanh", x)

    def _one_axis(self, x: _Tensor, axes: list[int], what: str) -> int:
        rank = len(x.shape)
        listed = sorted({_axis(a, rank) for a in axes})
        if len(listed) != 1:
            raise _Unsupported(f"{what} over axes {listed} of a {rank}-d tensor: only over "
                               "one axis")
        return listed[0]

    def _reduce(self, op: str) -> Callable[..., Any]:
        def reduce(x: Any, axes: Any = None, *, keepdims: int = 1,
                   noop_with_empty_axes: int = 0) -> _Tensor:
            x = self._tensor(x)
            if axes is None or (isinstance(axes, np.ndarray) and axes.size == 0):
                if noop_with_empty_axes:
                    return x
                listed = list(range(len(x.shape)))
            elif isinstance(axes, list):  # the attribute (before opset 18)
                listed = [int(a) for a in axes]
            else:
                listed = self._ints(axes, "axes")
            axis = self._one_axis(x, listed, op)
            return composite.reduce(self.builder, op, x, axis, bool(keepdims), self.name)

        return reduce

    def _softmax(self, f: Callable[..., Any], x: Any, axis: int) -> _Tensor:
        x = self._tensor(x)
        return f(self.builder, x, self._one_axis(x, [axis], "softmax"), self.name)

    def _used_outputs(self) -> bool:
        """Return whether any output of the current node but the first is used."""
        assert self.node is not None
        return any(name and (self.consumers.get(name) or name in self.graph_outputs)
                   for name in self.node.output[1:])

    def _layer_norm(self, x: Any, scale: Any, bias: Any = None, *, axis: int = -1,
                    epsilon: float = 1e-5, stash_type: int = 1) -> _Tensor:
        x = self._tensor(x)
        if _axis(axis, len(x.shape)) != len(x.shape) - 1:
            raise _Unsupported(f"axis={axis}: only the last axis")
        if self._used_outputs():
            raise _Unsupported("its Mean or InvStdDev output is used")
        w = self._constant(scale, "scale")
        b = None if bias is None else self._constant(bias, "bias")
        return composite.layer_norm(self.builder, x, w, b, float(epsilon), self.name)

    def _batch_norm(self, x: Any, scale: Any, bias: Any, mean: Any, var: Any, *,
                    epsilon: float = 1e-5, momentum: float = 0.9,
                    training_mode: int = 0) -> _Tensor:
        x = self._tensor(x)
        if training_mode or self._used_outputs():
            raise _Unsupported("training mode; export the model in eval mode")
        if len(x.shape) not in (2, 3):
            raise _Unsupported(f"input shape {list(x.shape)}: only [N, C] or [N, C, L]")
        stats = [self._constant(v, what) for v, what in (
            (mean, "mean"), (var, "variance"), (scale, "scale"), (bias, "bias"))]
        assert self.node is not None
        # Folded into the layer before it when that layer's node (a Conv, Gemm, or MatMul
        # and its bias Add) is the operand and nothing else uses its output.
        operand = self.node.input[0]
        foldable = (len(self.consumers.get(operand, [])) == 1
                    and operand not in self.graph_outputs
                    and self.producers.get(operand) in ("Conv", "Gemm", "MatMul", "Add"))
        return composite.batch_norm(self.builder, x, stats, float(epsilon), foldable,
                                    self.name)

    def _clip(self, x: Any, lo: Any = None, hi: Any = None) -> _Tensor:
        bounds = []
        for what, v in (("min", lo), ("max", hi)):
            if v is not None and (not isinstance(v, np.ndarray) or v.size != 1):
                raise _Unsupported(f"the {what} bound must be a constant scalar")
            bounds.append(None if v is None else float(v.reshape(-1)[0]))
        x = self._tensor(x)
        if bounds == [0.0, None]:
            return self.builder.add("relu", [x], {}, self.name)
        return self.builder.add("clamp", [x], {"min": bounds[0], "max": bounds[1]}, self.name)

    def _dropout(self, x: Any, ratio: Any = None, training_mode: Any = None, **_: Any) -> Any:
        assert self.node is not None
        if training_mode is not None and bool(self._constant(training_mode, "training_mode")):
            raise _Unsupported("dropout in training mode; export the model in eval mode")
        mask = self.node.output[1] if len(self.node.output) > 1 else ""
        if mask and (self.consumers.get(mask) or mask in self.graph_outputs):
            raise _Unsupported("its mask output is used")
        return self._tensor(x)

    def _following_bias(
        self, size: int, rank: int
    ) -> tuple[np.ndarray | None, onnx.NodeProto | None]:
        """Return (bias, Add node) if the current node's only user adds a constant vector.

        That is how exporters write a Linear layer on more than 2-d inputs (MatMul, then Add
        of the bias); the caller folds the Add into its ``linear``. ``size`` is the output's
        last axis and ``rank`` its rank (the Add must not broadcast it to a higher rank).
        """
        assert self.node is not None
        (out,) = self.node.output
        users = self.consumers.get(out, [])
        if len(users) != 1 or out in self.graph_outputs:
            return None, None
        (add,) = users
        others = [self.values.get(i) for i in add.input if i != out]
        if add.op_type != "Add" or add.domain not in _DEFAULT_DOMAINS or len(others) != 1:
            return None, None
        (bias,) = others
        if not (isinstance(bias, np.ndarray) and 1 <= bias.ndim <= rank
                and bias.size == size and bias.shape[-1] == size):
            return None, None
        return bias.reshape(size).astype(np.float32), add

    def _matmul(self, a: Any, b: Any) -> _Tensor:
        if isinstance(b, np.ndarray) and b.ndim == 2 and isinstance(a, _Tensor) and a.shape:
            bias, add = self._following_bias(b.shape[1], len(a.shape))
            attrs = {"weight": _frozen(b.T), "bias": _bias(bias)}
            y = self.builder.add("linear", [a], attrs, self.name)
            if add is not None:
                self.fused.add(id(add))
                self.values[add.output[0]] = y
            return y
        if isinstance(a, np.ndarray) and a.ndim == 2 and isinstance(b, _Tensor) and b.shape[1:]:
            # W @ x contracts axis -2 of x: x^T, then Linear, then transpose back.
            perm = tuple(range(len(b.shape) - 2)) + (len(b.shape) - 1, len(b.shape) - 2)
            xt = self.builder.add("transpose", [b], {"perm": perm}, self.name)
            y = self.builder.add("linear", [xt], {"weight": _frozen(a), "bias": None}, self.name)
            return self.builder.add("transpose", [y], {"perm": perm}, self.name)
        shapes = [list(v.shape) for v in (a, b) if isinstance(v, (_Tensor, np.ndarray))]
        raise _Unsupported(
            f"matmul of shapes {shapes[0]} and {shapes[-1]} needs one operand to be a 2-d "
            f"constant (and the other at least 1-d / 2-d)"
        )

    def _gemm(
        self, a: Any, b: Any, c: Any = None, *, alpha: float = 1.0, beta: float = 1.0,
        transA: int = 0, transB: int = 0,
    ) -> _Tensor:
        if transA:
            a = self._permute(self._tensor(a), (1, 0))
        b = self._constant(b, "B operand (weight)").astype(np.float32)
        weight = b if transB else b.T
        if alpha != 1.0:
            weight = (weight * np.float32(alpha)).astype(np.float32)
        x = self._tensor(a)
        bias = None
        if c is not None:
            c = self._constant(c, "C operand (bias)").astype(np.float32) * np.float32(beta)
            if c.size == weight.shape[0] and c.shape[-1:] == (weight.shape[0],):
                bias = c.reshape(-1)
            elif c.size == 1:
                bias = np.full(weight.shape[0], c.reshape(-1)[0], np.float32)
            else:
                y = self.builder.add("linear", [x], {"weight": _frozen(weight), "bias": None},
                                     self.name)
                return self._binary("add", y, c)
        attrs = {"weight": _frozen(weight), "bias": _bias(bias)}
        return self.builder.add("linear", [x], attrs, self.name)

    def _pad(
        self, x: Any, pads: Any, value: Any = None, axes: Any = None, *, mode: str = "constant"
    ) -> Any:
        x = self._tensor(x)
        rank = len(x.shape)
        if mode != "constant" or (value is not None and float(self._constant(
                value, "constant_value").reshape(-1)[0]) != 0.0):
            raise _Unsupported("only zero padding (mode 'constant', value 0) is supported")
        pads = self._ints(pads, "pads")
        axes_list = (
            list(range(rank)) if axes is None else [a % rank for a in self._ints(axes, "axes")]
        )
        n = len(axes_list)
        before = {a: pads[k] for k, a in enumerate(axes_list)}
        after = {a: pads[n + k] for k, a in enumerate(axes_list)}
        left = before.pop(rank - 1, 0)
        if any(before.values()) or any(after.values()) or left < 0:
            raise _Unsupported(
                f"pads {pads}: only zeros before the last axis (a causal Conv's padding) are "
                f"supported"
            )
        return x if left == 0 else _Padded(x, left)

    def _conv(
        self, x: Any, w: Any, b: Any = None, *, auto_pad: str = "NOTSET",
        dilations: Sequence[int] = (1,), group: int = 1, kernel_shape: Any = None,
        pads: Sequence[int] = (0, 0), strides: Sequence[int] = (1,),
    ) -> _Tensor:
        weight = self._constant(w, "weight").astype(np.float32)
        if weight.ndim != 3:
            raise _Unsupported(f"weight of shape {list(weight.shape)}: only 1-d convolutions "
                               f"(weight [Cout, Cin/groups, K]) are supported")
        left = 0
        if isinstance(x, _Padded):
            x, left = x.x, x.left
        x = self._tensor(x)
        k = weight.shape[2]
        if auto_pad not in ("NOTSET", "VALID") or list(dilations) != [1] or list(strides) != [1]:
            raise _Unsupported(
                f"auto_pad={auto_pad!r}, dilations={list(dilations)}, strides={list(strides)}: "
                f"only explicit pads, dilation 1 and stride 1 are supported"
            )
        pads = [0, 0] if auto_pad == "VALID" else list(pads)
        if pads[1] != 0 or left + pads[0] != k - 1:
            raise _Unsupported(
                f"padding {left + pads[0]} before and {pads[1]} after the sequence: only "
                f"causal convolutions (kernel_size - 1 = {k - 1} zeros before, none after) "
                f"are supported"
            )
        if group != 1 and not (weight.shape[1] == 1 and weight.shape[0] == group):
            raise _Unsupported(f"group={group} is neither 1 nor depthwise")
        bias = None if b is None else self._constant(b, "bias").astype(np.float32)
        attrs = {"weight": _frozen(weight), "bias": _bias(bias), "groups": group,
                 "kernel_size": k}
        return self.builder.add("conv1d", [x], attrs, self.name)

    def _concat(self, *operands: Any, axis: int) -> _Tensor:
        tensors = [self._tensor(t) for t in operands]
        if len(tensors) == 1:
            return tensors[0]
        return self.builder.add(
            "concat", tensors, {"axis": _axis(axis, len(tensors[0].shape))}, self.name
        )

    def _slice(
        self, x: Any, starts: Any, ends: Any, axes: Any = None, steps: Any = None
    ) -> _Tensor:
        x = self._tensor(x)
        rank = len(x.shape)
        starts, ends = self._ints(starts, "starts"), self._ints(ends, "ends")
        axes_list = list(range(len(starts))) if axes is None else self._ints(axes, "axes")
        steps_list = [1] * len(starts) if steps is None else self._ints(steps, "steps")
        if any(s != 1 for s in steps_list):
            raise _Unsupported(f"steps {steps_list}: only step 1 is supported")
        ranges = {
            _axis(a, rank): (s, e) for a, s, e in zip(axes_list, starts, ends, strict=True)
        }
        for axis in sorted(ranges):
            start, stop, _ = slice(*ranges[axis]).indices(x.shape[axis])
            if (start, stop) != (0, x.shape[axis]):
                attrs = {"axis": axis, "start": start, "stop": max(start, stop)}
                x = self.builder.add("slice", [x], attrs, self.name)
        return x

    def _transpose(self, x: Any, *, perm: Sequence[int] | None = None) -> _Tensor:
        x = self._tensor(x)
        rank = len(x.shape)
        perm = tuple(reversed(range(rank))) if perm is None else tuple(perm)
        return self._permute(x, tuple(_axis(p, rank) for p in perm))

    def _permute(self, x: _Tensor, perm: tuple[int, ...]) -> _Tensor:
        source = self.builder.nodes[x.id]
        if source.op == "transpose":  # a transpose of a transpose is one transpose
            perm = tuple(source.attrs["perm"][p] for p in perm)
            x = _Tensor(source.inputs[0], self.builder.nodes[source.inputs[0]].shape)
        if perm == tuple(range(len(x.shape))):
            return x
        return self.builder.add("transpose", [x], {"perm": perm}, self.name)

    def _relabel(self, x: Any, *args: Any, **_: Any) -> _Tensor:
        """Reshape, Flatten, Squeeze, Unsqueeze: a ``reshape`` to the ONNX output shape."""
        x = self._tensor(x)
        shape = self._shape_of([x, *args])
        source = self.builder.nodes[x.id]
        if source.op == "reshape":  # a reshape of a reshape is one reshape
            x = _Tensor(source.inputs[0], self.builder.nodes[source.inputs[0]].shape)
        if shape == x.shape:
            return x
        return self.builder.add("reshape", [x], {"shape": shape}, self.name)


def _constant_array(tensor: onnx.TensorProto) -> np.ndarray:
    return np.asarray(numpy_helper.to_array(tensor))


def _static_shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    """The shape a value is declared with, if it is declared and every dimension is known."""
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    dims = tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _bias(value: np.ndarray | None) -> np.ndarray | None:
    """A bias as NNIR holds it: None for none, and for zeros (how exporters write no bias)."""
    return None if value is None or not value.any() else _frozen(value)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values (keyword arguments of its handler)."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise _Unsupported(f"axis {axis} is out of range for a {rank}-d tensor")
    return axis % rank


# -- names ----------------------------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in ')
_TORCH_DIR = f"{os.sep}torch{os.sep}"
# Modules that torch.fx does not trace into (torch.nn's, except containers, and PaddedConv1d):
# the PyTorch front end names what they compute by their module path.
_LEAF_CLASS = re.compile(r"^(torch\.nn\.|torch\.ao\.nn\.|compiler\.frontend\.nn\.PaddedConv1d$)")
_CONTAINERS = ("torch.nn.modules.container.",)


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _source_line(meta: dict[str, str]) -> str | None:
    """``file.py:12`` of the innermost model frame (outside torch) that made the node."""
    frames = [
        (path, line)
        for path, line in _FRAME.findall(meta.get("pkg.torch.onnx.stack_trace", ""))
        if _TORCH_DIR not in path
    ]
    if not frames:
        return None
    path, line = frames[-1]
    return f"{os.path.basename(path)}:{line}"


def _node_name(node: onnx.NodeProto) -> str:
    """The NNIR ``name`` of the nodes an ONNX node becomes.

    With ``torch.onnx.export``'s metadata, the name the PyTorch front end gives the same
    operation: the path of the ``torch.nn`` module (or ``PaddedConv1d``) that computes it, or
    the fx node name with the path of the module it is in and its source line. Otherwise the
    ONNX node name (or, for an unnamed node, its op type).
    """
    meta = _metadata(node)
    try:
        scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])
        classes = ast.literal_eval(meta["pkg.torch.onnx.class_hierarchy"])
    except (KeyError, ValueError, SyntaxError):
        return node.name or node.op_type
    if not (isinstance(scopes, list) and isinstance(classes, list)
            and len(scopes) == len(classes) >= 2):
        return node.name or node.op_type
    for scope, cls in zip(scopes[1:-1], classes[1:-1], strict=True):
        if _LEAF_CLASS.match(cls) and not cls.startswith(_CONTAINERS):
            return scope
    path = scopes[-2] if len(scopes) > 2 else ""
    name = f"{path}/{scopes[-1]}" if path else scopes[-1]
    line = _source_line(meta)
    return f"{name} ({line})" if line else name


def _where(node: onnx.NodeProto) -> str:
    """Where a node is, for error messages: its ONNX name and, if recorded, source line."""
    where = f"node {node.name!r}" if node.name else f"an unnamed {node.op_type} node"
    line = _source_line(_metadata(node))
    return f"{where} ({line})" if line else where
