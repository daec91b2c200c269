"""The back end: lower an NNIR graph to a statically scheduled :class:`Program`.

:func:`lower` runs four passes (``docs/compiler.md`` explains each):

1. :func:`compiler._graph.build`: tile the weights and rewrite the graph as blocks of B
   lanes, with elementwise ops fused into the ``VEC`` that finishes each block;
2. :func:`compiler._ops.generate`: place every block on a core and make its ``MAC`` and
   ``VEC`` operations, the streaming-window updates and the constraints between them;
3. :func:`compiler._schedule.schedule`: give every operation its issue cycle, then assign
   accumulators. Passes 2 and 3 run again with reductions split across cores
   (:func:`_try_split`), and passes 1–3 for other forms of the graph (:func:`_best`: a
   recurrent cell's chains apart, long sums cut in two); the schedule of lowest latency is
   kept;
4. here: allocate weight stores, tensor RAM and clamp tables, encode each core's
   instructions (``WAIT`` s fill the gaps) and assemble the program.

Every memory that can overflow is checked and reported with :class:`AllocationError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler._graph import Graph, PartialSums, build
from compiler._ops import (
    Buf,
    Op,
    OpGraph,
    SplitPlan,
    accumulation_orders,
    generate,
    write_latency,
)
from compiler._schedule import assign_accumulators, constrain_reuse, schedule
from compiler.nnir import NNIR
from compiler.program import AllocationError, Program
from isa.config import Config
from isa.instructions import Dest, End, Fn, Instruction, Mac, Vec, Wait, encode_program
from isa.program import CoreImage, TensorLayout
from isa.timing import latencies

__all__ = ["lower", "assemble", "scheduled"]

#: The longest single WAIT the format can encode.
_MAX_WAIT = (1 << Wait.FIELDS[0].width) - 1


def lower(nnir: NNIR, config: Config, name: str | None = None,
          split_reduction: bool = True, partial_sums: bool = True) -> Program:
    """Compile ``nnir`` for ``config``.

    Parameters
    ----------
    nnir : NNIR
        The model; a sequence model must have been through ``streaming_transform``
        (``conv1d`` is only lowered in its streaming form).
    config : Config
        The machine.
    name : str, optional
        Recorded as ``meta["name"]`` (default ``"model"``).
    split_reduction : bool
        Also try balancing the cores by splitting output blocks' reductions across two
        cores (the partial sum handed over exactly, in fp32, by ``VEC -> ACCS``), and keep
        such a schedule if its latency is lower. The chains accumulate in the same order
        either way, so the outputs are bit-identical; False compiles every output block on
        one core.
    partial_sums : bool
        Also try cutting long sums (matrix layers, ``sum``/``mean``) in two chains, the
        partial one rounded to bf16 and added by the other's finishing ``VEC``
        (``docs/compiler.md`` §5a), and keep that form if its latency is lower. It adds one
        bf16 rounding of a partial sum to each cut output; False keeps every sum one fp32
        chain.

    Returns
    -------
    Program
        Validated; one inference (one timestep of a streaming model) per run. ``meta`` holds
        ``name``, ``streaming``, ``input_axis`` and ``output_axis`` (for a streaming model)
        and ``layers``: per NNIR node that emits instructions, its ``name``, ``op``,
        ``tiles`` (nonzero weight tiles), ``macs``, ``cores``, ``start`` (first issue cycle),
        ``end`` (last write cycle) and ``partial_sums`` (its sums cut in two).

    Raises
    ------
    AllocationError
        If the model does not fit: input beats over ``io_depth``, a weight store, tensor
        RAM, accumulator store, clamp table or instruction memory of a core; the message
        names the memory, the core, what is needed and what is available.
    ValueError
        If a node cannot be lowered (a non-streaming ``conv1d``); the message names it.
    """
    beats = sum(TensorLayout(tuple(nnir.node(i).shape), config.block_size).beats
                for i in nnir.inputs)
    if beats > config.io_depth:
        raise AllocationError(f"input descriptor table: needs {beats} input beats, has "
                              f"{config.io_depth} (io_depth)")
    graph, ops = _best(nnir, config, split_reduction, partial_sums)
    return assemble(nnir, config, graph, ops, name)


def assemble(nnir: NNIR, config: Config, graph: Graph, ops: OpGraph,
             name: str | None = None) -> Program:
    """Return the validated program of ``nnir``'s block ``graph`` scheduled as ``ops``
    (pass 4 of :func:`lower`, which documents the result and the errors)."""
    b = config.block_size
    inputs = [TensorLayout(tuple(nnir.node(i).shape), b) for i in nnir.inputs]
    outputs = [TensorLayout(tuple(nnir.node(i).shape), b) for i in nnir.outputs]
    weights = _weight_slots(ops, nnir, config)
    for v in ops.vaccs:
        macs = [op for op in v.writers if op.is_mac]
        if macs and len(macs) == len(v.writers):
            # The first MAC of a chain (in issue order) sets, the others accumulate; a
            # chain continued from a partial sum (written by ACCS) only accumulates.
            min(macs, key=lambda op: op.cycle).accumulate = 0
    tram_used = _allocate_tram(ops.bufs, config)
    cores = []
    for core in range(config.num_cores):
        instrs, clamps = _encode(core, ops, weights[core], config)
        if len(instrs) > config.instr_mem_depth:
            raise AllocationError(f"instruction memory of core {core}: needs {len(instrs)} "
                                  f"instructions, has {config.instr_mem_depth}")
        tiles = [graph.tiles[t] for t in weights[core]]  # dicts keep first-use order
        cores.append(CoreImage(
            instructions=encode_program(instrs),
            weights=np.array(tiles, np.uint16).reshape(len(tiles), b, b),
            tram_init=_tram_image(core, ops.bufs, b),
            clamps=np.array(clamps, np.float32).reshape(-1, 2),
            tram_used=tram_used[core],
        ))
    dests = np.array([[_mask_bits(buf.mask), buf.addr] for buf in ops.inputs], np.uint32)
    meta: dict[str, Any] = {"name": name or "model", "streaming": nnir.streaming}
    for key, ids in (("input_axis", nnir.inputs), ("output_axis", nnir.outputs)):
        if ids and "stream_axis" in nnir.node(ids[0]).attrs:
            meta[key] = int(nnir.node(ids[0]).attrs["stream_axis"])
    meta["layers"] = _layers(nnir, ops, graph, config)
    program = Program(config=config, cores=cores, inputs=inputs, outputs=outputs,
                      input_dests=dests.reshape(-1, 2), meta=meta)
    program.validate()
    return program


#: Schedules with long chains cut in two, each cut from the previous schedule's ready
#: cycles; a last one may also cut them in three.
_PARTIAL_ROUNDS = 2


def _best(nnir: NNIR, config: Config, split_reduction: bool, partial_sums: bool
          ) -> tuple[Graph, OpGraph]:
    """Return the block graph and schedule of lowest latency among the forms tried (the
    first tried on a tie): every chain whole; a recurrent cell's input and recurrent chains
    apart (``split_concat``); and with ``partial_sums``, long chains cut in two, the cuts
    chosen from when the previous form's schedule had each block ready, twice (the second
    time from the first cut's own schedule), then a third time possibly in three, with a
    block's chains placed apart, together, or together and paired. The best cut one is
    also tried with its cut sums balanced across the cores (``balance_cuts``). Reductions
    are split across cores (:func:`_try_split`) in the uncut forms and in the best cut one
    (measured: elsewhere it rarely helped and it triples the work).
    """
    b = config.block_size
    lat = latencies(config)
    split = split_reduction and config.num_cores > 1
    best: tuple[Graph, OpGraph] | None = None

    def keep(candidate: tuple[Graph, OpGraph]) -> None:
        nonlocal best
        if best is None or _latency(candidate[1], config) < _latency(best[1], config):
            best = candidate

    first = build(nnir, b)
    whole = scheduled(first, nnir, config)
    keep((first, _try_split(first, nnir, config, whole) if split else whole))
    if first.concat_linears:
        graph = build(nnir, b, split_concat=True)
        try:
            ops = scheduled(graph, nnir, config)
            keep((graph, _try_split(graph, nnir, config, ops) if split else ops))
        except AllocationError:  # the extra VECs' accumulators or instructions
            pass
    cuts: list[tuple[Graph, OpGraph]] = []
    for together, paired in ((False, False), (True, False), (True, True))[
            :3 if partial_sums else 0]:
        previous = first, whole
        for pieces in (2,) * _PARTIAL_ROUNDS + (3,):
            plan = PartialSums(lat.mac_spacing, lat.vec_remote_write + 1, together,
                               _ready(*previous, config), paired, pieces)
            cut = build(nnir, b, partial_sums=plan)
            try:
                previous = cut, scheduled(cut, nnir, config)
            except AllocationError:
                break
            cuts.append(previous)
    if cuts:
        graph, ops = min(cuts, key=lambda c: _latency(c[1], config))
        balance = False
        try:
            balanced = scheduled(graph, nnir, config, balance_cuts=True)
            if _latency(balanced, config) < _latency(ops, config):
                ops, balance = balanced, True
        except AllocationError:
            pass
        keep((graph, _try_split(graph, nnir, config, ops, balance) if split else ops))
    assert best is not None
    return best


def _ready(graph: Graph, ops: OpGraph, config: Config) -> dict[tuple[int, int, int], int]:
    """Return, per block of ``graph`` (by :attr:`Graph.positions`) held in tensor RAM, the
    first cycle in which ``ops``' schedule lets every core of its buffer read it."""
    lat = latencies(config)
    ready = {}
    for key, pos in graph.positions.items():
        buf = ops.val_bufs.get(key)
        if buf is None:
            continue
        if buf.kind == "input":
            ready[pos] = buf.beat + lat.input_write + 1
        elif buf.writer is not None and buf.writer.cycle >= 0:
            ready[pos] = buf.writer.cycle + 1 + max(
                (write_latency(buf.writer, c, config) for c in buf.mask), default=0)
    return ready


