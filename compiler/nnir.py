"""NNIR: the neural-network graph between the front end and the back end.

An :class:`NNIR` is a topologically ordered list of :class:`Node` s. Each node is one
operation from the op table below, with its operand ids, its output shape and precision, its
attributes (weights are ``np.float32`` arrays, read-only) and the name of the model code it came
from. The graph is the contract between :mod:`compiler.frontend` (which builds it),
:meth:`NNIR.streaming_transform` (which turns a sequence model into a one-timestep stateful
model) and the back end (:meth:`NNIR.to_program`).

Op table (``attrs`` keys; "scalar form" means one operand plus ``scalar`` and ``reverse``):

=================  ===========  ==========================================================
op                 operands     attrs
=================  ===========  ==========================================================
``input``          none         ``index``; after streaming also ``stream_axis``
``constant``       none         ``value``
``conv1d``         x            ``weight`` (Cout, Cin/groups, K), ``bias`` (Cout,) or None,
                                ``groups``, ``kernel_size``; causal, layout [..., C, T]
``stream_conv1d``  x            as ``conv1d`` plus ``state_shape`` (..., Cin, K-1);
                                x is [..., Cin] (one timestep)
``linear``         x            ``weight`` (Out, In), ``bias`` (Out,) or None; last axis
``add`` ``sub``    a, b | a     none | ``scalar``, ``reverse`` (True: ``scalar op a``)
``mul``
``maximum``
``minimum``
``relu`` ``neg``   x            none
``clamp``          x            ``min``, ``max`` (float or None)
``fn``             x            ``function``: a key of :data:`FUNCTIONS` (elementwise)
``sum`` ``mean``   x            ``axis``: reduced, kept with size 1 (the back end reduces
``amax``                        the last axis only)
``slice``          x            ``axis``, ``start``, ``stop`` (step 1)
``concat``         a, b, ...    ``axis``
``transpose``      x            ``perm``
``reshape``        x            ``shape``
``output``         x            ``index``; after streaming also ``stream_axis``
``scan``           x, ...       ``body`` (an NNIR: one timestep), ``init`` (tuple of
                                arrays), ``axis``, ``output_axis``, ``outputs``,
                                ``output``; not streaming
``state``          none         ``key`` (int), ``init`` (array); streaming only
``state_write``    x            ``key``; streaming only
=================  ===========  ==========================================================

``scan`` is a recurrence over the sequence axis ``axis`` of its operands (all have the same
length T there). Its ``body`` is a non-streaming graph of one timestep: its inputs are the
operands' step slices (``axis`` removed) then the S states, its outputs the ``outputs``
step outputs then the S new states; ``init`` holds the S initial states. The scan's output
stacks the T values of step output number ``output`` along ``output_axis``; a recurrence
with several step outputs is one ``scan`` node per output, sharing one ``body`` object and
the operands. :meth:`NNIR.streaming_transform` inlines each body once: every state becomes a
``state`` node (the value of the previous inference, ``init`` before the first) and a
``state_write`` node (the value the next inference's ``state`` node gives).

Axes in attributes are always non-negative. The two operands of a binary op have the same
shape, except that a ``constant`` operand of the same rank may broadcast (sizes 1) to the other
operand's shape, and any two operands of the same rank broadcast along axes of size 1
(``x - x.amax(-1, keepdim=True)``). :class:`NNIR` checks all of this, and every node's
shape, on construction.

:class:`Interpreter` is the float32 reference semantics of every op (and what the front end
uses for constant folding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isa.functions import Function, reference
from isa.numerics import NumberFormat

__all__ = [
    "BINARY_OPS",
    "FUNCTIONS",
    "REDUCTIONS",
    "OPS",
    "NNIR",
    "Interpreter",
    "Node",
    "StreamingError",
    "compact",
    "broadcastable",
    "evaluate",
    "infer_shape",
]

#: Elementwise binary ops and their float32 semantics.
BINARY_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
}

#: Elementwise functions of the ``fn`` op: name -> the machine function computing it.
FUNCTIONS: dict[str, Function] = {
    "tanh": Function.TANH,
    "sigmoid": Function.SIGMOID,
    "exp": Function.EXP,
    "silu": Function.SILU,
    "gelu": Function.GELU,
    "gelu_tanh": Function.GELU_TANH,
    "softplus": Function.SOFTPLUS,
    "elu": Function.ELU,
    "abs": Function.ABS,
    "reciprocal": Function.RECIP,
    "rsqrt": Function.RSQRT,
    "sqrt": Function.SQRT,
    "log": Function.LOG,
}

#: Reductions over one axis (kept, size 1) and their float32 semantics.
REDUCTIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "sum": lambda x, axis: np.sum(x, axis=axis, keepdims=True, dtype=np.float32),
    "mean": lambda x, axis: np.mean(x, axis=axis, keepdims=True, dtype=np.float32),
    "amax": lambda x, axis: np.max(x, axis=axis, keepdims=True),
}

#: Every op of the table, with its operand count (None: one or more).
OPS: dict[str, int | None] = {
    "input": 0,
    "constant": 0,
    "conv1d": 1,
    "stream_conv1d": 1,
    "linear": 1,
    **{op: None for op in BINARY_OPS},
    "relu": 1,
    "neg": 1,
    "clamp": 1,
    "fn": 1,
    **{op: 1 for op in REDUCTIONS},
    "slice": 1,
    "concat": None,
    "transpose": 1,
    "reshape": 1,
    "output": 1,
    "scan": None,
    "state": 0,
    "state_write": 1,
}

#: Ops allowed only in a non-streaming graph / only in a streaming graph.
_SEQUENCE_OPS = ("conv1d", "scan")
_STREAMING_OPS = ("stream_conv1d", "state", "state_write")

# Attributes left out of ``str(nnir)`` because they repeat something already printed.
_UNPRINTED_ATTRS = {"kernel_size", "body"}


class StreamingError(ValueError):
    """A graph cannot be turned into a streaming (one timestep per inference) graph."""


@dataclass
class Node:
    """One operation of an :class:`NNIR` graph.

    Attributes
    ----------
    id : int
        Unique within the graph.
    op : str
        A key of :data:`OPS`.
    inputs : list of int
        Ids of the operand nodes, in operand order.
    shape : tuple of int
        Output shape of one inference (after :meth:`NNIR.streaming_transform`, the streaming
        axis is removed).
    precision : NumberFormat
        Precision of the output.
    attrs : dict
        Op attributes (see the module docstring); arrays are read-only ``np.float32``.
    name : str
        Where the node came from: a module path, or an fx node name and source line.
    """

    id: int
    op: str
    inputs: list[int]
    shape: tuple[int, ...]
    precision: NumberFormat
    attrs: dict = field(default_factory=dict)
    name: str = ""

    def __str__(self) -> str:
        operands = ", ".join(f"%{i}" for i in self.inputs)
        attrs = "".join(
            f" {k}={_format_attr(v)}" for k, v in self.attrs.items() if k not in _UNPRINTED_ATTRS
        )
        line = f"%{self.id} = {self.op}({operands}){attrs} -> {list(self.shape)}"
        line += f" {self.precision.value}"
        line = f"{line}  # {self.name}" if self.name else line
        if self.op == "scan":  # the body, indented under the node
            line += "".join(f"\n    {row}" for row in str(self.attrs["body"]).splitlines())
        return line


def _format_attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return str(value.shape[0]) if value.ndim == 1 else str(tuple(value.shape))
    if isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
        return "(" + ", ".join(_format_attr(v) for v in value) + ")"
    return repr(value)


def infer_shape(op: str, shapes: Sequence[tuple[int, ...]], attrs: dict) -> tuple[int, ...]:
    """Return the output shape of ``op`` applied to operands of the given shapes.

    Parameters
    ----------
    op : str
        Any op of :data:`OPS` except ``input`` (whose shape is given, not inferred).
    shapes : sequence of tuple of int
        Operand shapes, in operand order.
    attrs : dict
        The node's attributes.

    Raises
    ------
    ValueError
        If the operands and attributes are inconsistent (the message says how).
    """
    if op == "constant":
        return tuple(attrs["value"].shape)
    if op in ("conv1d", "stream_conv1d"):
        (x,) = shapes
        cout, cin_per_group, k = attrs["weight"].shape
        if k != attrs["kernel_size"]:
            raise ValueError(f"weight has {k} taps but kernel_size is {attrs['kernel_size']}")
        channel_axis = -1 if op == "stream_conv1d" else -2
        if len(x) < -channel_axis or x[channel_axis] != cin_per_group * attrs["groups"]:
            raise ValueError(
                f"operand shape {list(x)} does not have {cin_per_group * attrs['groups']} "
                f"channels at axis {channel_axis}"
            )
        if attrs["groups"] != 1 and not (cin_per_group == 1 and cout == attrs["groups"]):
            raise ValueError(f"groups={attrs['groups']} is neither 1 nor depthwise")
        _check_bias(attrs, cout)
        if op == "stream_conv1d":
            state = x[:-1] + (x[-1], k - 1)
            if tuple(attrs["state_shape"]) != state:
                raise ValueError(f"state_shape {attrs['state_shape']} should be {state}")
            return x[:-1] + (cout,)
        return x[:-2] + (cout, x[-1])
    if op == "linear":
        (x,) = shapes
        out, in_ = attrs["weight"].shape
        if not x or x[-1] != in_:
            raise ValueError(f"operand shape {list(x)} does not end in {in_}")
        _check_bias(attrs, out)
        return x[:-1] + (out,)
    if op in BINARY_OPS:
        if len(shapes) == 1:
            if "scalar" not in attrs:
                raise ValueError("one operand but no 'scalar' attribute")
            return shapes[0]
        if len(shapes) != 2:
            raise ValueError(f"{len(shapes)} operands")
        return tuple(np.broadcast_shapes(*shapes))
    if op in ("relu", "neg", "clamp", "output", "state_write"):
        return shapes[0]
    if op == "state":
        return tuple(attrs["init"].shape)
    if op == "scan":
        return _scan_shape(shapes, attrs)
    if op == "fn":
        if attrs["function"] not in FUNCTIONS:
            raise ValueError(f"unknown function {attrs['function']!r}")
        return shapes[0]
    if op in REDUCTIONS:
        (x,) = shapes
        axis = attrs["axis"]
        if not 0 <= axis < len(x):
            raise ValueError(f"axis {axis} is outside {list(x)}")
        return x[:axis] + (1,) + x[axis + 1 :]
    if op == "slice":
        (x,) = shapes
        axis, start, stop = attrs["axis"], attrs["start"], attrs["stop"]
        if not (0 <= axis < len(x) and 0 <= start <= stop <= x[axis]):
            raise ValueError(f"slice {start}:{stop} of axis {axis} is outside {list(x)}")
        return x[:axis] + (stop - start,) + x[axis + 1 :]
    if op == "concat":
        axis = attrs["axis"]
        rest = {s[:axis] + s[axis + 1 :] for s in shapes}
        if len(rest) != 1 or not 0 <= axis < len(shapes[0]):
            raise ValueError(f"cannot concatenate {[list(s) for s in shapes]} along axis {axis}")
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1 :]
    if op == "transpose":
        (x,) = shapes
        perm = attrs["perm"]
        if sorted(perm) != list(range(len(x))):
            raise ValueError(f"perm {perm} is not a permutation of the {len(x)} axes")
        return tuple(x[p] for p in perm)
    if op == "reshape":
        (x,) = shapes
        shape = tuple(attrs["shape"])
        if math.prod(shape) != math.prod(x):
            raise ValueError(f"cannot reshape {list(x)} to {list(shape)}")
        return shape
    raise ValueError(f"unknown op {op!r}")


def _scan_shape(shapes: Sequence[tuple[int, ...]], attrs: dict) -> tuple[int, ...]:
    """Check a ``scan`` node against its body; return its output shape."""
    body, init, axis = attrs["body"], attrs["init"], attrs["axis"]
    if body.streaming or any(n.op in _SEQUENCE_OPS for n in body.nodes):
        raise ValueError("the body of a scan must be one timestep of stateless ops")
    m, k_out = attrs["outputs"], attrs["output"]
    if len(body.inputs) != len(shapes) + len(init) or len(body.outputs) != m + len(init):
        raise ValueError(f"a body with {len(body.inputs)} inputs and {len(body.outputs)} "
                         f"outputs does not fit {len(shapes)} operands, {m} step outputs and "
                         f"{len(init)} states")
    if not 0 <= k_out < m:
        raise ValueError(f"output {k_out} is not one of the {m} step outputs")
    lengths = set()
    for k, x in enumerate(shapes):
        if not 0 <= axis < len(x):
            raise ValueError(f"axis {axis} is out of range for operand {k} of shape {list(x)}")
        lengths.add(x[axis])
        if body.node(body.inputs[k]).shape != x[:axis] + x[axis + 1:]:
            raise ValueError(f"operand {k} of shape {list(x)} without axis {axis} is not the "
                             f"body's input {list(body.node(body.inputs[k]).shape)}")
    if len(lengths) != 1:
        raise ValueError(f"the operands have different lengths {sorted(lengths)} on axis {axis}")
    for k, value in enumerate(init):
        state = body.node(body.inputs[len(shapes) + k]).shape
        new = body.node(body.outputs[m + k]).shape
        if not value.shape == state == new:
            raise ValueError(f"state {k}: initial value {list(value.shape)}, body input "
                             f"{list(state)} and body output {list(new)} differ")
    y = body.node(body.outputs[k_out]).shape
    out_axis = attrs["output_axis"]
    if not 0 <= out_axis <= len(y):
        raise ValueError(f"output_axis {out_axis} is out of range for a step output {list(y)}")
    return y[:out_axis] + (lengths.pop(),) + y[out_axis:]


def broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Return whether shapes ``a`` and ``b`` have the same rank and broadcast (each axis
    equal or 1 in one of them), e.g. a value and a reduction's result."""
    return len(a) == len(b) and all(x == y or 1 in (x, y) for x, y in zip(a, b, strict=True))


