"""Placement and micro-operations: the block graph as MAC and VEC operations on cores.

:func:`generate` decides which core computes each block value and turns every value into
the instructions that compute it (not yet scheduled), with the tensor-RAM buffers and
accumulators they use and the timing constraints between them:

* a chain runs on the core its layer's placement gives it (output blocks balanced over the
  cores by tile count, weight-store capacity permitting); a vector value runs where its
  accumulator operand is; every block written to tensor RAM goes, in one ``VEC``, to every
  core that reads it (the buffer's ``mask``), at the same address on all of them;
* ``preds`` of an operation are (operation, latency) pairs meaning ``issue >= pred issue +
  latency``: read after write (the write lands, then the read may issue a cycle later), the
  write-after-read ordering of the streaming window update, and the order of output beats;
* a streaming window (:class:`compiler._graph.History`) is shifted after its reads by
  ``VEC PASS_T`` copies multicast to its readers; the youngest slot is the source block's
  own buffer when a ``VEC`` produces it (the producer then writes it after the old value's
  reads), or a copy of it for an input or constant block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler._graph import (
    Chain,
    ConstBlock,
    Graph,
    History,
    InputBlock,
    StateSlot,
    Val,
    VecVal,
    is_acc,
)
from isa.config import Config
from isa.instructions import Dest
from isa.numerics import VecOp
from isa.timing import INPUT_WRITE, VEC_LOCAL_WRITE, VEC_OUTPUT, VEC_REMOTE_WRITE, mac_acc_write

__all__ = ["Buf", "VAcc", "Op", "OpGraph", "generate"]


@dataclass(eq=False)
class Buf:
    """A tensor-RAM block, at address ``addr`` on every core of ``mask``.

    ``kind`` is ``"input"`` (written by input beat ``beat``), ``"const"`` (``bits`` loaded with
    the program), ``"state"`` (persists between inferences, zero at load) or ``"act"``
    (written once per inference by ``writer``).
    """

    kind: str
    mask: set[int] = field(default_factory=set)
    bits: np.ndarray | None = None
    beat: int = -1
    writer: Op | None = None
    addr: int = -1


@dataclass(eq=False)
class VAcc:
    """A value in an accumulator of ``core``: written by ``writers``, read by ``readers``.

    ``phys`` is the accumulator address, assigned after scheduling.
    """

    core: int
    writers: list[Op] = field(default_factory=list)
    readers: list[Op] = field(default_factory=list)
    phys: int = -1


@dataclass(eq=False)
class Op:
    """One ``MAC`` or ``VEC`` instruction of ``core``, before scheduling.

    A ``MAC`` (``vop`` None) accumulates tile ``tile`` (an index of ``Graph.tiles``) times
    ``tram`` into ``acc``. A ``VEC``
    computes ``clamp(vop(acc, tram), lo, hi)`` into ``dest``: accumulator ``dacc``, buffer
    ``dbuf`` (on all its cores) or output beat ``out``. ``cycle`` is the issue cycle once
    scheduled; ``accumulate`` is cleared on the first ``MAC`` of each chain.
    """

    index: int
    core: int
    node: int
    vop: VecOp | None = None
    acc: VAcc | None = None
    tram: Buf | None = None
    tile: int = -1
    lo: float = -np.inf
    hi: float = np.inf
    dest: Dest | None = None
    dacc: VAcc | None = None
    dbuf: Buf | None = None
    out: int = -1
    preds: list[tuple[Op, int]] = field(default_factory=list)
    release: int = 0
    cycle: int = -1
    accumulate: int = 1

    @property
    def is_mac(self) -> bool:
        """Return whether this is a ``MAC``."""
        return self.vop is None


@dataclass
class OpGraph:
    """The operations of a model and what they use.

    Attributes
    ----------
    ops : list of Op
        In creation order, which is a priority tie-break (earlier layers first).
    bufs : list of Buf
    vaccs : list of VAcc
    inputs : list of Buf
        The buffer of every input beat, in beat order.
    """

    ops: list[Op]
    bufs: list[Buf]
    vaccs: list[VAcc]
    inputs: list[Buf]


def write_latency(op: Op, core: int, config: Config) -> int:
    """Return the cycles from ``op``'s issue to its write landing on ``core``."""
    if op.is_mac:
        return mac_acc_write(config)
    if op.dest == Dest.OUTPUT:
        return VEC_OUTPUT
    return VEC_LOCAL_WRITE if core == op.core else VEC_REMOTE_WRITE


def generate(graph: Graph, config: Config) -> OpGraph:
    """Place the live values of ``graph`` on cores and return their operations."""
    return _Generator(graph, config).run()