def scheduled(graph: Graph, nnir: NNIR, config: Config, plan: SplitPlan | None = None,
              balance_cuts: bool = False) -> OpGraph:
    """Return the operations of ``graph`` placed (see :func:`generate` for ``plan``) and
    scheduled, with accumulators assigned: of the schedules by path length, with
    interleaved chains and with the longest remaining chains first
    (:func:`compiler._schedule.schedule`), the one of lowest latency (the first on a tie).

    Raises
    ------
    AllocationError
        If a weight store or accumulator store overflows.
    """
    best: OpGraph | None = None
    for interleave, long_first in ((False, False), (True, False), (False, True)):
        ops = generate(graph, config, plan, balance_cuts)
        _weight_slots(ops, nnir, config)  # refuse an overflowing placement before scheduling
        schedule(ops, config, interleave, long_first)
        if max(assign_accumulators(ops).values(), default=0) > config.accum_store_depth:
            # Too many values live at once in this schedule: assign accumulators first, on
            # an order that keeps few live, and schedule again under the reuse constraints.
            _check_accumulators(constrain_reuse(ops, config), config)
            schedule(ops, config, interleave, long_first)
        if best is None or _latency(ops, config) < _latency(best, config):
            best = ops
    assert best is not None
    return best


def _latency(ops: OpGraph, config: Config) -> int:
    """Return the spaced latency of a schedule: its last output beat's cycle + 1."""
    return (max(op.cycle for op in ops.ops if op.dest == Dest.OUTPUT)
            + latencies(config).vec_output + 1)