def _check_bias(attrs: dict, size: int) -> None:
    bias = attrs["bias"]
    if bias is not None and bias.shape != (size,):
        raise ValueError(f"bias shape {bias.shape} should be {(size,)}")


class NNIR:
    """A neural-network graph (see the module docstring for the op table).

    Parameters
    ----------
    nodes : list of Node
        Topologically ordered: every operand id refers to an earlier node.
    inputs : list of int
        Ids of the ``input`` nodes, ordered by their ``index``.
    outputs : list of int
        Ids of the ``output`` nodes, ordered by their ``index``.
    streaming : bool
        True for a graph produced by :meth:`streaming_transform`: each inference is one
        timestep, and ``stream_conv1d`` nodes hold state between inferences.

    Raises
    ------
    ValueError
        If the graph breaks any of the rules above, an op's operand count, or an op's shape
        rule; the message names the node.
    """

    def __init__(
        self, nodes: list[Node], inputs: list[int], outputs: list[int], streaming: bool = False
    ) -> None:
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.streaming = streaming
        self._by_id: dict[int, Node] = {}
        for node in nodes:
            self._check_node(node)
            self._by_id[node.id] = node
        for kind, ids in (("input", inputs), ("output", outputs)):
            ops = [(self.node(i).op, self.node(i).attrs.get("index")) for i in ids]
            if ops != [(kind, k) for k in range(len(ids))]:
                raise ValueError(f"{kind}s {ids} are not the {kind} nodes in index order")
            if sum(n.op == kind for n in nodes) != len(ids):
                raise ValueError(f"some {kind} nodes are missing from the {kind}s list")
        for op in ("state", "state_write"):
            keys = [n.attrs["key"] for n in nodes if n.op == op]
            if len(set(keys)) != len(keys):
                raise ValueError(f"two {op} nodes share a key: {sorted(keys)}")
        reads = {n.attrs["key"]: n for n in nodes if n.op == "state"}
        writes = {n.attrs["key"]: n for n in nodes if n.op == "state_write"}
        if reads.keys() != writes.keys():
            raise ValueError(f"state keys {sorted(reads)} are not the state_write keys "
                             f"{sorted(writes)}")
        for key, read in reads.items():
            if read.shape != self.node(writes[key].inputs[0]).shape:
                raise ValueError(f"state {key} has shape {list(read.shape)} but is written "
                                 f"a value of shape {list(writes[key].shape)}")

    def _check_node(self, node: Node) -> None:
        where = f"node %{node.id} ({node.op}, {node.name!r})"
        if node.id in self._by_id:
            raise ValueError(f"{where}: duplicate id")
        if node.op not in OPS:
            raise ValueError(f"{where}: unknown op")
        arity = OPS[node.op]
        if (arity is None and not node.inputs) or (arity is not None and len(node.inputs) != arity):
            raise ValueError(f"{where}: wrong number of operands {len(node.inputs)}")
        missing = [i for i in node.inputs if i not in self._by_id]
        if missing:
            raise ValueError(f"{where}: operands {missing} are not earlier nodes")
        if node.op in (_SEQUENCE_OPS if self.streaming else _STREAMING_OPS):
            raise ValueError(f"{where}: not allowed in a graph with streaming={self.streaming}")
        if node.op == "input":
            return
        try:
            shape = infer_shape(node.op, [self._by_id[i].shape for i in node.inputs], node.attrs)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        if shape != tuple(node.shape):
            raise ValueError(f"{where}: shape {list(node.shape)} should be {list(shape)}")
        if node.op in BINARY_OPS and len(node.inputs) == 2:
            a, b = (self._by_id[i] for i in node.inputs)
            if a.shape != b.shape and not (
                len(a.shape) == len(b.shape)
                and (
                    (b.op == "constant" and shape == a.shape)
                    or (a.op == "constant" and shape == b.shape)
                    or broadcastable(a.shape, b.shape)
                )
            ):
                raise ValueError(
                    f"{where}: operands of shapes {list(a.shape)} and {list(b.shape)}: only "
                    f"operands of the same rank may broadcast"
                )

    def node(self, id: int) -> Node:
        """Return the node with the given id (``KeyError`` if there is none)."""
        return self._by_id[id]

    def consumers(self, id: int) -> list[Node]:
        """Return the nodes that take node ``id`` as an operand, in graph order."""
        return [n for n in self.nodes if id in n.inputs]

    def __str__(self) -> str:
        return "\n".join(str(n) for n in self.nodes)

    def __repr__(self) -> str:
        return (
            f"<NNIR {len(self.nodes)} nodes, inputs={self.inputs}, outputs={self.outputs}, "
            f"streaming={self.streaming}>"
        )

    def streaming_transform(self, axis: int) -> tuple[NNIR, int]:
        """Turn a sequence model into a streaming model that runs one timestep per inference.

        The time axis is followed through every node: ``conv1d`` becomes ``stream_conv1d``
        (whose window of the last K-1 inputs is state), a ``scan`` becomes its body with a
        ``state``/``state_write`` pair per recurrent state, elementwise ops pass it through,
        and transposes and reshapes move it. Feeding the returned graph the timesteps of a sequence
        one at a time gives, at step i, timestep i of the original graph's output.

        Parameters
        ----------
        axis : int
            Index of the sequence (time) axis of the graph's single input; negative counts
            from the end.

        Returns
        -------
        tuple of (NNIR, int)
            A new graph whose input and output shapes lack the time axis, and the index of the
            time axis in the original output shape.

        Raises
        ------
        StreamingError
            If the graph is already streaming, has other than one input, or has a node that
            would mix or look across timesteps (conv1d whose time axis is not last, a scan
            over another axis, Linear over time, slice or concat along time, reshape merging
            time with another axis, a constant that varies along time); the message names the
            node and why.
        """
        return _streaming_transform(self, axis)

    def to_program(self, config: Any, name: str | None = None, **kwargs: Any) -> Any:
        """Compile the graph for an accelerator configuration (see ``compiler.lower``), with
        a reset entry (``compiler.reset``)."""
        from compiler.lower import lower
        from compiler.reset import add_reset

        return add_reset(lower(self, config, name=name, **kwargs))


