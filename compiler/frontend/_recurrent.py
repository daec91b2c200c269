"""Recurrent layers as NNIR ``scan`` nodes: the one-timestep body graphs of LSTM and GRU.

A layer over a sequence is a ``scan`` (``compiler/nnir.py``) whose body computes one step
from the step input and the previous states with ordinary NNIR ops, so that the streaming
transform, the back end and the reference interpreter need nothing recurrent-specific
beyond the ``scan`` itself. The gates are computed as ``linear`` of ``concat([x, h])``: the
input and recurrent weights side by side, which the back end lowers to one chain of tile
products per output block (``docs/compiler.md`` §9a).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.nnir import NNIR, Node, infer_shape
from isa.numerics import NumberFormat

__all__ = ["lstm_body", "gru_body", "rnn_body", "frozen"]


def frozen(value: np.ndarray) -> np.ndarray:
    """Return a read-only float32 copy of ``value`` (the form NNIR attributes take)."""
    array = np.array(value, dtype=np.float32)
    array.flags.writeable = False
    return array


class _Body:
    """Builds a one-timestep graph: inputs first, then ops, then outputs."""

    def __init__(self, name: str) -> None:
        self.nodes: list[Node] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.name = name

    def input(self, shape: tuple[int, ...]) -> int:
        self.nodes.append(Node(len(self.nodes), "input", [], shape, NumberFormat.BF16,
                               {"index": len(self.inputs)}, self.name))
        self.inputs.append(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def add(self, op: str, operands: Sequence[int], **attrs: object) -> int:
        shape = infer_shape(op, [self.nodes[i].shape for i in operands], attrs)
        self.nodes.append(Node(len(self.nodes), op, list(operands), shape, NumberFormat.BF16,
                               attrs, self.name))
        return len(self.nodes) - 1

    def linear(self, x: int, weight: np.ndarray, bias: np.ndarray | None) -> int:
        return self.add("linear", [x], weight=frozen(weight),
                        bias=None if bias is None else frozen(bias))

    def output(self, x: int) -> None:
        self.outputs.append(self.add("output", [x], index=len(self.outputs)))

    def graph(self) -> NNIR:
        return NNIR(self.nodes, self.inputs, self.outputs)


def _gate_rows(w: np.ndarray | None, k: int, hidden: int) -> np.ndarray | None:
    return None if w is None else np.asarray(w, np.float64)[k * hidden:(k + 1) * hidden]


def _gate_bias(b_ih: np.ndarray | None, b_hh: np.ndarray | None, k: int,
               hidden: int) -> np.ndarray | None:
    parts = [_gate_rows(b, k, hidden) for b in (b_ih, b_hh) if b is not None]
    return None if not parts else sum(parts)  # type: ignore[return-value]


def lstm_body(w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
              b_hh: np.ndarray | None, rows: tuple[int, ...], name: str) -> NNIR:
    """Return one step of an LSTM layer (PyTorch's gate order i, f, g, o).

    Inputs ``x`` [*rows, I], ``h`` and ``c`` [*rows, H]; outputs ``h'`` (the step output),
    ``h'`` and ``c'`` (the new states)::

        i, f, o = σ(W_* [x, h] + b_*),  g = tanh(W_g [x, h] + b_g)
        c' = f·c + i·g,  h' = o·tanh(c')

    Each gate's bias is ``b_ih + b_hh`` (summed in float64, then rounded once).
    """
    hidden = w_hh.shape[1]
    b = _Body(name)
    x, h, c = b.input(rows + (w_ih.shape[1],)), b.input(rows + (hidden,)), b.input(
        rows + (hidden,))
    xh = b.add("concat", [x, h], axis=len(rows))
    w = np.concatenate([np.asarray(w_ih, np.float64), np.asarray(w_hh, np.float64)], axis=1)
    gates = []
    for k, function in enumerate(("sigmoid", "sigmoid", "tanh", "sigmoid")):
        z = b.linear(xh, w[k * hidden:(k + 1) * hidden], _gate_bias(b_ih, b_hh, k, hidden))
        gates.append(b.add("fn", [z], function=function))
    i, f, g, o = gates
    c_new = b.add("add", [b.add("mul", [f, c]), b.add("mul", [i, g])])
    h_new = b.add("mul", [o, b.add("fn", [c_new], function="tanh")])
    for out in (h_new, h_new, c_new):
        b.output(out)
    return b.graph()


def gru_body(w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
             b_hh: np.ndarray | None, rows: tuple[int, ...], name: str) -> NNIR:
    """Return one step of a GRU layer (PyTorch's gate order r, z, n).

    Inputs ``x`` [*rows, I] and ``h`` [*rows, H]; outputs ``h'`` twice (step output, new
    state)::

        r, z = σ(W_* [x, h] + b_ih* + b_hh*),  n = tanh(W_in x + b_in + r·(W_hn h + b_hn))
        h' = (1 − z)·n + z·h = n + z·(h − n)
    """
    hidden = w_hh.shape[1]
    b = _Body(name)
    x, h = b.input(rows + (w_ih.shape[1],)), b.input(rows + (hidden,))
    xh = b.add("concat", [x, h], axis=len(rows))
    w = np.concatenate([np.asarray(w_ih, np.float64), np.asarray(w_hh, np.float64)], axis=1)
    r, z = (b.add("fn", [b.linear(xh, w[k * hidden:(k + 1) * hidden],
                                  _gate_bias(b_ih, b_hh, k, hidden))], function="sigmoid")
            for k in (0, 1))
    a = b.linear(x, _gate_rows(w_ih, 2, hidden), _gate_rows(b_ih, 2, hidden))
    m = b.linear(h, _gate_rows(w_hh, 2, hidden), _gate_rows(b_hh, 2, hidden))
    n = b.add("fn", [b.add("add", [a, b.add("mul", [r, m])])], function="tanh")
    h_new = b.add("add", [n, b.add("mul", [z, b.add("sub", [h, n])])])
    b.output(h_new)
    b.output(h_new)
    return b.graph()


def rnn_body(w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
             b_hh: np.ndarray | None, rows: tuple[int, ...], name: str,
             nonlinearity: str) -> NNIR:
    """Return one step of an Elman RNN layer: ``h' = act(W [x, h] + b_ih + b_hh)`` with
    ``act`` tanh or relu; inputs ``x``, ``h``; outputs ``h'`` twice."""
    hidden = w_hh.shape[1]
    b = _Body(name)
    x, h = b.input(rows + (w_ih.shape[1],)), b.input(rows + (hidden,))
    xh = b.add("concat", [x, h], axis=len(rows))
    w = np.concatenate([np.asarray(w_ih, np.float64), np.asarray(w_hh, np.float64)], axis=1)
    z = b.linear(xh, w, _gate_bias(b_ih, b_hh, 0, hidden))
    h_new = (b.add("fn", [z], function="tanh") if nonlinearity == "tanh"
             else b.add("relu", [z]))
    b.output(h_new)
    b.output(h_new)
    return b.graph()