def _try_split(graph: Graph, nnir: NNIR, config: Config, whole: OpGraph,
               balance_cuts: bool = False) -> OpGraph:
    """Return the schedule of lowest latency among ``whole`` (every chain on one core) and
    the schedules with reductions split across cores; ``whole`` on a tie.

    Two plans are tried: splitting the last matrix layer only, to even out every core's
    ``MAC`` s over the model (each hand-over costs the sender an issue slot and the
    receiver an accumulator-port cycle, so few is better), and balancing every layer on its
    own (better when an early layer dominates). Both keep every chain's accumulation order
    from ``whole``, so every candidate computes bit-identical results.
    """
    orders = accumulation_orders(whole)
    best = whole
    # With one matrix layer the two plans are the same.
    for final_only in (True, False)[:2 if len(graph.node_tiles) > 1 else 1]:
        try:
            split = scheduled(graph, nnir, config, SplitPlan(orders, final_only),
                              balance_cuts)
        except AllocationError:  # a moved piece's tiles or the hand-overs do not fit
            continue
        if split.splits and _latency(split, config) < _latency(best, config):
            best = split
    return best


def _mask_bits(cores: set[int]) -> int:
    return sum(1 << c for c in cores)


def _parameters(nnir: NNIR) -> int:
    """Return the number of weights and biases of the model's matrix layers."""
    return sum(int(node.attrs[key].size) for node in nnir.nodes
               if node.op in ("linear", "stream_conv1d")
               for key in ("weight", "bias") if node.attrs[key] is not None)