def compact(nodes: list[Node], inputs: list[int], outputs: list[int], streaming: bool) -> NNIR:
    """Return a graph of the nodes that inputs or outputs need, with ids renumbered from 0.

    Nodes that no output depends on are dropped (``input`` nodes are kept); a state is kept,
    with its ``state_write`` and what that needs, when something kept reads it.
    """
    live: set[int] = set(inputs)
    stack = list(outputs)
    by_id = {n.id: n for n in nodes}
    writes = {n.attrs["key"]: n.id for n in nodes if n.op == "state_write"}
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(by_id[i].inputs)
            if by_id[i].op == "state":
                stack.append(writes[by_id[i].attrs["key"]])
    kept = [n for n in nodes if n.id in live]
    new_id = {n.id: k for k, n in enumerate(kept)}
    renumbered = [
        Node(
            new_id[n.id],
            n.op,
            [new_id[i] for i in n.inputs],
            tuple(n.shape),
            n.precision,
            n.attrs,
            n.name,
        )
        for n in kept
    ]
    return NNIR(renumbered, [new_id[i] for i in inputs], [new_id[i] for i in outputs], streaming)


def evaluate(node: Node, operands: Sequence[np.ndarray]) -> np.ndarray:
    """Return the float32 result of a stateless node applied to operand values.

    This is the reference semantics of every op except ``input`` and ``stream_conv1d`` (see
    :class:`Interpreter`); the front end uses it for constant folding.
    """
    op, a = node.op, node.attrs
    if op == "constant":
        return a["value"]
    if op == "conv1d":
        (x,) = operands
        k = a["kernel_size"]
        padded = np.concatenate([np.zeros(x.shape[:-1] + (k - 1,), np.float32), x], axis=-1)
        windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=-1)  # [..., C, T, K]
        return _conv_window(windows, a, time_axis=True)
    if op == "linear":
        (x,) = operands
        y = np.matmul(x, a["weight"].T)
        return y if a["bias"] is None else y + a["bias"]
    if op in BINARY_OPS:
        fn = BINARY_OPS[op]
        if len(operands) == 2:
            return fn(*operands)
        s = np.float32(a["scalar"])
        return fn(s, operands[0]) if a["reverse"] else fn(operands[0], s)
    (x, *_) = operands
    if op == "relu":
        return np.maximum(x, np.float32(0))
    if op == "neg":
        return -x
    if op == "fn":
        return reference(FUNCTIONS[a["function"]], x).astype(np.float32)
    if op in REDUCTIONS:
        return REDUCTIONS[op](x, a["axis"])
    if op == "clamp":
        if a["min"] is not None:
            x = np.maximum(x, np.float32(a["min"]))
        return x if a["max"] is None else np.minimum(x, np.float32(a["max"]))
    if op == "slice":
        return np.take(x, range(a["start"], a["stop"]), axis=a["axis"])
    if op == "concat":
        return np.concatenate(operands, axis=a["axis"])
    if op == "transpose":
        return np.transpose(x, a["perm"])
    if op == "reshape":
        return x.reshape(a["shape"])
    if op == "output":
        return x
    if op == "scan":
        return _scan(operands, a)
    raise ValueError(f"op {op!r} of node %{node.id} has no stateless semantics")