class _Generator:
    def __init__(self, graph: Graph, config: Config) -> None:
        self.graph = graph
        self.config = config
        self.ops: list[Op] = []
        self.bufs: list[Buf] = []
        self.vaccs: list[VAcc] = []
        self.load = [0] * config.num_cores  # operations per core, to balance VEC placement
        self.core_of: dict[int, int] = {}  # id(val) -> core computing it
        self.buf_of: dict[int, Buf] = {}  # id(val) -> its tensor-RAM buffer
        self.vacc_of: dict[int, VAcc] = {}  # id(val) -> its accumulator
        self.old_readers: dict[int, list[Op]] = {}  # id(buf) -> reads of the previous value
        self.slot_buf: dict[int, Buf] = {}  # id(StateSlot) -> buffer

    def run(self) -> OpGraph:
        live = self.graph.live_values()
        live_ids = {id(v) for v in live}
        self.histories = {id(h.src): h for h in self.graph.histories
                          if any(id(s) in live_ids for s in h.slots.values())}
        self.need_tram: set[int] = set(self.histories)
        self.need_acc: set[int] = set()
        for v in live:
            if isinstance(v, Chain):
                self.need_tram.update(id(x) for _, x in v.terms)
            elif isinstance(v, VecVal):
                if v.a is not None:
                    self.need_acc.add(id(v.a))
                if v.t is not None:
                    self.need_tram.add(id(v.t))
        self.out_beats: dict[int, list[int]] = {}
        for k, v in enumerate(self.graph.outputs):
            self.out_beats.setdefault(id(v), []).append(k)
        self._place_chains([v for v in live if isinstance(v, Chain)])
        inputs = []
        for block in self.graph.inputs:
            buf = self._new_buf("input", beat=block.beat)
            self.buf_of[id(block)] = buf
            inputs.append(buf)
        out_ops: dict[int, Op] = {}
        for v in live:
            for k, op in self._emit(v):
                out_ops[k] = op
        for h in self.histories.values():
            self._shift(h)
        for k in range(1, len(out_ops)):
            out_ops[k].preds.append((out_ops[k - 1], 1))
        for buf in self.bufs:
            # A block nobody reads (an unused input; a window slot whose taps are all zero)
            # still needs somewhere to land.
            if not buf.mask:
                buf.mask.add(buf.writer.core if buf.writer is not None else 0)
        return OpGraph(self.ops, self.bufs, self.vaccs, inputs)

    # -- placement -----------------------------------------------------------------------

    def _place_chains(self, chains: list[Chain]) -> None:
        """Spread each layer's chains over the cores, balancing MACs, within weight stores.

        Chains of one unit (layer and output block) share their tiles and go to one core,
        unless the layer has fewer units than cores and several rows, when rows are split.
        """
        n = self.config.num_cores
        depth = self.config.weight_store_depth
        tiles_on: list[set[int]] = [set() for _ in range(n)]
        total = [0] * n
        layers: dict[int, dict[tuple[int, int], list[Chain]]] = {}
        for ch in chains:
            layers.setdefault(ch.node, {}).setdefault(ch.unit, []).append(ch)
        for units in layers.values():
            groups = list(units.values())
            if len(groups) < n:
                split = -(-n // len(groups))
                groups = [g[i::split] for g in groups for i in range(min(split, len(g)))]
            groups.sort(key=lambda g: -sum(len(c.terms) for c in g))
            layer = [0] * n
            for group in groups:
                macs = sum(len(c.terms) for c in group)
                tiles = {t for c in group for t, _ in c.terms}
                fits = [c for c in range(n) if len(tiles_on[c] | tiles) <= depth]
                core = min(fits or range(n), key=lambda c: (layer[c] + macs, total[c], c))
                layer[core] += macs
                total[core] += macs
                tiles_on[core] |= tiles
                for ch in group:
                    self.core_of[id(ch)] = core

    def _least_loaded(self) -> int:
        return min(range(self.config.num_cores), key=lambda c: (self.load[c], c))

    # -- operations ----------------------------------------------------------------------

    def _new_buf(self, kind: str, **fields: Any) -> Buf:
        buf = Buf(kind, **fields)
        self.bufs.append(buf)
        return buf

    def _new_op(self, core: int, node: int, **fields: Any) -> Op:
        op = Op(len(self.ops), core, node, **fields)
        self.ops.append(op)
        self.load[core] += 1
        return op

    def _read_buf(self, op: Op, buf: Buf, old: bool = False) -> None:
        """Record that ``op`` reads ``buf`` (its previous-inference value if ``old``)."""
        buf.mask.add(op.core)
        op.tram = buf
        if old:
            self.old_readers.setdefault(id(buf), []).append(op)
        elif buf.kind == "input":
            op.release = max(op.release, buf.beat + INPUT_WRITE + 1)
        elif buf.writer is not None:
            op.preds.append((buf.writer, write_latency(buf.writer, op.core, self.config) + 1))

    def _read_val(self, op: Op, v: Val) -> None:
        if isinstance(v, StateSlot):
            self._read_buf(op, self._slot(v), old=True)
        else:
            self._read_buf(op, self.buf_of[id(v)])

    def _read_acc(self, op: Op, vacc: VAcc) -> None:
        op.acc = vacc
        vacc.readers.append(op)
        op.preds.extend((w, write_latency(w, op.core, self.config) + 1) for w in vacc.writers)

    def _slot(self, slot: StateSlot) -> Buf:
        if id(slot) not in self.slot_buf:
            src = slot.history.src
            if slot.age == 1 and is_acc(src):
                # The producer of the source writes the youngest slot directly (see _shift).
                self.slot_buf[id(slot)] = self.buf_of[id(src)]
            else:
                self.slot_buf[id(slot)] = self._new_buf("state")
        return self.slot_buf[id(slot)]

    def _emit(self, v: Val) -> list[tuple[int, Op]]:
        """Create the operations computing ``v`` in every form its users need.

        Returns the output-beat operations as (beat index, op).
        """
        if isinstance(v, InputBlock | StateSlot):
            tram_core = None
        elif isinstance(v, ConstBlock):
            self.buf_of[id(v)] = self._new_buf("const", bits=v.bits)
            tram_core = None
        elif isinstance(v, Chain):
            core = self.core_of[id(v)]
            vacc = VAcc(core)
            self.vaccs.append(vacc)
            for tile, x in v.terms:
                op = self._new_op(core, v.node, tile=tile, acc=vacc)
                vacc.writers.append(op)
                self._read_val(op, x)
            self.vacc_of[id(v)] = vacc
            tram_core = core
        else:
            assert isinstance(v, VecVal)
            tram_core = self._vec_core(v)
            if id(v) in self.need_acc:
                vacc = VAcc(tram_core)
                self.vaccs.append(vacc)
                op = self._vec(v, tram_core, Dest.ACC, dacc=vacc)
                vacc.writers.append(op)
                self.vacc_of[id(v)] = vacc
        self.core_of[id(v)] = tram_core if tram_core is not None else -1
        if id(v) in self.need_tram and tram_core is not None:
            buf = self._new_buf("act")
            self.buf_of[id(v)] = buf
            buf.writer = self._vec(v, tram_core, Dest.TRAM, dbuf=buf)
        outs = []
        for k in self.out_beats.get(id(v), []):
            if tram_core is None:
                op = self._new_op(self._least_loaded(), v.node, vop=VecOp.PASS_T,
                                  dest=Dest.OUTPUT, out=k)
                self._read_val(op, v)
            else:
                op = self._vec(v, tram_core, Dest.OUTPUT, out=k)
            outs.append((k, op))
        return outs

    def _vec_core(self, v: VecVal) -> int:
        """Return the core of a vector value: where its accumulator operand is, else near
        its tensor-RAM operand's producer, else the least loaded core."""
        if v.a is not None:
            return self.vacc_of[id(v.a)].core
        assert v.t is not None
        producer = self.core_of.get(id(v.t), -1)
        return producer if producer >= 0 else self._least_loaded()

    def _vec(self, v: Val, core: int, dest: Dest, **fields: Any) -> Op:
        """Return the ``VEC`` computing ``v`` (a chain or vector value) into ``dest``."""
        if isinstance(v, Chain):
            op = self._new_op(core, v.node, vop=VecOp.PASS_A, dest=dest, **fields)
            self._read_acc(op, self.vacc_of[id(v)])
            return op
        assert isinstance(v, VecVal)
        op = self._new_op(core, v.node, vop=v.op, lo=v.lo, hi=v.hi, dest=dest, **fields)
        if v.a is not None:
            self._read_acc(op, self.vacc_of[id(v.a)])
        if v.t is not None:
            self._read_val(op, v.t)
        return op

    def _shift(self, h: History) -> None:
        """Emit the window update of ``h``: slot a+1 <- slot a, oldest first, then slot 1
        <- source; each write after every read of the value it replaces."""
        for age in range(h.depth, 0, -1):
            dst = self._slot(h.slots[age])
            if age == 1 and is_acc(h.src):
                writer = self.buf_of[id(h.src)].writer
                assert writer is not None
            else:
                # Any core may shift: it reads the younger slot locally (joining its mask)
                # and multicasts; the least loaded one keeps copies off the busy cores.
                core = self._least_loaded()
                writer = self._new_op(core, h.node, vop=VecOp.PASS_T, dest=Dest.TRAM, dbuf=dst)
                if age > 1:
                    self._read_buf(writer, self._slot(h.slots[age - 1]), old=True)
                else:
                    self._read_val(writer, h.src)
            writer.preds.extend((r, 1) for r in self.old_readers.get(id(dst), []))