def _weight_slots(ops: OpGraph, nnir: NNIR, config: Config) -> list[dict[int, int]]:
    """Return, per core, its tiles' weight-store addresses by tile id (in first-use order).

    Raises
    ------
    AllocationError
        If a core's tiles exceed its weight store.
    """
    slots: list[dict[int, int]] = [{} for _ in range(config.num_cores)]
    for op in ops.ops:
        if op.is_mac:
            slots[op.core].setdefault(op.tile, len(slots[op.core]))
    worst = max(range(config.num_cores), key=lambda c: len(slots[c]))
    if len(slots[worst]) > config.weight_store_depth:
        b = config.block_size
        tiles = len({op.tile for op in ops.ops if op.is_mac})
        fill = _parameters(nnir) / (tiles * b * b)
        sparse = (f"; its {_parameters(nnir):,} parameters fill only {100 * fill:.0f} % of "
                  "them (a depthwise or sparse layer takes a whole tile per diagonal block)"
                  if fill < 0.5 else "")
        raise AllocationError(
            f"weight store of core {worst}: needs {len(slots[worst])} tiles, has "
            f"{config.weight_store_depth} (the model needs {tiles:,} distinct {b}×{b} weight "
            f"tiles in all, the machine holds {config.num_cores * config.weight_store_depth:,}"
            f"{sparse})")
    return slots


def _check_accumulators(needed: dict[int, int], config: Config) -> None:
    """Raise :class:`AllocationError` if a core needs more accumulators than it has."""
    worst = max(needed, key=lambda c: needed[c])
    if needed[worst] > config.accum_store_depth:
        raise AllocationError(f"accumulator store of core {worst}: needs {needed[worst]} "
                              f"accumulators, has {config.accum_store_depth}")


def _allocate_tram(bufs: list[Buf], config: Config) -> list[int]:
    """Give every buffer the lowest address free on all cores of its mask; constants first,
    so that the load-time image is short. Return the blocks used per core.

    Raises
    ------
    AllocationError
        If a core needs more than its tensor RAM.
    """
    n = config.num_cores
    used = np.zeros((n, len(bufs) + 1), bool)
    order = sorted(bufs, key=lambda buf: buf.kind != "const")
    for buf in order:
        cores = sorted(buf.mask)
        buf.addr = int(np.argmin(used[cores].any(axis=0)))
        used[cores, buf.addr] = True
    top = [int(np.flatnonzero(used[c])[-1]) + 1 if used[c].any() else 0 for c in range(n)]
    worst = max(range(n), key=lambda c: top[c])
    if top[worst] > config.tensor_ram_depth:
        raise AllocationError(f"tensor RAM of core {worst}: needs {top[worst]} blocks, has "
                              f"{config.tensor_ram_depth}")
    return top


def _tram_image(core: int, bufs: list[Buf], b: int) -> np.ndarray:
    """Return the load-time tensor RAM of ``core``: its constants and the initial values of
    its states (zeros in between)."""
    consts = [buf for buf in bufs if buf.bits is not None and core in buf.mask]
    image = np.zeros((max((buf.addr + 1 for buf in consts), default=0), b), np.uint16)
    for buf in consts:
        assert buf.bits is not None
        image[buf.addr] = buf.bits
    return image