def _scan(operands: Sequence[np.ndarray], attrs: dict) -> np.ndarray:
    """Run a ``scan``: the body once per step of ``axis``, the states carried along."""
    body, axis = Interpreter(attrs["body"]), attrs["axis"]
    states = [np.asarray(v, np.float32) for v in attrs["init"]]
    m = attrs["outputs"]
    ys = []
    for t in range(operands[0].shape[axis]):
        results = body.run(*(np.take(x, t, axis=axis) for x in operands), *states)
        ys.append(results[attrs["output"]])
        states = results[m:]
    return np.stack(ys, axis=attrs["output_axis"])


def _conv_window(windows: np.ndarray, attrs: dict, time_axis: bool) -> np.ndarray:
    """Apply conv weights to windows [..., C, (T,) K]; return [..., Cout, (T)]."""
    t = "t" if time_axis else ""
    w = attrs["weight"]
    if attrs["groups"] == 1:
        y = np.einsum(f"...c{t}k,ock->...o{t}", windows, w)
    else:
        y = np.einsum(f"...c{t}k,ck->...c{t}", windows, w[:, 0, :])
    if attrs["bias"] is not None:
        y = y + (attrs["bias"][:, None] if time_axis else attrs["bias"])
    return y.astype(np.float32, copy=False)


