"""Placement and micro-operations: the block graph as MAC and VEC operations on cores.

:func:`generate` decides which core computes each block value and turns every value into
the instructions that compute it (not yet scheduled), with the tensor-RAM buffers and
accumulators they use and the timing constraints between them:

* a function value (``FN``) runs on a core that holds its operand block, near the
  operand's producer, into an accumulator of that core; when it is needed only in tensor
  RAM, every core that reads it runs its own ``FN`` into its own tensor RAM instead (an
  ``FN`` cannot write another core), which saves the ``VEC`` copy and its latency;
* a chain runs on the core its layer's placement gives it (output blocks balanced over the
  cores by tile count, weight-store capacity permitting), or, with a :class:`SplitPlan`,
  its first terms on a less loaded core, whose partial sum a ``VEC -> ACCS`` hands over to
  the chain's core; a vector value runs where its
  accumulator operand is; every block written to tensor RAM goes, in one ``VEC``, to every
  core that reads it (the buffer's ``mask``), at the same address on all of them;
* ``preds`` of an operation are (operation, latency) pairs meaning ``issue >= pred issue +
  latency``: read after write (the write lands, then the read may issue a cycle later), the
  write-after-read ordering of the streaming window update, the order of output beats,
  and with a :class:`SplitPlan` the accumulation order of each chain's ``MAC`` s;
* a streaming window (:class:`compiler._graph.History`) is shifted after its reads by
  ``VEC PASS_T`` copies multicast to its readers; the youngest slot is the source block's
  own buffer when a ``VEC`` produces it (the producer then writes it after the old value's
  reads), or a copy of it for an input or constant block. A recurrent state is such a
  window of depth 1, read before its source is computed; its buffer holds the initial
  state at load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler._graph import (
    Chain,
    ConstBlock,
    FnVal,
    Graph,
    History,
    InputBlock,
    StateSlot,
    Val,
    VecVal,
    is_acc,
)
from isa.config import Config
from isa.functions import Function
from isa.instructions import Dest
from isa.numerics import VecOp
from isa.timing import latencies

__all__ = ["Buf", "VAcc", "Op", "OpGraph", "SplitPlan", "generate", "write_latency",
           "handover_latency", "accumulation_orders"]


@dataclass(eq=False)
class Buf:
    """A tensor-RAM block, at address ``addr`` on every core of ``mask``.

    ``kind`` is ``"input"`` (written by input beat ``beat``), ``"const"`` (``bits`` loaded with
    the program), ``"state"`` (persists between inferences) or ``"act"`` (written once per
    inference by ``writer``; the youngest slot of a window or a recurrent state persists
    too). A non-constant buffer with ``bits`` holds them at load (a state's initial value),
    else zeros.
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
    """One ``MAC``, ``VEC`` or ``FN`` instruction of ``core``, before scheduling.

    A ``MAC`` (``vop`` and ``fn`` None) accumulates tile ``tile`` (an index of
    ``Graph.tiles``) times ``tram`` into ``acc``. A ``VEC`` computes
    ``clamp(vop(acc, tram), lo, hi)`` into ``dest``: accumulator ``dacc`` (``Dest.ACC`` on
    this core, ``Dest.ACCS`` on the core of ``dacc``), buffer ``dbuf`` (on all its cores) or
    output beat ``out``. An ``FN`` (``fn`` set) applies ``fn`` to ``tram`` into accumulator
    ``dacc`` of its own core (``dest`` ``Dest.ACC``). ``cycle`` is the issue cycle once
    scheduled; ``accumulate`` is cleared on the first ``MAC`` of each chain (not of a chain
    continued from a partial sum sent by ``ACCS``).
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
    fn: Function | None = None

    @property
    def is_mac(self) -> bool:
        """Return whether this is a ``MAC``."""
        return self.vop is None and self.fn is None


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
    chain_macs : dict
        ``id(chain)`` -> the ``MAC`` of each of the chain's terms, in term order.
    splits : int
        Chains whose reduction is split across cores.
    val_bufs : dict
        ``id(val)`` -> the buffer holding a block value of the graph in tensor RAM.
    """

    ops: list[Op]
    bufs: list[Buf]
    vaccs: list[VAcc]
    inputs: list[Buf]
    chain_macs: dict[int, list[Op]]
    splits: int
    val_bufs: dict[int, Buf]


def write_latency(op: Op, core: int, config: Config) -> int:
    """Return the cycles from ``op``'s issue to its write landing on ``core``."""
    lat = latencies(config)
    if op.is_mac:
        return lat.mac_acc_write
    if op.fn is not None:
        return lat.fn_write
    if op.dest == Dest.OUTPUT:
        return lat.vec_output
    return lat.vec_local_write if core == op.core else lat.vec_remote_write


def handover_latency(config: Config) -> int:
    """Return the cycles from an ``ACCS`` hand-over's issue to the continuing ``MAC``'s.

    The ``MAC`` reads its accumulator ``mac_acc_read`` cycles after issue, which must be after
    the remote write lands (the bypass does not forward it); and it issues at least a cycle
    after the ``ACCS``: in the same cycle on a lower-numbered core it would come first in
    execution order, and its write would land after a later instruction's (rule 4).
    """
    lat = latencies(config)
    return max(1, lat.vec_remote_write + 1 - lat.mac_acc_read)


def accumulation_orders(graph: OpGraph) -> dict[int, list[int]]:
    """Return, per chain (``id(chain)``), its term indices in the order of their ``MAC`` s'
    issue: the order in which a scheduled ``graph`` accumulates them."""
    return {key: sorted(range(len(macs)), key=lambda k: macs[k].cycle)
            for key, macs in graph.chain_macs.items()}


@dataclass(frozen=True)
class SplitPlan:
    """How :func:`generate` splits reductions across cores.

    Attributes
    ----------
    orders : dict
        ``id(chain)`` -> the chain's term indices in accumulation order. Every chain's
        ``MAC`` s are constrained to issue in this order, so that a chain computes the same
        fp32 additions whether or not it is split.
    final_only : bool
        Split only the last matrix layer, to even out the cores' ``MAC`` s over the whole
        model (few hand-overs); else balance every layer on its own.
    """

    orders: dict[int, list[int]]
    final_only: bool


def generate(graph: Graph, config: Config, plan: SplitPlan | None = None,
             balance_cuts: bool = False) -> OpGraph:
    """Place the live values of ``graph`` on cores and return their operations.

    Without a ``plan`` every chain runs on one core and its ``MAC`` s are unordered (the
    scheduler picks the accumulation order). With one, chains are split where a layer's
    output-block placement leaves the cores unbalanced: the first terms of a chain run on
    a less loaded core, whose partial sum ``VEC PASS_A -> ACCS`` copies exactly into the
    accumulator in which the chain's own core continues it. With ``balance_cuts``, the
    two chains of a sum cut in two (``docs/compiler.md`` §5a) placed on different cores
    trade terms to even out each layer's ``MAC`` s first (:meth:`_Generator._balance_cuts`);
    the cut then differs from the one ``graph`` was built with. Deterministic: the same
    arguments give the same placement, so a plan's orders (keyed by chain) stay valid.
    """
    return _Generator(graph, config, plan, balance_cuts).run()


def _rows(chains: list[Chain]) -> list[list[Chain]]:
    """Return a unit's ``chains`` by row: one chain, or the chains of a paired cut sum."""
    rows: list[list[Chain]] = []
    for ch in chains:
        if rows and rows[-1][-1].with_next:
            rows[-1].append(ch)
        else:
            rows.append([ch])
    return rows


class _Generator:
    def __init__(self, graph: Graph, config: Config, plan: SplitPlan | None,
                 balance_cuts: bool) -> None:
        self.graph = graph
        self.config = config
        self.plan = plan
        self.balance_cuts = balance_cuts
        # id(chain) -> its pieces in accumulation order: (core, term indices); a chain whose
        # reduction is not split is one piece.
        self.pieces: dict[int, list[tuple[int, list[int]]]] = {}
        # id(chain) -> its terms, where a cut sum's two chains were rebalanced
        # (:meth:`_balance_cuts`); else the chain's own.
        self.terms: dict[int, list[tuple[int, Val]]] = {}
        self.chain_macs: dict[int, list[Op]] = {}
        self.ops: list[Op] = []
        self.bufs: list[Buf] = []
        self.vaccs: list[VAcc] = []
        self.load = [0] * config.num_cores  # operations per core, to balance VEC placement
        self.core_of: dict[int, int] = {}  # id(val) -> core computing it
        self.buf_of: dict[int, Buf] = {}  # id(val) -> its tensor-RAM buffer
        self.vacc_of: dict[int, VAcc] = {}  # id(val) -> its accumulator
        self.old_readers: dict[int, list[Op]] = {}  # id(buf) -> reads of the previous value
        self.slot_buf: dict[int, Buf] = {}  # id(StateSlot) -> buffer
        self.fn_copies: list[tuple[Buf, FnVal]] = []  # direct FN values and their buffers

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
            elif isinstance(v, FnVal):
                self.need_tram.add(id(v.x))
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
        self._copy_functions()
        for k in range(1, len(out_ops)):
            out_ops[k].preds.append((out_ops[k - 1], 1))
        for buf in self.bufs:
            # A block nobody reads (an unused input; a window slot whose taps are all zero)
            # still needs somewhere to land.
            if not buf.mask:
                buf.mask.add(buf.writer.core if buf.writer is not None else 0)
        splits = sum(len(p) - 1 for p in self.pieces.values())
        return OpGraph(self.ops, self.bufs, self.vaccs, inputs, self.chain_macs, splits,
                       self.buf_of)

    # -- placement -----------------------------------------------------------------------

    def _place_chains(self, chains: list[Chain]) -> None:
        """Spread each layer's chains over the cores, balancing MACs, within weight stores.

        Chains of one unit (layer and output block) share their tiles and go to one core,
        unless the layer has fewer units than cores and several rows, when rows are split.
        With a :class:`SplitPlan`, the layers are then balanced further by splitting
        reductions (:meth:`_split`).
        """
        n = self.config.num_cores
        depth = self.config.weight_store_depth
        tiles_on: list[set[int]] = [set() for _ in range(n)]
        total = [0] * n
        layers: dict[int, dict[tuple[int, int], list[Chain]]] = {}
        for ch in chains:
            layers.setdefault(ch.node, {}).setdefault(ch.unit, []).append(ch)
        last_layer = max(layers, default=-1)
        for node, units in layers.items():
            groups = list(units.values())
            if len(groups) < n:
                split = -(-n // len(groups))
                groups = [[ch for row in rows[i::split] for ch in row]
                          for rows in map(_rows, groups) for i in range(min(split, len(rows)))]
            groups.sort(key=lambda g: -sum(len(c.terms) for c in g))
            layer = [0] * n
            placed: list[list[Chain]] = [[] for _ in range(n)]
            for group in groups:
                macs = sum(len(c.terms) for c in group)
                tiles = {t for c in group for t, _ in c.terms}
                fits = [c for c in range(n) if len(tiles_on[c] | tiles) <= depth]
                core = min(fits or range(n), key=lambda c: (layer[c] + macs, total[c], c))
                layer[core] += macs
                total[core] += macs
                tiles_on[core] |= tiles
                placed[core].extend(group)
            if self.balance_cuts:
                self._balance_cuts(units, placed, layer, total, tiles_on)
            for core, mine in enumerate(placed):
                for ch in mine:
                    order = (self.plan.orders[id(ch)] if self.plan is not None
                             else list(range(len(self._terms(ch)))))
                    self.pieces[id(ch)] = [(core, order)]
            if self.plan is None:
                continue
            if not self.plan.final_only:
                self._split(placed, layer, total, tiles_on, [sum(layer) / n] * n)
            elif node == last_layer:
                mean = sum(total) / n
                self._split(placed, layer, total, tiles_on,
                            [mean - total[c] + layer[c] for c in range(n)])

    def _terms(self, ch: Chain) -> list[tuple[int, Val]]:
        return self.terms.get(id(ch), ch.terms)

    def _balance_cuts(self, units: dict[tuple[int, ...], list[Chain]],
                      placed: list[list[Chain]], layer: list[int], total: list[int],
                      tiles_on: list[set[int]]) -> None:
        """Even out one layer's ``MAC`` s per core by moving terms between the rest and
        the (first) partial of a cut sum (``docs/compiler.md`` §5a) placed on different
        cores.

        A cut sum's chains are whole placement units of about half a sum each, too coarse
        for the greedy placement to balance (32 sums of 32 terms on 6 cores: 162 and 175
        ``MAC`` s). Moving terms between them costs nothing: no hand-over, and the sum
        rounds the same number of partials. While the most loaded core holds such a chain
        whose sibling is on a core with at least two ``MAC`` s fewer, terms go to the
        sibling: the rest's earliest-ready terms to the partial, or the partial's latest to
        the rest.
        """
        n = self.config.num_cores
        depth = self.config.weight_store_depth
        core_of = {id(ch): c for c in range(n) for ch in placed[c]}
        pairs = []  # (rest chains, partial chains) of each cut output block
        for unit, chains in units.items():
            partial = units.get((*unit[:2], 1)) if len(unit) == 3 and unit[2] == 0 else None
            if partial is not None and len(partial) == len(chains) and all(
                    len({core_of[id(c)] for c in cs}) == 1 for cs in (chains, partial)):
                pairs.append((chains, partial))
        if not pairs:
            return
        while True:
            src = max(range(n), key=lambda c: (layer[c], -c))
            # (receiving core's load, pair index, receiving core, giver, taker, giver is
            # the rest)
            moves = []
            for k, (rest, partial) in enumerate(pairs):
                a, b = core_of[id(rest[0])], core_of[id(partial[0])]
                if src in (a, b) and a != b:
                    moves.append((layer[b], k, b, rest, partial, True) if a == src
                                 else (layer[a], k, a, partial, rest, False))
            chosen = None
            for _, _, dst, mine, other, from_rest in sorted(moves, key=lambda m: m[:2]):
                moved = min((layer[src] - layer[dst]) // (2 * len(mine)),
                            len(self._terms(mine[0])) - 1)
                if moved <= 0:
                    return
                given = [ts[:moved] if from_rest else ts[-moved:]
                         for ts in map(self._terms, mine)]
                tiles = {t for part in given for t, _ in part}
                if len(tiles_on[dst] | tiles) <= depth:
                    chosen = dst, mine, other, moved, given, tiles, from_rest
                    break
            if chosen is None:
                return
            dst, mine, other, moved, given, tiles, from_rest = chosen
            for give, take, part in zip(mine, other, given, strict=True):
                if from_rest:  # the rest's earliest-ready terms go to the partial
                    self.terms[id(give)] = self._terms(give)[moved:]
                    self.terms[id(take)] = self._terms(take) + part
                else:  # the partial's latest go to the rest
                    self.terms[id(give)] = self._terms(give)[:-moved]
                    self.terms[id(take)] = part + self._terms(take)
            tiles_on[dst] |= tiles
            for core, delta in ((src, -moved * len(mine)), (dst, moved * len(mine))):
                layer[core] += delta
                total[core] += delta

    def _split(self, placed: list[list[Chain]], layer: list[int], total: list[int],
               tiles_on: list[set[int]], target: list[float]) -> None:
        """Balance one layer towards ``target`` MACs per core by splitting reductions.

        While some core is over its target and another under, the last placed unsplit
        chain of the core most over gives its first terms (in accumulation order), as many
        as both can take, to the core most under (weight store permitting). That core
        computes the partial sum early (the path through the hand-over is long, so the
        scheduler ranks it high) and hands it over; the first core continues the chain
        after its other chains, which hide the hand-over's latency.

        ``placed`` lists each core's chains of the layer; ``layer``, ``total`` (all layers)
        and ``tiles_on`` (weight tiles) per core are updated.
        """
        n = self.config.num_cores
        depth = self.config.weight_store_depth
        while True:
            src = max(range(n), key=lambda c: (layer[c] - target[c], -c))
            dst = min(range(n), key=lambda c: (layer[c] - target[c], total[c], c))
            room = int(min(layer[src] - target[src], target[dst] - layer[dst]))
            if room <= 0:
                return
            for ch in reversed(placed[src]):
                order = self.pieces[id(ch)][0][1]
                if len(self.pieces[id(ch)]) > 1 or len(order) < 2:
                    continue
                moved = min(room, len(order) - 1)
                tiles = {self._terms(ch)[k][0] for k in order[:moved]}
                if len(tiles_on[dst] | tiles) <= depth:
                    break
            else:
                return
            self.pieces[id(ch)] = [(dst, order[:moved]), (src, order[moved:])]
            layer[src] -= moved
            layer[dst] += moved
            total[src] -= moved
            total[dst] += moved
            tiles_on[dst] |= tiles

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
            op.release = max(op.release, buf.beat + latencies(self.config).input_write + 1)
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
                # A recurrent state is read before its source is computed: the source's
                # buffer is made here, and _emit writes it.
                if id(src) not in self.buf_of:
                    self.buf_of[id(src)] = self._new_buf("act")
                buf = self.buf_of[id(src)]
            else:
                buf = self._new_buf("state")
            buf.bits = slot.init  # the value before the first inference (None: zeros)
            self.slot_buf[id(slot)] = buf
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
            vacc = self._chain(v)
            self.vacc_of[id(v)] = vacc
            tram_core = vacc.core
        elif isinstance(v, FnVal) and self._fn_direct(v):
            producer = self.core_of.get(id(v.x), -1)
            tram_core = producer if producer >= 0 else self._least_loaded()
            buf = self._new_buf("act", mask={tram_core})
            self.buf_of[id(v)] = buf
            buf.writer = self._new_op(tram_core, v.node, fn=v.fn, dest=Dest.TRAM, dbuf=buf)
            self._read_val(buf.writer, v.x)
            self.fn_copies.append((buf, v))
        elif isinstance(v, FnVal):
            producer = self.core_of.get(id(v.x), -1)
            tram_core = producer if producer >= 0 else self._least_loaded()
            vacc = VAcc(tram_core)
            self.vaccs.append(vacc)
            op = self._new_op(tram_core, v.node, fn=v.fn, dest=Dest.ACC, dacc=vacc)
            self._read_val(op, v.x)
            vacc.writers.append(op)
            self.vacc_of[id(v)] = vacc
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
        if id(v) in self.need_tram and tram_core is not None and (
                id(v) not in self.buf_of or self.buf_of[id(v)].writer is None):
            # A recurrent state's source may already have its buffer (made by _slot).
            buf = self.buf_of.get(id(v)) or self._new_buf("act")
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

    def _fn_direct(self, v: FnVal) -> bool:
        """Return whether ``v`` is computed by an ``FN`` into tensor RAM on each core that
        reads it: it is needed only in tensor RAM, not as a window's source (whose update
        has one writer) and not from a window slot (whose reads the update must precede)."""
        return (id(v) in self.need_tram and id(v) not in self.need_acc
                and id(v) not in self.out_beats and id(v) not in self.histories
                and not isinstance(v.x, StateSlot))

    def _copy_functions(self) -> None:
        """Give every core that reads a direct ``FN`` value its own ``FN`` (same address),
        and make its reads wait for that one.

        Users before operands: moving or copying an ``FN`` of a function value makes it read
        its operand on another core, which the operand's own copies must then serve.
        """
        for buf, v in reversed(self.fn_copies):
            first = buf.writer
            assert first is not None
            readers = {op.core for op in self.ops if op.tram is buf}
            if readers and first.core not in readers:
                # Nothing reads it where it was placed: move it to a reader's core.
                self.load[first.core] -= 1
                buf.mask.discard(first.core)
                first.core, first.preds, first.release = min(readers), [], 0
                self.load[first.core] += 1
                self._read_val(first, v.x)
            local = {first.core: first}
            for core in sorted(buf.mask - {first.core}):
                local[core] = self._new_op(core, v.node, fn=v.fn, dest=Dest.TRAM, dbuf=buf)
                self._read_val(local[core], v.x)
            for op in self.ops:
                if op.tram is buf and op.core != first.core:
                    op.preds = [(local[op.core], lat) if pred is first else (pred, lat)
                                for pred, lat in op.preds]

    def _chain(self, v: Chain) -> VAcc:
        """Emit the ``MAC`` s of chain ``v``, piece by piece; return the final accumulator.

        Each piece after the first continues the previous piece's partial sum, which a
        ``VEC PASS_A -> ACCS`` copies exactly into the piece's accumulator. With a plan,
        consecutive ``MAC`` s are constrained to issue in the chain's order.
        """
        chain_terms = self._terms(v)
        macs: list[Op | None] = [None] * len(chain_terms)
        vacc: VAcc | None = None
        for core, terms in self.pieces[id(v)]:
            nxt = VAcc(core)
            self.vaccs.append(nxt)
            if vacc is not None:
                send = self._new_op(vacc.core, v.node, vop=VecOp.PASS_A, dest=Dest.ACCS,
                                    dacc=nxt)
                self._read_acc(send, vacc)
                nxt.writers.append(send)
            for k in terms:
                tile, x = chain_terms[k]
                op = self._new_op(core, v.node, tile=tile, acc=nxt)
                prev = nxt.writers[-1] if nxt.writers else None
                if prev is not None and not prev.is_mac:
                    op.preds.append((prev, handover_latency(self.config)))
                elif prev is not None and self.plan is not None:
                    op.preds.append((prev, latencies(self.config).mac_spacing))
                nxt.writers.append(op)
                self._read_val(op, x)
                macs[k] = op
            vacc = nxt
        assert vacc is not None and all(op is not None for op in macs)
        self.chain_macs[id(v)] = [op for op in macs if op is not None]
        return vacc

    def _vec_core(self, v: VecVal) -> int:
        """Return the core of a vector value: where its accumulator operand is, else near
        its tensor-RAM operand's producer, else the least loaded core."""
        if v.a is not None:
            return self.vacc_of[id(v.a)].core
        assert v.t is not None
        producer = self.core_of.get(id(v.t), -1)
        return producer if producer >= 0 else self._least_loaded()

    def _vec(self, v: Val, core: int, dest: Dest, **fields: Any) -> Op:
        """Return the ``VEC`` computing ``v`` (a chain, function or vector value) into
        ``dest``."""
        if isinstance(v, Chain | FnVal):
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
        <- source; each write after every read of the value it replaces.

        A recurrent state whose new value is its own old one needs no update; one whose new
        value is another state's old one goes through an accumulator (``PASS_T -> ACC``,
        ``PASS_A -> TRAM``), so that two states exchanging values do not each wait for the
        other's write."""
        for age in range(h.depth, 0, -1):
            dst = self._slot(h.slots[age])
            if age == 1 and h.src is h.slots[1]:
                return
            if age == 1 and is_acc(h.src):
                writer = self.buf_of[id(h.src)].writer
                assert writer is not None
            elif age == 1 and isinstance(h.src, StateSlot):
                core = self._least_loaded()
                vacc = VAcc(core)
                self.vaccs.append(vacc)
                load = self._new_op(core, h.node, vop=VecOp.PASS_T, dest=Dest.ACC, dacc=vacc)
                self._read_val(load, h.src)
                vacc.writers.append(load)
                writer = self._new_op(core, h.node, vop=VecOp.PASS_A, dest=Dest.TRAM, dbuf=dst)
                self._read_acc(writer, vacc)
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
