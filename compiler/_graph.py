"""The block graph: an NNIR graph rewritten as a dataflow graph of B-lane blocks.

Every tensor is a matrix of *rows* (all axes but the last) by *blocks* (its last axis cut into
⌈C/B⌉ blocks of B lanes, zero padded). The builder turns every NNIR node into the values of
its blocks (:class:`Val`), which are of two families:

* tensor-RAM values, which the machine reads from tensor RAM: model input beats
  (:class:`InputBlock`), constants such as biases and scalars (:class:`ConstBlock`) and the
  previous values kept between inferences (:class:`StateSlot`): the window of a streaming
  convolution, and a recurrent ``state`` (the block its ``state_write`` wrote in the previous
  inference);
* accumulator values, computed in an fp32 accumulator: tile multiply-accumulate chains
  (:class:`Chain`, the tile products summed in fp32) and vector operations
  (:class:`VecVal`, one ``VEC`` instruction: ``clamp(op(a, t))``).

Elementwise ops become :class:`VecVal` s on their operands, and a clamp (ReLU, clamp,
maximum/minimum with a scalar) on a single-use vector value is fused into it
(:meth:`Graph.fuse`), so that e.g. ``relu(linear(x))`` is a chain plus one ``VEC ADD`` with
the bias that also clamps. Relabelling ops (slice, concat, transpose, reshape) map blocks to
blocks at no cost when every output block is one input block with its lanes in place; any
other data movement is a chain of 0/1 selection tiles, which moves bf16 values exactly.

Padding lanes (beyond C in the last block of a row) may hold any finite value: every
consumer ignores them (weight tiles have zero columns there, outputs drop them). A function
that can make a finite value infinite or NaN (exp, softplus, reciprocal, rsqrt, sqrt, log)
is therefore applied to a block whose padding lanes were first set to a safe value.

Functions (:class:`FnVal`, one ``FN``) read a block from tensor RAM. Reductions over the
last axis are chains of constant tiles: a tile whose data columns are all ones (1/n for a
mean) sums its block into *every* lane, so the result of ``sum``/``mean`` is a **splat**
block (every lane holds the row's value), as is ``amax`` (``VEC MAX`` across the row's
blocks, then ``FN MAX_LANES``). A splat block is what a last-axis broadcast
(``x - x.amax(-1, keepdim=True)``) applies to every block of the row; a size-1 last axis
that is not a splat is made one by a tile whose first column is all ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compiler.nnir import FUNCTIONS, NNIR, REDUCTIONS, Node, evaluate
from isa.functions import Function
from isa.numerics import VecOp, f32_to_bf16_bits

__all__ = [
    "INF", "PartialSums", "Val", "InputBlock", "ConstBlock", "StateSlot", "Chain", "VecVal",
    "FnVal", "History", "Graph", "build", "is_acc", "operands",
]

INF = float("inf")

#: Ops that only relabel or move data (lowered by :meth:`_Builder._move`).
_MOVES = ("slice", "concat", "transpose", "reshape")
#: NNIR binary op -> (VecOp with the accumulator operand on the left, commutative).
_BINARY = {
    "add": (VecOp.ADD, True),
    "sub": (VecOp.SUB, False),
    "mul": (VecOp.MUL, True),
    "maximum": (VecOp.MAX, True),
    "minimum": (VecOp.MIN, True),
}


#: Functions whose value at a finite input may be infinite or NaN (overflow, a pole, a
#: negative argument): their operand's padding lanes are set to 1 (to 0 where 0 is safe).
_UNSAFE_AT = {Function.EXP: 0.0, Function.SOFTPLUS: 0.0, Function.SQRT: 0.0,
              Function.RECIP: 1.0, Function.RSQRT: 1.0, Function.LOG: 1.0}

_SEQ = itertools.count()


@dataclass(eq=False)
class Val:
    """One block value (B lanes).

    ``node`` is the id of the NNIR node it is attributed to; ``seq`` numbers values in
    creation order, which is a topological order (operands are created before users).
    """

    node: int

    def __post_init__(self) -> None:
        self.seq = next(_SEQ)


@dataclass(eq=False)
class InputBlock(Val):
    """Input beat ``beat`` (counted over all model inputs), in tensor RAM."""

    beat: int


@dataclass(eq=False)
class ConstBlock(Val):
    """A constant block (bf16 bit patterns ``bits``, shape [B]), in tensor RAM from load."""

    bits: np.ndarray


@dataclass(eq=False)
class StateSlot(Val):
    """The block of ``history`` from ``age`` inferences ago (1 = the previous one).

    ``init`` is its value before the first inference (bf16 bit patterns [B]; None: zeros).
    """

    history: History
    age: int
    init: np.ndarray | None = None


@dataclass(eq=False)
class Chain(Val):
    """Σ over ``terms`` of tile · block, accumulated in fp32 (``terms``: (tile id, Val)).

    ``unit`` groups chains that share weight tiles (same layer and output block) so that the
    placement can keep them on one core. ``with_next`` marks a partial of a cut sum whose
    chains are placed together and paired: the placement never separates it from the chain
    created after it (the next chain of the same sum).
    """

    terms: list[tuple[int, Val]]
    unit: tuple[int, ...]
    with_next: bool = False


@dataclass(eq=False)
class VecVal(Val):
    """``clamp(op(a, t), lo, hi)``: one ``VEC``; ``a`` is an accumulator value (None for
    ``PASS_T``), ``t`` any value read from tensor RAM (None for ``PASS_A``)."""

    op: VecOp
    a: Val | None
    t: Val | None
    lo: float = -INF
    hi: float = INF


@dataclass(eq=False)
class FnVal(Val):
    """``fn(x)``: an ``FN`` on the tensor-RAM block ``x``; the placement
    (:mod:`compiler._ops`) runs it into an accumulator, or into the tensor RAM of each core
    that reads it."""

    fn: Function
    x: Val


@dataclass(eq=False)
class History:
    """The previous ``depth`` values of block ``src`` (the window of streaming convolutions;
    for a recurrent state, depth 1 and ``src`` the block its ``state_write`` writes).

    ``slots[age]`` is the block from ``age`` inferences ago, ``1 <= age <= depth``. After
    this inference's reads, each slot takes the value of the next younger one and slot 1
    takes ``src``. ``src`` is None only while the builder has not reached the
    ``state_write`` of a recurrent state.
    """

    src: Val | None
    node: int
    slots: dict[int, StateSlot] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """Return the number of previous values kept."""
        return max(self.slots)


def is_acc(v: Val) -> bool:
    """Return whether ``v`` is computed into an accumulator (else it lives in tensor RAM)."""
    return isinstance(v, Chain | VecVal | FnVal)


@dataclass
class _Tensor:
    """The block values of one NNIR tensor: ``blocks[row][block]``; ``splat``: its last
    axis is 1 and every lane of each block holds the value (a reduction's result)."""

    shape: tuple[int, ...]
    blocks: list[list[Val]]
    splat: bool = False

    @property
    def channels(self) -> int:
        return self.shape[-1] if self.shape else 1


@dataclass
class Graph:
    """The block graph of a model (see the module docstring).

    Attributes
    ----------
    tiles : list of np.ndarray
        Distinct weight tiles (bf16 bit patterns [B, B]; row i feeds output lane i).
    inputs : list of InputBlock
        Every input beat, in beat order.
    outputs : list of Val
        The value of every output beat, in beat order.
    histories : list of History
        Streaming-convolution windows and recurrent states, each updated once per
        inference; no two share a source block.
    node_tiles : dict
        Nonzero weight tiles per NNIR node id (what the node costs in matrix cycles).
    concat_linears : int
        Linears of a concat read straight from the concat's operands (see :func:`build`).
    positions : dict
        ``id(val)`` -> (NNIR node id, row, block) of the tensor block it first appears as:
        a key that names the same block in every build of one model.
    pinned : list of Val
        Every value of ``positions``, kept alive so that no other value takes its id.
    cut_chains : dict
        Per NNIR node id, how many of its sums :class:`PartialSums` cut (in two or three).
    cut_roundings : dict
        Per NNIR node id, the most partial sums rounded to bf16 in one of its sums: 1 for a
        sum cut in two, 2 for one cut in three.
    """

    tiles: list[np.ndarray] = field(default_factory=list)
    inputs: list[InputBlock] = field(default_factory=list)
    outputs: list[Val] = field(default_factory=list)
    histories: list[History] = field(default_factory=list)
    node_tiles: dict[int, int] = field(default_factory=dict)
    concat_linears: int = 0
    positions: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    pinned: list[Val] = field(default_factory=list)
    cut_chains: dict[int, int] = field(default_factory=dict)
    cut_roundings: dict[int, int] = field(default_factory=dict)

    def live_values(self) -> list[Val]:
        """Return the values the outputs depend on, operands before users.

        A history is live when one of its slots is read, and then its source is too.
        """
        seen: dict[int, Val] = {}
        order: list[Val] = []

        def visit(root: Val) -> None:
            stack: list[tuple[Val, bool]] = [(root, False)]
            while stack:
                v, expanded = stack.pop()
                if expanded:
                    order.append(v)
                    continue
                if id(v) in seen:
                    continue
                seen[id(v)] = v
                stack.append((v, True))
                stack.extend((o, False) for o in reversed(operands(v)) if id(o) not in seen)

        for v in self.outputs:
            visit(v)
        return sorted(order, key=lambda v: v.seq)

    def fuse(self) -> None:
        """Fold each clamp-only ``VEC`` into the vector value it clamps, where that is legal.

        ``clamp(op(a, t), lo1, hi1)`` then clamped to ``[lo2, hi2]`` is one ``VEC`` with the
        bounds ``[max(lo), min(hi)]`` when that interval is not empty and nothing else uses
        the inner value.
        """
        uses: dict[int, int] = {}
        for v in self.live_values():
            for o in operands(v):
                uses[id(o)] = uses.get(id(o), 0) + 1
        for v in self.outputs:
            uses[id(v)] = uses.get(id(v), 0) + 1
        for v in self.live_values():
            if not (isinstance(v, VecVal) and v.op == VecOp.PASS_A):
                continue
            inner = v.a
            if not isinstance(inner, VecVal) or uses.get(id(inner)) != 1:
                continue
            lo, hi = max(inner.lo, v.lo), min(inner.hi, v.hi)
            if lo > hi:
                continue
            v.op, v.a, v.t, v.lo, v.hi = inner.op, inner.a, inner.t, lo, hi
            # The fused value takes the inner one's place: the node that did the work, and
            # its position in creation order (right after its operands, layer by layer).
            v.node, v.seq = inner.node, inner.seq


def _steps(v: Val) -> int:
    """Return the ``VEC`` and ``FN`` steps (an ``FN`` counted as two: about twice the
    latency) on the longest path to ``v`` since a chain or a tensor-RAM value."""
    if isinstance(v, FnVal):
        return 2 + _steps(v.x)
    if isinstance(v, VecVal):
        return 1 + max((_steps(x) for x in (v.a, v.t) if x is not None), default=0)
    return 0


def operands(v: Val) -> list[Val]:
    """Return the values ``v`` reads (a state slot reads its history's source)."""
    if isinstance(v, Chain):
        return [x for _, x in v.terms]
    if isinstance(v, VecVal):
        return [x for x in (v.a, v.t) if x is not None]
    if isinstance(v, FnVal):
        return [v.x]
    if isinstance(v, StateSlot):
        assert v.history.src is not None
        return [v.history.src]
    return []


@dataclass(frozen=True)
class PartialSums:
    """How :func:`build` cuts long chains in two (``docs/compiler.md`` §5a).

    Attributes
    ----------
    spacing : int
        Cycles between two terms of one chain (``mac_spacing``).
    lead : int
        Cycles by which the partial's chain must end before the other one: its ``VEC``
        to tensor RAM and the write landing on the other core.
    together : bool
        Keep both chains of an output block on one core (its tiles in one weight store;
        the partial's write is then local), else place them independently.
    ready : dict
        (node id, row, block) -> the cycle a block is expected in tensor RAM (a previous
        schedule's); a block not listed is taken as ready at cycle 0.
    paired : bool
        With ``together``, keep the two chains on one core also where the placement spreads
        a layer's rows over the cores (a layer of fewer output blocks than cores), which
        otherwise separates them like rows (:attr:`Chain.with_next`).
    pieces : int
        2, or 3 to also consider cutting a sum in three (:meth:`cuts`).
    """

    spacing: int
    lead: int
    together: bool = False
    ready: dict[tuple[int, int, int], int] = field(default_factory=dict)
    paired: bool = False
    pieces: int = 2

    def _end(self, ready: list[int]) -> int:
        """Return when a chain over terms ready at ``ready`` (sorted) issues its last."""
        end = -self.spacing
        for r in ready:
            end = max(end + self.spacing, r)
        return end

    def cuts(self, ready: list[int]) -> list[int]:
        """Return the sizes of the partials, earliest-ready terms first, for terms ready at
        ``ready`` (sorted): ``[]`` (one chain), ``[k]`` (:meth:`cut`) or, with ``pieces``
        3 and if expected to end sooner, ``[k1, k2]``: a first partial of ``k1`` terms,
        rounded to bf16 and added by the ``VEC`` of a second of ``k2`` terms, itself
        rounded and added by the rest's. Each partial must end ``lead`` cycles before the
        chain that adds it."""
        k = self.cut(ready)
        best = (max(self._end(ready[:k]) + self.lead, self._end(ready[k:])) if k
                else self._end(ready))
        sizes = [k] if k else []
        for k1 in range(1, len(ready) - 1 if self.pieces == 3 else 1):
            first = self._end(ready[:k1]) + 2 * self.lead
            for k2 in range(1, len(ready) - k1):
                end = max(first, self._end(ready[k1:k1 + k2]) + self.lead,
                          self._end(ready[k1 + k2:]))
                if end < best:
                    best, sizes = end, [k1, k2]
        return sizes

    def cut(self, ready: list[int]) -> int:
        """Return how many of the earliest terms (``ready`` sorted) the partial should take
        so that both chains end soonest; 0 if one chain is expected to be as fast."""
        best, cut = self._end(ready), 0
        for k in range(1, len(ready)):
            end = max(self._end(ready[:k]) + self.lead, self._end(ready[k:]))
            if end < best:
                best, cut = end, k
        return cut


def build(nnir: NNIR, block_size: int, split_concat: bool = False,
          partial_sums: PartialSums | None = None) -> Graph:
    """Return the fused block graph of ``nnir`` for block size ``block_size``.

    A ``linear`` of a last-axis ``concat`` (a recurrent cell's ``W [x, h]``) is one chain per
    output block over every operand's blocks; with ``split_concat``, one chain per operand
    instead, added by ``VEC`` s (the chains on ``h`` and the bias go to tensor RAM while the
    chain on ``x`` waits for the input): shorter chains, one ``VEC`` more.
    ``Graph.concat_linears`` counts the linears this applies to. With ``partial_sums``, a
    long sum (matrix layer, ``sum``/``mean``) may be cut in two chains
    (:meth:`_Builder._sum`, :class:`PartialSums`). A matrix layer whose input is a norm's
    ``x · s`` (``s`` a per-row splat) is computed as ``(W x) · s`` in every form.

    Raises
    ------
    ValueError
        For a node the back end cannot lower (non-streaming ``conv1d``); the message names it.
    """
    builder = _Builder(nnir, block_size, split_concat, partial_sums)
    graph = builder.run()
    graph.fuse()
    return graph


class _Builder:
    """Translates NNIR nodes, in order, to the block values of their outputs."""

    def __init__(self, nnir: NNIR, block_size: int, split_concat: bool = False,
                 partial_sums: PartialSums | None = None) -> None:
        self.nnir = nnir
        self.b = block_size
        self.split_concat = split_concat
        self.partial_sums = partial_sums
        self._splats: set[int] = set()  # ids of the blocks of splat tensors
        self.graph = Graph()
        self.tensors: dict[int, _Tensor] = {}
        self._tile_ids: dict[bytes, int] = {}
        self._consts: dict[bytes, ConstBlock] = {}
        self._loads: dict[int, VecVal] = {}
        self._histories: dict[int, History] = {}
        self._states: dict[int, list[list[StateSlot]]] = {}  # state key -> its slots
        self.node: Node | None = None

    # -- driver --------------------------------------------------------------------------

    def run(self) -> Graph:
        for node in self.nnir.nodes:
            self.node = node
            self.tensors[node.id] = self._lower(node)
            if self.tensors[node.id].splat:
                self._splats.update(id(v) for row in self.tensors[node.id].blocks for v in row)
            for r, row in enumerate(self.tensors[node.id].blocks):
                for i, v in enumerate(row):
                    if id(v) not in self.graph.positions:
                        self.graph.positions[id(v)] = (node.id, r, i)
                        self.graph.pinned.append(v)
        for out in self.nnir.outputs:
            for row in self.tensors[out].blocks:
                self.graph.outputs.extend(row)
        self.graph.histories = list(self._histories.values())
        return self.graph

    def _lower(self, node: Node) -> _Tensor:
        args = [self.tensors[i] for i in node.inputs]
        op = node.op
        if op == "input":
            return self._input(node)
        if op == "constant":
            return self._constant(node.attrs["value"], node.shape)
        if op == "linear":
            return self._linear(node, args[0])
        if op == "concat" and self._only_matrix_operand(node):
            return _Tensor(tuple(node.shape), [])
        if op == "stream_conv1d":
            return self._conv(node, args[0])
        if op == "conv1d":
            raise ValueError(
                f"node %{node.id} ({node.name!r}): a non-streaming conv1d cannot be lowered; "
                f"apply NNIR.streaming_transform(axis) first"
            )
        if op in _BINARY:
            return self._binary(node, args)
        if op == "fn":
            return self._fn(FUNCTIONS[node.attrs["function"]], args[0])
        if op in REDUCTIONS:
            return self._reduce(node, args[0])
        if op == "relu":
            return self._map(args[0], lambda v, c: self._clamp(v, 0.0, INF))
        if op == "clamp":
            lo = -INF if node.attrs["min"] is None else float(node.attrs["min"])
            hi = INF if node.attrs["max"] is None else float(node.attrs["max"])
            return self._map(args[0], lambda v, c: self._clamp(v, lo, hi))
        if op == "neg":
            return self._map(args[0], lambda v, c: self._vec(VecOp.MUL, v, self._scalar(-1, c)))
        if op in _MOVES:
            return self._move(node, args)
        if op == "output":
            return args[0]
        if op == "state":
            return self._state(node)
        if op == "state_write":
            return self._state_write(node, args[0])
        if op == "scan":
            raise ValueError(
                f"node %{node.id} ({node.name!r}): a recurrence over a whole sequence cannot be "
                f"lowered; apply NNIR.streaming_transform(axis) first"
            )
        raise ValueError(f"node %{node.id} ({node.name!r}): op {op!r} cannot be lowered")

    # -- values --------------------------------------------------------------------------

    @property
    def _id(self) -> int:
        assert self.node is not None
        return self.node.id

    def _tile(self, values: np.ndarray) -> int | None:
        """Return the id of a weight tile (float [B, B]), or None if it is all zeros."""
        bits = f32_to_bf16_bits(values)
        return self._tile_bits(bits) if (bits & 0x7FFF).any() else None

    def _tile_bits(self, bits: np.ndarray) -> int:
        """Return the id of a weight tile given as bf16 bit patterns [B, B]."""
        key = bits.tobytes()
        if key not in self._tile_ids:
            self._tile_ids[key] = len(self.graph.tiles)
            self.graph.tiles.append(bits)
        return self._tile_ids[key]

    def _tiles(self, w: np.ndarray) -> list[list[int | None]]:
        """Return the tile ids of weight ``w`` [Out, In] by (output block, input block),
        None for an all-zero tile. The bf16 conversion and the zero test are done for the
        whole matrix at once (a per-tile loop dominated the compile time of wide layers)."""
        b = self.b
        out, in_ = w.shape
        padded = np.zeros((-(-out // b) * b, -(-in_ // b) * b), np.float32)
        padded[:out, :in_] = w
        bits = f32_to_bf16_bits(padded).reshape(-1, b, padded.shape[1] // b, b)
        grid = bits.transpose(0, 2, 1, 3)
        nonzero = (grid & 0x7FFF).any(axis=(2, 3))
        return [[self._tile_bits(np.ascontiguousarray(grid[o, i])) if nonzero[o, i] else None
                 for i in range(grid.shape[1])] for o in range(grid.shape[0])]

    def _diagonal_tiles(self, diag: np.ndarray) -> list[list[int | None]]:
        """Return the tile ids of the diagonal weight ``diag(diag)``: only the tiles on the
        block diagonal can be nonzero, so the dense matrix is never built."""
        b = self.b
        n = -(-len(diag) // b)
        padded = np.zeros(n * b, np.float32)
        padded[:len(diag)] = diag
        tiles: list[list[int | None]] = [[None] * n for _ in range(n)]
        for o in range(n):
            tiles[o][o] = self._tile(np.diag(padded[o * b:(o + 1) * b]))
        return tiles

    def _const(self, values: np.ndarray) -> ConstBlock:
        """Return the constant block of ``values`` (≤ B floats; the rest of the lanes 0)."""
        block = np.zeros(self.b, np.float32)
        block[: len(values)] = values
        bits = f32_to_bf16_bits(block)
        key = bits.tobytes()
        if key not in self._consts:
            self._consts[key] = ConstBlock(self._id, bits)
        return self._consts[key]

    def _scalar(self, value: float, lanes: int) -> ConstBlock:
        """Return a block of ``value`` in the first ``lanes`` lanes."""
        return self._const(np.full(lanes, value, np.float32))

    def _acc(self, v: Val) -> Val:
        """Return ``v`` as an accumulator value (a ``PASS_T`` load for tensor-RAM values)."""
        if is_acc(v):
            return v
        if id(v) not in self._loads:
            self._loads[id(v)] = VecVal(self._id, VecOp.PASS_T, None, v)
        return self._loads[id(v)]

    def _vec(self, op: VecOp, a: Val, t: Val) -> VecVal:
        return VecVal(self._id, op, self._acc(a), t)

    def _clamp(self, v: Val, lo: float, hi: float) -> Val:
        if lo == -INF and hi == INF:
            return v
        return VecVal(self._id, VecOp.PASS_A, self._acc(v), None, lo, hi)

    def _lanes(self, channels: int, block: int) -> int:
        """Return the number of data lanes of block ``block`` of a row of ``channels``."""
        return min(self.b, channels - block * self.b)

    def _map(self, x: _Tensor, fn: Callable[[Val, int], Val]) -> _Tensor:
        """Apply ``fn(value, data lanes of its block)`` to every block of ``x`` (all B lanes
        are data in a splat, which the result stays)."""
        c = self.b if x.splat else x.channels
        blocks = [[fn(v, self._lanes(c, k)) for k, v in enumerate(row)] for row in x.blocks]
        return _Tensor(x.shape, blocks, x.splat)

    def _pad_lanes(self, v: Val, lanes: int, value: float) -> Val:
        """Return ``v`` with its padding lanes (from ``lanes`` on) set to ``value`` and its
        data lanes unchanged, bit for bit (``x · 1`` and ``x + (−0)`` are exact)."""
        data = np.arange(self.b) < lanes
        if value == -INF:  # a finite padding lane + (−inf) is −inf
            return self._vec(VecOp.ADD, v, self._const(np.where(data, -0.0, -INF)))
        v = self._vec(VecOp.MUL, v, self._const(data.astype(np.float32)))
        if value == 0.0:
            return v
        return self._vec(VecOp.ADD, v, self._const(np.where(data, -0.0, value)))

    def _fn(self, fn: Function, x: _Tensor) -> _Tensor:
        def apply(v: Val, lanes: int) -> Val:
            if fn in _UNSAFE_AT and lanes < self.b:
                v = self._pad_lanes(v, lanes, _UNSAFE_AT[fn])
            return FnVal(self._id, fn, v)

        return self._map(x, apply)

    def _ones(self, lanes: int, scale: float, column: bool = False) -> int:
        """Return the tile summing the first ``lanes`` lanes of a block, times ``scale``,
        into every lane (``column``: lane 0 only, i.e. broadcast lane 0)."""
        tile = np.zeros((self.b, self.b), np.float32)
        tile[:, :1 if column else lanes] = scale
        tid = self._tile(tile)
        assert tid is not None
        return tid

    def _reduce(self, node: Node, x: _Tensor) -> _Tensor:
        """``sum``/``mean``: a chain of (scaled) ones tiles per row; ``amax``: ``VEC MAX``
        across the row's blocks (padding lanes −inf), then ``FN MAX_LANES``."""
        if node.attrs["axis"] != len(x.shape) - 1:
            raise ValueError(
                f"node %{node.id} ({node.name!r}): {node.op} over axis {node.attrs['axis']} of "
                f"{list(x.shape)}: the machine reduces over the last (data) axis only (in a "
                f"streaming model, the axis that is last once time is removed)")
        c = self.b if x.splat else x.channels
        n = x.channels
        blocks = []
        for row in x.blocks:
            if node.op == "amax":
                row = [v if self._lanes(c, k) == self.b else
                       self._pad_lanes(v, self._lanes(c, k), -INF) for k, v in enumerate(row)]
                m = row[0]
                for v in row[1:]:
                    m = self._vec(VecOp.MAX, m, v)
                blocks.append([FnVal(self._id, Function.MAX_LANES, m)])
                continue
            scale = 1.0 if node.op == "sum" else 1.0 / n
            terms = [(self._ones(self._lanes(c, k), scale, x.splat), v)
                     for k, v in enumerate(row)]
            self.graph.node_tiles[self._id] = self.graph.node_tiles.get(self._id, 0) + len(terms)
            blocks.append([self._sum(terms, 0, None)])
        return _Tensor(tuple(node.shape), blocks, splat=True)

    def _splat(self, x: _Tensor) -> _Tensor:
        """Return a size-1 last axis as splat blocks (lane 0 broadcast by a tile)."""
        if x.splat:
            return x
        tid = self._ones(1, 1.0, column=True)
        blocks = [[Chain(self._id, [(tid, row[0])], (self._id, 0))] for row in x.blocks]
        self.graph.node_tiles[self._id] = self.graph.node_tiles.get(self._id, 0) + len(blocks)
        return _Tensor(x.shape, blocks, splat=True)

    def _blocked(self, values: np.ndarray) -> np.ndarray:
        """Return [rows, C] values as [rows, blocks, B], zero padded."""
        rows, c = values.shape
        nb = -(-c // self.b)
        out = np.zeros((rows, nb * self.b), np.float32)
        out[:, :c] = values
        return out.reshape(rows, nb, self.b)

    # -- ops -----------------------------------------------------------------------------

    def _input(self, node: Node) -> _Tensor:
        shape = tuple(node.shape)
        rows, c = _rows(shape), (shape[-1] if shape else 1)
        nb = -(-c // self.b)
        blocks = []
        for _ in range(rows):
            row = []
            for _ in range(nb):
                block = InputBlock(node.id, len(self.graph.inputs))
                self.graph.inputs.append(block)
                row.append(block)
            blocks.append(row)
        return _Tensor(shape, blocks)

    def _constant(self, value: np.ndarray, shape: tuple[int, ...]) -> _Tensor:
        values = np.broadcast_to(np.asarray(value, np.float32), shape)
        c = shape[-1] if shape else 1
        blocked = self._blocked(values.reshape(_rows(shape), c))
        return _Tensor(shape, [[self._const(b) for b in row] for row in blocked])

    def _matrix(self, x: _Tensor, taps: list[tuple[list[list[int | None]], list[list[Val]]]],
                bias: np.ndarray | None, out_channels: int) -> list[list[Val]]:
        """Return the blocks of Σ_taps W · x_tap + bias, one chain per (row, output block).

        ``taps`` pairs a weight's tile ids (:meth:`_tiles`: [output block][input block]) with
        the input blocks it multiplies ([row][block]).
        """
        b = self.b
        nbo = -(-out_channels // b)
        tiled = [tiles for tiles, _ in taps]
        self.graph.node_tiles[self._id] = sum(
            t is not None for tiles in tiled for row in tiles for t in row)
        bias_blocks = None if bias is None else self._blocked(bias[None, :])[0]
        blocks = []
        for r in range(len(x.blocks)):
            row = []
            for o in range(nbo):
                terms = [(t, xs[r][i]) for tiles, (_, xs) in zip(tiled, taps, strict=True)
                         for i, t in enumerate(tiles[o]) if t is not None]
                if not terms:
                    # An all-zero weight block row: one explicit zero tile keeps the chain.
                    zero = np.zeros((b, b), np.uint16)
                    key = zero.tobytes()
                    if key not in self._tile_ids:
                        self._tile_ids[key] = len(self.graph.tiles)
                        self.graph.tiles.append(zero)
                    terms = [(self._tile_ids[key], taps[-1][1][r][0])]
                bias_block = (self._const(bias_blocks[o]) if bias_blocks is not None
                              and (bias_blocks[o] != 0).any() else None)
                row.append(self._sum(terms, o, bias_block))
            blocks.append(row)
        return blocks

    def _sum(self, terms: list[tuple[int, Val]], o: int, bias: Val | None) -> Val:
        """Return Σ ``terms`` (+ ``bias``) for output block ``o``: one chain, or with
        ``partial_sums`` a chain of its later terms whose ``VEC`` adds, as its tensor-RAM
        operand, the partial sum of the earlier ones (and the bias) rounded to bf16 — or
        of a middle part of them whose ``VEC`` adds, likewise, the earliest ones'.

        The terms are ranked by when their blocks are expected in tensor RAM
        (:class:`PartialSums`); the partials take the earliest of them, in the sizes
        :meth:`PartialSums.cuts` chooses, and the chain is cut only if that is expected to
        finish sooner.
        """
        plan = self.partial_sums
        sizes: list[int] = []
        if plan is not None:
            ready = [plan.ready.get(self.graph.positions.get(id(x), (-1, 0, 0)), 0)
                     if not isinstance(x, StateSlot) else 0 for _, x in terms]
            order = sorted(range(len(terms)), key=lambda i: ready[i])
            sizes = plan.cuts([ready[i] for i in order])
        if not sizes:
            v: Val = Chain(self._id, terms, (self._id, o))
            return v if bias is None else VecVal(self._id, VecOp.ADD, v, bias)
        assert plan is not None
        self.graph.cut_chains[self._id] = self.graph.cut_chains.get(self._id, 0) + 1
        self.graph.cut_roundings[self._id] = max(self.graph.cut_roundings.get(self._id, 0),
                                                 len(sizes))
        part: Val | None = bias
        start = 0
        for piece, k in enumerate(sizes, 1):
            chain = Chain(self._id, [terms[i] for i in sorted(order[start:start + k])],
                          (self._id, o) if plan.together else (self._id, o, piece),
                          plan.together and plan.paired)
            part = chain if part is None else VecVal(self._id, VecOp.ADD, chain, part)
            start += k
        rest = Chain(self._id, [terms[i] for i in sorted(order[start:])],
                     (self._id, o) if plan.together else (self._id, o, 0))
        return VecVal(self._id, VecOp.ADD, rest, part)

    def _row_scale(self, row: list[Val]) -> tuple[Val, list[Val]] | None:
        """Return ``(s, xs)`` if every block of ``row`` is ``xs[i] · s`` (unclamped) with
        one splat ``s`` (a per-row scalar such as a norm's ``rsqrt``), else None."""
        common: Val | None = None
        xs = []
        for v in row:
            if not (isinstance(v, VecVal) and v.op == VecOp.MUL and v.lo == -INF
                    and v.hi == INF and v.a is not None and v.t is not None):
                return None
            s = next((o for o in (v.a, v.t) if id(o) in self._splats), None)
            other = v.t if s is v.a else v.a
            if s is None or other is s or (common is not None and s is not common):
                return None
            common = s
            xs.append(other)
        return None if common is None else (common, xs)

    def _scaled_matrix(self, x: _Tensor, scales: list[tuple[Val, list[Val]] | None],
                       tiles: list[list[int | None]],
                       history: list[tuple[list[list[int | None]], list[list[Val]]]],
                       bias: np.ndarray | None, out_channels: int) -> list[list[Val]]:
        """``W (x · s) + H + b`` for a per-row scalar ``s`` (a norm's ``rsqrt``), as
        ``(W x) · s + H + b``: the chains of ``W x`` run while ``s`` is computed, then two
        ``VEC`` s finish each block. ``H`` is a streaming convolution's sum over its
        ``history`` taps (inputs of earlier inferences, already scaled), computed with the
        bias early and added from tensor RAM, rounded to bf16 like a cut sum's partial."""
        rows = [xs for _, xs in scales]  # type: ignore[misc]
        sums = self._matrix(_Tensor(x.shape, rows), [(tiles, rows)], None, out_channels)
        roundings = self.graph.cut_roundings.pop(self._id, 0)
        count = self.graph.node_tiles[self._id]
        rest = self._matrix(x, history, bias, out_channels) if history else None
        # A block's roundings of partial sums: its own sum's, H's own and H's.
        roundings += self.graph.cut_roundings.pop(self._id, 0) + (rest is not None)
        if roundings:
            self.graph.cut_roundings[self._id] = roundings
        self.graph.node_tiles[self._id] += count if history else 0
        bias_blocks = None if bias is None else self._blocked(bias[None, :])[0]
        blocks = []
        for r, ((s, _), row) in enumerate(zip(scales, sums, strict=True)):  # type: ignore[misc]
            out: list[Val] = []
            for o, v in enumerate(row):
                v = VecVal(self._id, VecOp.MUL, v, s)
                if rest is not None:
                    v = VecVal(self._id, VecOp.ADD, v, rest[r][o])
                    self.graph.cut_chains[self._id] = self.graph.cut_chains.get(self._id, 0) + 1
                elif bias_blocks is not None and (bias_blocks[o] != 0).any():
                    v = VecVal(self._id, VecOp.ADD, v, self._const(bias_blocks[o]))
                out.append(v)
            blocks.append(out)
        return blocks

    def _only_matrix_operand(self, node: Node) -> bool:
        """Return whether ``node`` is a concat along the last axis whose only users are
        ``linear`` nodes (which then read its operands' blocks directly)."""
        users = self.nnir.consumers(node.id)
        return (node.attrs["axis"] == len(node.shape) - 1 and bool(users)
                and all(u.op == "linear" for u in users))

    def _linear(self, node: Node, x: _Tensor) -> _Tensor:
        """A Linear; of a last-axis concat (``[x, h]`` of a recurrent cell), one chain per
        output block over every operand's blocks: the weight's column ranges are separate
        taps, so no block of the concat is ever built."""
        w = node.attrs["weight"]
        source = self.nnir.node(node.inputs[0])
        if source.op != "concat" or x.blocks:
            scales = [self._row_scale(row) for row in x.blocks]
            if all(scales) and x.blocks:
                return _Tensor(tuple(node.shape), self._scaled_matrix(
                    x, scales, self._tiles(w), [], node.attrs["bias"], w.shape[0]))
            blocks = self._matrix(x, [(self._tiles(w), x.blocks)], node.attrs["bias"],
                                  w.shape[0])
            return _Tensor(tuple(node.shape), blocks)
        self.graph.concat_linears += 1
        taps, start = [], 0
        for i in source.inputs:
            part = self.tensors[i]
            taps.append((self._tiles(w[:, start:start + part.channels]), part.blocks))
            start += part.channels
        first = self.tensors[source.inputs[0]]
        if not self.split_concat:
            blocks = self._matrix(first, taps, node.attrs["bias"], w.shape[0])
            return _Tensor(tuple(node.shape), blocks)
        # One chain per operand; the last carries the bias; all but the first are summed
        # into the tensor-RAM operand of the VEC that adds the first's accumulator.
        parts = [self._matrix(first, [tap], node.attrs["bias"] if k == len(taps) - 1 else None,
                              w.shape[0]) for k, tap in enumerate(taps)]
        self.graph.node_tiles[self._id] = sum(t is not None for tiles, _ in taps
                                              for row in tiles for t in row)
        blocks = []
        for r, row in enumerate(parts[0]):
            out = []
            for o, v in enumerate(row):
                rest = parts[-1][r][o]
                for part in reversed(parts[1:-1]):
                    rest = VecVal(self._id, VecOp.ADD, part[r][o], rest)
                out.append(VecVal(self._id, VecOp.ADD, v, rest))
            blocks.append(out)
        return _Tensor(tuple(node.shape), blocks)

    def _state(self, node: Node) -> _Tensor:
        """A recurrent state: one depth-1 history per block, its source set by the
        ``state_write`` of the same key."""
        init = self._blocked(np.asarray(node.attrs["init"], np.float32).reshape(
            _rows(node.shape), node.shape[-1] if node.shape else 1))
        slots = []
        for row in init:
            slot_row = []
            for block in row:
                bits = f32_to_bf16_bits(block) if block.any() else None
                history = History(None, self._id)
                history.slots[1] = StateSlot(self._id, history, 1, bits)
                slot_row.append(history.slots[1])
            slots.append(slot_row)
        self._states[node.attrs["key"]] = slots
        return _Tensor(tuple(node.shape), slots)

    def _state_write(self, node: Node, x: _Tensor) -> _Tensor:
        """Make each block of ``x`` the source of its state block's history. A block that
        already has a history (another state's, a convolution window's) is copied first, so
        that each history has a source of its own."""
        for slot_row, row in zip(self._states[node.attrs["key"]], x.blocks, strict=True):
            for slot, v in zip(slot_row, row, strict=True):
                if id(v) in self._histories:
                    v = (VecVal(self._id, VecOp.PASS_A, v, None) if is_acc(v)
                         else VecVal(self._id, VecOp.PASS_T, None, v))
                slot.history.src = v
                self._histories[id(v)] = slot.history
        return x

    def _conv(self, node: Node, x: _Tensor) -> _Tensor:
        w, k = node.attrs["weight"], node.attrs["kernel_size"]
        cout = w.shape[0]
        depthwise = node.attrs["groups"] != 1
        taps = []
        for j in range(k):
            age = k - 1 - j
            xs = x.blocks if age == 0 else [[self._slot(v, age) for v in row]
                                             for row in x.blocks]
            # Depthwise: a diagonal weight per tap; only its diagonal tiles can be nonzero.
            tiles = self._diagonal_tiles(w[:, 0, j]) if depthwise else self._tiles(w[:, :, j])
            taps.append((tiles, xs))
        scales = [self._row_scale(row) for row in x.blocks]
        if all(scales) and x.blocks:
            # The current tap on the unscaled input; the window holds the scaled blocks.
            blocks = self._scaled_matrix(x, scales, taps[-1][0], taps[:-1],
                                         node.attrs["bias"], cout)
            return _Tensor(tuple(node.shape), blocks)
        blocks = self._matrix(x, taps, node.attrs["bias"], cout)
        return _Tensor(tuple(node.shape), blocks)

    def _slot(self, src: Val, age: int) -> StateSlot:
        if id(src) not in self._histories:
            self._histories[id(src)] = History(src, self._id)
        history = self._histories[id(src)]
        if age not in history.slots:
            history.slots[age] = StateSlot(self._id, history, age)
            for younger in range(1, age):  # the shift passes through every younger slot
                if younger not in history.slots:
                    history.slots[younger] = StateSlot(self._id, history, younger)
        return history.slots[age]

    def _binary(self, node: Node, args: list[_Tensor]) -> _Tensor:
        op, commutative = _BINARY[node.op]
        if len(args) == 1:
            return self._scalar_op(node, args[0])
        shape = tuple(node.shape)
        x, y = (self._constant(self.nnir.node(i).attrs["value"], shape)
                if self.nnir.node(i).op == "constant" else t
                for i, t in zip(node.inputs, args, strict=True))
        x, y = self._broadcast(x, shape), self._broadcast(y, shape)
        blocks = []
        for row_x, row_y in zip(x.blocks, y.blocks, strict=True):
            row = []
            for a, t in zip(row_x, row_y, strict=True):
                if (is_acc(t) and not is_acc(a)) or (
                        commutative and isinstance(a, FnVal) and isinstance(t, FnVal)
                        and _steps(t) > _steps(a)):
                    # Keep an accumulator value on the accumulator side: no load needed.
                    # a - t with the operands swapped is RSUB (t - a). Of two function
                    # values (bf16 either way, so the result is the same), the later one
                    # goes on the accumulator side: its FN then runs where its operand is,
                    # and the earlier one's operand makes the hop to this core.
                    row.append(self._vec(op if commutative else VecOp.RSUB, t, a))
                else:
                    row.append(self._vec(op, a, t))
            blocks.append(row)
        return _Tensor(shape, blocks, x.splat and y.splat)

    def _broadcast(self, t: _Tensor, shape: tuple[int, ...]) -> _Tensor:
        """Return ``t`` broadcast to ``shape`` (same rank): rows by reusing their blocks, a
        last axis of 1 by its splat, which serves every block of the row."""
        if t.shape == shape:
            return t
        nb = -(-shape[-1] // self.b)
        lanes = t.shape[-1] != shape[-1]
        if lanes:
            t = self._splat(t)
        rows = np.arange(_rows(t.shape)).reshape(t.shape[:-1])
        rows = np.broadcast_to(rows, shape[:-1]).reshape(-1)
        blocks = [t.blocks[r] * nb if lanes else t.blocks[r] for r in rows]
        return _Tensor(shape, blocks, t.splat and shape[-1] == 1)

    def _scalar_op(self, node: Node, x: _Tensor) -> _Tensor:
        s, reverse = float(node.attrs["scalar"]), bool(node.attrs["reverse"])
        if node.op == "maximum":
            return self._map(x, lambda v, c: self._clamp(v, s, INF))
        if node.op == "minimum":
            return self._map(x, lambda v, c: self._clamp(v, -INF, s))
        op = {"add": VecOp.ADD, "mul": VecOp.MUL,
              "sub": VecOp.RSUB if reverse else VecOp.SUB}[node.op]
        return self._map(x, lambda v, c: self._vec(op, v, self._scalar(s, c)))

    def _move(self, node: Node, args: list[_Tensor]) -> _Tensor:
        """Lower a relabelling op: block for block where aligned, else selection tiles."""
        b = self.b
        # Each element's code says where it comes from: operand index and flat position.
        stride = max(math.prod(t.shape) for t in args)
        codes = [k * stride + np.arange(math.prod(t.shape), dtype=np.int64).reshape(t.shape)
                 for k, t in enumerate(args)]
        shape = tuple(node.shape)
        c = shape[-1] if shape else 1
        out = np.asarray(evaluate(node, codes)).reshape(_rows(shape), c)
        node_tiles = 0
        blocks = []
        for r in range(out.shape[0]):
            row = []
            for o in range(-(-c // b)):
                src = out[r, o * b: (o + 1) * b]
                k, flat = src // stride, src % stride
                ck = np.array([args[int(i)].channels for i in k])
                s_row, s_col = flat // ck, flat % ck
                s_blk, s_lane = s_col // b, s_col % b
                first = (int(k[0]), int(s_row[0]), int(s_blk[0]))
                if ((k == first[0]).all() and (s_row == first[1]).all()
                        and (s_blk == first[2]).all()
                        and (s_lane == np.arange(len(src))).all()):
                    row.append(args[first[0]].blocks[first[1]][first[2]])
                    continue
                groups: dict[tuple[int, int, int], np.ndarray] = {}
                for lane in range(len(src)):
                    key = (int(k[lane]), int(s_row[lane]), int(s_blk[lane]))
                    tile = groups.setdefault(key, np.zeros((b, b), np.float32))
                    tile[lane, s_lane[lane]] = 1.0
                terms = []
                for (ki, ri, bi), tile in groups.items():
                    tid = self._tile(tile)
                    assert tid is not None
                    terms.append((tid, args[ki].blocks[ri][bi]))
                node_tiles += len(terms)
                row.append(Chain(self._id, terms, (self._id, o)))
            blocks.append(row)
        if node_tiles:
            self.graph.node_tiles[self._id] = node_tiles
        return _Tensor(shape, blocks)


def _rows(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1]) if shape else 1