class Interpreter:
    """Float32 reference execution of an :class:`NNIR` graph.

    For a streaming graph each :meth:`run` is one timestep; the window of every
    ``stream_conv1d`` node and the value of every ``state`` key are kept here between calls:
    zero (a state: its ``init``) at construction and after :meth:`reset`.

    Parameters
    ----------
    nnir : NNIR
        The graph to execute.
    """

    def __init__(self, nnir: NNIR) -> None:
        self.nnir = nnir
        self.state: dict[int, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Zero every ``stream_conv1d`` window; set every ``state`` to its ``init``."""
        self.state = {
            n.id: np.zeros(n.attrs["state_shape"], np.float32)
            for n in self.nnir.nodes
            if n.op == "stream_conv1d"
        }
        self.recurrent = {n.attrs["key"]: np.array(n.attrs["init"], np.float32)
                          for n in self.nnir.nodes if n.op == "state"}

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run one inference (one timestep of a streaming graph).

        Parameters
        ----------
        *inputs : np.ndarray
            One array per graph input, shaped like the input node; converted to float32.

        Returns
        -------
        list of np.ndarray
            One float32 array per graph output.

        Raises
        ------
        ValueError
            If the number or shapes of the inputs do not match the graph's inputs.
        """
        if len(inputs) != len(self.nnir.inputs):
            raise ValueError(f"expected {len(self.nnir.inputs)} inputs, got {len(inputs)}")
        values: dict[int, np.ndarray] = {}
        for node in self.nnir.nodes:
            if node.op == "input":
                x = np.asarray(inputs[node.attrs["index"]], dtype=np.float32)
                if x.shape != node.shape:
                    raise ValueError(
                        f"input {node.attrs['index']} has shape {list(x.shape)}, "
                        f"expected {list(node.shape)}"
                    )
                values[node.id] = x
            elif node.op == "stream_conv1d":
                x = values[node.inputs[0]]
                window = np.concatenate([self.state[node.id], x[..., None]], axis=-1)
                self.state[node.id] = window[..., 1:]
                values[node.id] = _conv_window(window, node.attrs, time_axis=False)
            elif node.op == "state":
                values[node.id] = self.recurrent[node.attrs["key"]]
            elif node.op == "state_write":
                values[node.id] = values[node.inputs[0]]
            else:
                values[node.id] = evaluate(node, [values[i] for i in node.inputs])
        for node in self.nnir.nodes:  # every state read this step's old value
            if node.op == "state_write":
                self.recurrent[node.attrs["key"]] = values[node.id]
        return [values[i] for i in self.nnir.outputs]


def _streaming_transform(graph: NNIR, axis: int) -> tuple[NNIR, int]:
    """Implement :meth:`NNIR.streaming_transform` (see there for the contract)."""
    if graph.streaming:
        raise StreamingError("the graph is already streaming")
    if len(graph.inputs) != 1:
        raise StreamingError(
            f"streaming_transform needs a graph with one input, this one has {len(graph.inputs)}"
        )
    rank = len(graph.node(graph.inputs[0]).shape)
    if not -rank <= axis < rank:
        raise StreamingError(f"axis {axis} is out of range for the {rank}-d input")
    time: dict[int, int | None] = {}  # node id -> its time axis in the original graph
    inlined: dict[int, list[int]] = {}  # id(scan body) -> ids of its inlined step outputs
    alias: dict[int, int] = {}  # relabels that became identities -> their operand
    nodes: list[Node] = []
    fresh = iter(range(max(n.id for n in graph.nodes) + 1, 1 << 62))
    for node in graph.nodes:
        times = [time[i] for i in node.inputs]
        if node.op == "input":
            t = axis % rank
            op, attrs, inputs = "input", {**node.attrs, "stream_axis": t}, []
        elif all(u is None for u in times):
            # Only constants upstream (the front end folds these): no time axis.
            time[node.id] = None
            nodes.append(node)
            continue
        else:
            t_in = next(u for u in times if u is not None)
            if any(u not in (None, t_in) for u in times):
                raise _stream_error(node, f"its operands have time at different axes {times}")
            inputs = [
                alias.get(i, i)
                if time[i] is not None
                else _drop_constant_time(graph.node(i), node, t_in, fresh, nodes)
                for i in node.inputs
            ]
            if node.op == "scan":
                if t_in != node.attrs["axis"]:
                    raise _stream_error(node, f"it scans axis {node.attrs['axis']}, but the "
                                        f"streamed time axis is {t_in}")
                time[node.id] = node.attrs["output_axis"]
                alias[node.id] = _inline_scan(node, inputs, fresh, nodes, inlined)
                continue
            op, attrs, t = _stream_op(graph, node, t_in)
            if _is_identity(op, attrs, _drop(graph.node(node.inputs[0]).shape, t_in)):
                time[node.id] = t
                alias[node.id] = inputs[0]  # it moved only the time axis: nothing left to do
                continue
        time[node.id] = t
        shape = _drop(node.shape, t)
        nodes.append(Node(node.id, op, inputs, shape, node.precision, attrs, node.name))
    out_axes = {time[i] for i in graph.outputs}
    if len(out_axes) != 1 or None in out_axes:
        raise StreamingError(
            f"outputs {graph.outputs} do not all carry the time axis at one index: {out_axes}"
        )
    return compact(nodes, graph.inputs, graph.outputs, streaming=True), out_axes.pop()


def _drop(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return tuple(shape[:axis]) + tuple(shape[axis + 1 :])


def _is_identity(op: str, attrs: dict, in_shape: tuple[int, ...]) -> bool:
    if op == "transpose":
        return tuple(attrs["perm"]) == tuple(range(len(in_shape)))
    return op == "reshape" and tuple(attrs["shape"]) == in_shape


def _stream_error(node: Node, why: str) -> StreamingError:
    return StreamingError(f"cannot stream node %{node.id} ({node.op}, {node.name!r}): {why}")


def _stream_op(graph: NNIR, node: Node, t: int) -> tuple[str, dict, int]:
    """Return (op, attrs, output time axis) of the streaming version of ``node``.

    ``t`` is the time axis of its operands.
    """
    op, attrs = node.op, node.attrs
    in_shape = graph.node(node.inputs[0]).shape
    last = len(in_shape) - 1
    if op == "conv1d":
        if t != last:
            raise _stream_error(
                node,
                f"conv1d needs time as its last axis (layout [..., C, T]), but time is "
                f"axis {t} of {list(in_shape)}",
            )
        state_shape = in_shape[:-1] + (attrs["kernel_size"] - 1,)
        return "stream_conv1d", {**attrs, "state_shape": state_shape}, t
    if op == "linear":
        if t == last:
            raise _stream_error(
                node,
                f"Linear contracts the time axis {t} of {list(in_shape)}, which mixes "
                f"timesteps (transpose time away from the last axis first)",
            )
        return op, attrs, t
    if op in BINARY_OPS or op in ("relu", "neg", "clamp", "fn"):
        return op, attrs, t
    if op in REDUCTIONS:
        if attrs["axis"] == t:
            raise _stream_error(
                node,
                f"it reduces the time axis {t} of {list(in_shape)}, which mixes timesteps",
            )
        return op, {"axis": attrs["axis"] - (attrs["axis"] > t)}, t
    if op == "output":
        return op, {**attrs, "stream_axis": t}, t
    if op in ("slice", "concat"):
        if attrs["axis"] == t:
            what = "slices" if op == "slice" else "concatenates along"
            raise _stream_error(
                node,
                f"it {what} the time axis {t}, but a streaming model sees one timestep at a time",
            )
        return op, {**attrs, "axis": attrs["axis"] - (attrs["axis"] > t)}, t
    if op == "transpose":
        perm = attrs["perm"]
        return op, {"perm": tuple(p - (p > t) for p in perm if p != t)}, perm.index(t)
    if op == "reshape":
        shape = attrs["shape"]
        before = math.prod(in_shape[:t])
        for u, size in enumerate(shape):
            if size == in_shape[t] and math.prod(shape[:u]) == before:
                return op, {"shape": tuple(shape[:u]) + tuple(shape[u + 1 :])}, u
        raise _stream_error(
            node, f"reshape {list(in_shape)} -> {list(shape)} merges or splits the time axis {t}"
        )
    raise _stream_error(node, "this op has no streaming form")


def _inline_scan(scan: Node, operands: list[int], fresh: Any, nodes: list[Node],
                 inlined: dict[int, list[int]]) -> int:
    """Append one step of ``scan`` (its body, a ``state`` and a ``state_write`` node per
    state) to ``nodes``, reading the streamed ``operands``, unless a scan of the same body
    was inlined already (``inlined``); return the id of its step output."""
    body: NNIR = scan.attrs["body"]
    m = scan.attrs["outputs"]
    if id(body) in inlined:
        return inlined[id(body)][scan.attrs["output"]]
    new: dict[int, int] = dict(zip(body.inputs, operands, strict=False))
    keys = []
    for k, init in enumerate(scan.attrs["init"]):
        state = Node(next(fresh), "state", [], tuple(init.shape), scan.precision, {}, scan.name)
        state.attrs = {"key": state.id, "init": init}
        nodes.append(state)
        new[body.inputs[len(operands) + k]] = state.id
        keys.append(state.id)
    for node in body.nodes:
        if node.op in ("input", "output"):
            continue
        copy = Node(next(fresh), node.op, [new[i] for i in node.inputs], tuple(node.shape),
                    node.precision, node.attrs, node.name)
        nodes.append(copy)
        new[node.id] = copy.id
    for key, out in zip(keys, body.outputs[m:], strict=True):
        value = body.node(body.node(out).inputs[0])
        nodes.append(Node(next(fresh), "state_write", [new[value.id]], tuple(value.shape),
                          scan.precision, {"key": key}, scan.name))
    inlined[id(body)] = [new[body.node(out).inputs[0]] for out in body.outputs[:m]]
    return inlined[id(body)][scan.attrs["output"]]


def _drop_constant_time(const: Node, consumer: Node, t: int, fresh: Any, nodes: list[Node]) -> int:
    """Return the id of ``const`` with the time axis ``t`` of ``consumer``'s output removed.

    The constant is aligned to the consumer's output from the right (numpy broadcasting); if
    it spans the time axis, a new constant node without that axis is appended to ``nodes``.
    """
    value = const.attrs["value"]
    axis = t - (len(consumer.shape) - value.ndim)
    if axis < 0:
        return const.id
    if not (value == np.take(value, [0], axis=axis)).all():
        raise _stream_error(
            consumer, f"its constant operand %{const.id} varies along the time axis {t}"
        )
    value = np.take(value, 0, axis=axis)
    value.flags.writeable = False
    new = Node(
        next(fresh), "constant", [], value.shape, const.precision, {"value": value}, const.name
    )
    nodes.append(new)
    return new.id