def _encode(core: int, ops: OpGraph, weights: dict[int, int],
            config: Config) -> tuple[list[Instruction], list[tuple[float, float]]]:
    """Return the instructions of ``core`` (``WAIT`` s in the gaps, ``END`` last) and its
    clamp table (entry 0 is no clamp); ``weights`` maps tile ids to weight-store addresses.

    Raises
    ------
    AllocationError
        If the core uses more distinct clamp bounds than its clamp table holds.
    """
    clamps: dict[tuple[float, float], int] = {(-math.inf, math.inf): 0}
    instrs: list[Instruction] = []
    cycle = 0
    for op in sorted((op for op in ops.ops if op.core == core), key=lambda op: op.cycle):
        gap = op.cycle - cycle
        while gap > 0:
            wait = min(gap, _MAX_WAIT)
            instrs.append(Wait(wait))
            gap -= wait
        cycle = op.cycle + 1
        if op.is_mac:
            assert op.acc is not None and op.tram is not None
            instrs.append(Mac(acc=op.acc.phys, tram=op.tram.addr, weight=weights[op.tile],
                              accumulate=op.accumulate))
            continue
        if op.fn is not None:
            assert op.tram is not None and op.dest is not None
            addr = op.dacc.phys if op.dacc is not None else op.dbuf.addr  # type: ignore[union-attr]
            instrs.append(Fn(fn=int(op.fn), tram=op.tram.addr, dest=int(op.dest), addr=addr))
            continue
        assert op.vop is not None and op.dest is not None
        bounds = (float(np.float32(op.lo)), float(np.float32(op.hi)))
        clamp = clamps.setdefault(bounds, len(clamps))
        if op.dest == Dest.ACC:
            assert op.dacc is not None
            addr, mask = op.dacc.phys, 0
        elif op.dest == Dest.ACCS:
            assert op.dacc is not None
            addr, mask = op.dacc.phys, 1 << op.dacc.core
        elif op.dest == Dest.TRAM:
            assert op.dbuf is not None
            addr, mask = op.dbuf.addr, _mask_bits(op.dbuf.mask)
        else:
            addr, mask = 0, 0
        instrs.append(Vec(
            op=int(op.vop), clamp=clamp,
            acc=op.acc.phys if op.acc is not None else 0,
            tram=op.tram.addr if op.tram is not None else 0,
            dest=int(op.dest), addr=addr, cores=mask))
    instrs.append(End())
    if len(clamps) > config.clamp_store_depth:
        raise AllocationError(f"clamp table of core {core}: needs {len(clamps)} entries, has "
                              f"{config.clamp_store_depth}")
    return instrs, list(clamps)


def _last_write(op: Op, config: Config) -> int:
    """Return the cycle of ``op``'s last write or output beat."""
    if op.dest == Dest.TRAM and op.dbuf is not None:
        cores = op.dbuf.mask
    elif op.dest == Dest.ACCS and op.dacc is not None:
        cores = {op.dacc.core}
    else:
        cores = {op.core}
    return op.cycle + max(write_latency(op, c, config) for c in cores)


def _layers(nnir: NNIR, ops: OpGraph, graph: Graph, config: Config) -> list[dict[str, Any]]:
    """Return the per-node records of ``Program.meta["layers"]``, in graph order."""
    by_node: dict[int, list[Op]] = {}
    for op in ops.ops:
        by_node.setdefault(op.node, []).append(op)
    records = []
    for node in nnir.nodes:
        mine = by_node.get(node.id)
        if not mine:
            continue
        records.append({
            "name": node.name or f"%{node.id}",
            "op": node.op,
            "tiles": graph.node_tiles.get(node.id, 0),
            "macs": sum(op.is_mac for op in mine),
            "cores": sorted({op.core for op in mine}),
            "start": min(op.cycle for op in mine),
            "end": max(_last_write(op, config) for op in mine),
            "partial_sums": graph.cut_chains.get(node.id, 0),
            "partial_roundings": graph.cut_roundings.get(node.id, 0),
        })
    return records
