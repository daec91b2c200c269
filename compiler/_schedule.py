"""Static scheduling: issue cycles for every operation, and accumulator assignment.

:func:`schedule` is a cycle-by-cycle list scheduler. In each cycle, each core issues the
ready operation of highest priority whose future port uses are free in the reservation
tables. Priority: first the ``VEC`` s that write tensor RAM or an accumulator, then the
rest by the longest latency-weighted path to the end of the inference; ties go to the
earlier-created operation (earlier layers). The resources:

* issue slot: one instruction per core per cycle;
* accumulate loop: two ``MAC`` s into one accumulator issue at least ``mac_spacing`` cycles
  apart (the scheduler fills the gap with other chains' ``MAC`` s);
* accumulator write port, one per core per cycle: ``MAC`` at ``t + mac_acc_write``,
  ``VEC`` to an accumulator at ``t + vec_local_write``, ``VEC -> ACCS`` at
  ``t + vec_remote_write`` on the receiving core;
* tensor-RAM write port, one per core per cycle: input beat ``i`` at ``i + input_write``, a
  ``VEC``'s local write at ``t + vec_local_write``, its remote writes at
  ``t + vec_remote_write`` on each other core of its mask;
* output port: one beat per cycle at ``t + vec_output`` (beats are also chained in order).

(The latencies are :func:`isa.timing.latencies` of the configuration.)

An operation is ready when every predecessor has issued and ``t >= pred + latency`` for each
(see :mod:`compiler._ops`). Operations never hold resources while waiting, so the scheduler
always finishes.

Accumulators are assigned afterwards (:func:`assign_accumulators`) by interval colouring:
an accumulator is busy from the first write of its value to the last read, and a value may
reuse it once the previous value's last reader has issued.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from compiler._ops import Op, OpGraph, VAcc, write_latency
from isa.config import Config
from isa.instructions import Dest
from isa.timing import latencies

__all__ = ["schedule", "topological_order", "assign_accumulators", "constrain_reuse"]


def _successors(ops: Sequence[Op]) -> list[list[tuple[int, int]]]:
    succ: list[list[tuple[int, int]]] = [[] for _ in ops]
    for op in ops:
        for pred, lat in op.preds:
            succ[pred.index].append((op.index, lat))
    return succ


def topological_order(ops: Sequence[Op]) -> list[Op]:
    """Return ``ops`` in a topological order of their constraints, earliest-created first.

    Raises
    ------
    RuntimeError
        If the constraints have a cycle (a compiler bug).
    """
    succ = _successors(ops)
    count = [len(op.preds) for op in ops]
    heap = [op.index for op in ops if not count[op.index]]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(ops[i])
        for j, _ in succ[i]:
            count[j] -= 1
            if not count[j]:
                heapq.heappush(heap, j)
    if len(order) != len(ops):
        raise RuntimeError("internal error: the operation constraints have a cycle")
    return order


def _tail(op: Op, config: Config) -> int:
    """Return the cycles from ``op``'s issue to its last effect."""
    lat = latencies(config)
    if op.is_mac:
        return lat.mac_acc_write
    if op.fn is not None:
        return lat.fn_write
    if op.dest == Dest.TRAM and op.dbuf is not None and op.dbuf.mask - {op.core}:
        return lat.vec_remote_write
    if op.dest == Dest.ACCS and op.dacc is not None:
        return write_latency(op, op.dacc.core, config)
    return lat.vec_output if op.dest == Dest.OUTPUT else lat.vec_local_write


#: Added to the priority of a VEC that writes tensor RAM or an accumulator: more than any
#: path length.
_FIRST = 1 << 30


def schedule(graph: OpGraph, config: Config, interleave: bool = False,
             long_chains_first: bool = False) -> None:
    """Set the issue ``cycle`` of every operation of ``graph`` (see the module docstring).

    By priority, a core runs its chains a few at a time (as many as the accumulate loop
    needs) and finishes them one after another, which staggers their results; with
    ``interleave`` the ``MAC`` earliest in its chain goes first instead (then priority),
    which advances all of a core's chains together: no issue slot is lost to the
    accumulate loop when fewer chains than ``mac_spacing`` remain, but they finish late.
    With ``long_chains_first`` a ``MAC`` also ranks by the ``MAC`` s created after it in its
    chain (each worth ``mac_spacing`` cycles of that chain's path).
    """
    ops = graph.ops
    n_cores = config.num_cores
    lats = latencies(config)
    mac_write = lats.mac_acc_write
    succ = _successors(ops)
    prio = [0] * len(ops)
    for op in reversed(topological_order(ops)):
        # The issue order of a chain's MACs (one accumulator, constrained when the order is
        # fixed) does not lengthen its path: counting it would rank a chain's first MACs
        # above every other chain's and interleave all the chains of a core.
        prio[op.index] = max([_tail(op, config)]
                             + [lat + prio[j] for j, lat in succ[op.index]
                                if not (op.is_mac and ops[j].is_mac and ops[j].acc is op.acc)])
    sent = {id(op.acc) for op in ops if op.dest == Dest.OUTPUT and op.acc is not None}
    for op in ops:
        if not op.is_mac and op.dest != Dest.OUTPUT and (succ[op.index]
                                                         or id(op.acc) not in sent):
            # Such a VEC finishes a value that other operations, often on other cores, wait
            # for, in one issue slot. By path length alone it would rank below the MACs of
            # the next chains on its core, which would run first and stall those readers.
            # Output VECs keep their rank, so they fill the cycles after a core's last MAC.
            # A value also sent out that nothing in this inference reads (a recurrent
            # state's new value) goes after its output VEC instead.
            prio[op.index] += _FIRST
    if long_chains_first:
        # A chain's MACs in creation order rank by the terms still to come after them, so
        # that the longest remaining chains go first and none is left alone at the end,
        # where the accumulate loop would idle the core between its terms.
        for vacc in graph.vaccs:
            macs = [w for w in vacc.writers if w.is_mac]
            for k, op in enumerate(macs):
                prio[op.index] += lats.mac_spacing * (len(macs) - 1 - k)
    # With interleave, a MAC's position in its chain ranks before its priority.
    rank = [0] * len(ops)
    if interleave:
        for vacc in graph.vaccs:
            for k, op in enumerate(w for w in vacc.writers if w.is_mac):
                rank[op.index] = k
    count = [len(op.preds) for op in ops]
    earliest = [op.release for op in ops]
    tram_busy: list[set[int]] = [set() for _ in range(n_cores)]
    acc_busy: list[set[int]] = [set() for _ in range(n_cores)]
    out_busy: set[int] = set()
    for buf in graph.inputs:
        for core in buf.mask:
            tram_busy[core].add(buf.beat + lats.input_write)
    # Per core: operations whose predecessors have issued, by earliest cycle (waiting) and,
    # once that cycle is reached, by priority (ready).
    waiting: list[list[tuple[int, int]]] = [[] for _ in range(n_cores)]
    ready: list[list[tuple[int, int]]] = [[] for _ in range(n_cores)]
    for op in ops:
        if not count[op.index]:
            waiting[op.core].append((earliest[op.index], op.index))
    for heap in waiting:
        heapq.heapify(heap)
    # Per core: VECs and FNs into an accumulator whose predecessors have all issued. A MAC
    # writes its accumulator `lead` cycles later than such an operation would, so a MAC
    # issued `lead` cycles before it can issue takes its write port; MACs of lower priority
    # yield to them.
    acc_vecs: list[set[int]] = [set() for _ in range(n_cores)]
    for op in ops:
        if not count[op.index] and op.dest == Dest.ACC:
            acc_vecs[op.core].add(op.index)
    lead = [mac_write - write_latency(op, op.core, config) for op in ops]
    # The issue cycle from which the next MAC into each accumulator may issue.
    loop_free: dict[int, int] = {}

    def writes(op: Op, t: int) -> list[tuple[set[int], int]]:
        if op.is_mac:
            return [(acc_busy[op.core], t + mac_write)]
        if op.fn is not None:  # its own core's accumulator or tensor RAM
            busy = acc_busy if op.dest == Dest.ACC else tram_busy
            return [(busy[op.core], t + lats.fn_write)]
        if op.dest == Dest.ACC:
            return [(acc_busy[op.core], t + write_latency(op, op.core, config))]
        if op.dest == Dest.ACCS:
            # The receiving core's MACs may hold that port: the hand-over then waits for a
            # cycle in which that core issued no MAC (its VECs leave the port free).
            assert op.dacc is not None
            return [(acc_busy[op.dacc.core], t + write_latency(op, op.dacc.core, config))]
        if op.dest == Dest.OUTPUT:
            return [(out_busy, t + lats.vec_output)]
        assert op.dbuf is not None
        return [(tram_busy[c], t + write_latency(op, c, config)) for c in op.dbuf.mask]

    remaining = len(ops)
    t = 0
    while remaining:
        issued_any = False
        for core in range(n_cores):
            while waiting[core] and waiting[core][0][0] <= t:
                _, i = heapq.heappop(waiting[core])
                heapq.heappush(ready[core], (rank[i], -prio[i], i))
            blocked = []
            while ready[core]:
                entry = heapq.heappop(ready[core])
                op = ops[entry[2]]
                ports = writes(op, t)
                if any(cycle in busy for busy, cycle in ports) or (op.is_mac and (
                        loop_free.get(id(op.acc), 0) > t or any(
                            earliest[j] <= t + lead[j] and prio[j] > prio[op.index]
                            for j in acc_vecs[core]))):
                    blocked.append(entry)
                    continue
                for busy, cycle in ports:
                    busy.add(cycle)
                if op.is_mac:
                    loop_free[id(op.acc)] = t + lats.mac_spacing
                op.cycle = t
                acc_vecs[core].discard(op.index)
                remaining -= 1
                issued_any = True
                for j, lat in succ[op.index]:
                    earliest[j] = max(earliest[j], t + lat)
                    count[j] -= 1
                    if not count[j]:
                        heapq.heappush(waiting[ops[j].core], (earliest[j], j))
                        if ops[j].dest == Dest.ACC:
                            acc_vecs[ops[j].core].add(j)
                break
            for entry in blocked:
                heapq.heappush(ready[core], entry)
        t += 1
        if not issued_any and not any(ready):
            # Nothing can issue until the next operation's earliest cycle: skip ahead.
            pending = [heap[0][0] for heap in waiting if heap]
            if not pending:
                raise RuntimeError("internal error: operations wait on each other")
            t = max(t, min(pending))


def _assign(vaccs: Sequence[VAcc], start: dict[int, int], end: dict[int, int],
            spread: int) -> dict[int, int]:
    """Colour intervals [start, end] per core with accumulator addresses; return the count
    of addresses per core.

    A value may reuse an address only if it starts after the previous occupant ended. New
    addresses are opened while fewer than ``spread`` are in use, then the least recently
    freed one is reused (spreading reuse out keeps the constraints it adds loose); beyond
    that, an address is opened only when none is free.
    """
    needed: dict[int, int] = {}
    by_core: dict[int, list[VAcc]] = {}
    for v in vaccs:
        by_core.setdefault(v.core, []).append(v)
    for core, values in by_core.items():
        values.sort(key=lambda v: start[id(v)])
        busy: list[tuple[int, int]] = []  # (end, address) of the values in an accumulator
        free: list[tuple[int, int]] = []  # (end of the last occupant, address)
        count = 0
        for v in values:
            while busy and busy[0][0] < start[id(v)]:
                heapq.heappush(free, heapq.heappop(busy))
            if free and count >= spread:
                v.phys = heapq.heappop(free)[1]
            else:
                v.phys = count
                count += 1
            heapq.heappush(busy, (end[id(v)], v.phys))
        needed[core] = count
    return needed


def assign_accumulators(graph: OpGraph) -> dict[int, int]:
    """Assign accumulator addresses from the schedule; return the count needed per core.

    A value occupies its accumulator from the issue of its first writer to the issue of its
    last reader; a later value may take the address from the next cycle on (its writes then
    issue after every read of the old value, and the old value's writes have landed).
    """
    start = {id(v): min(op.cycle for op in v.writers) for v in graph.vaccs}
    end = {id(v): max(op.cycle for op in v.readers) for v in graph.vaccs}
    return _assign(graph.vaccs, start, end, 0)


def constrain_reuse(graph: OpGraph, config: Config) -> dict[int, int]:
    """Assign accumulators on a topological order of the operations and add constraints.

    Used when the schedule needs more accumulators than a core has: the values are
    coloured on positions in a topological order that follows creation (layer by layer),
    which keeps few values live at once, and each value's writers are constrained to issue
    after the previous occupant's readers. Returns the count needed per core; the graph must
    be scheduled again.
    """
    position = {op.index: k for k, op in enumerate(topological_order(graph.ops))}
    start = {id(v): min(position[op.index] for op in v.writers) for v in graph.vaccs}
    end = {id(v): max(position[op.index] for op in v.readers) for v in graph.vaccs}
    needed = _assign(graph.vaccs, start, end, config.accum_store_depth)
    previous: dict[tuple[int, int], VAcc] = {}
    for v in sorted(graph.vaccs, key=lambda v: start[id(v)]):
        key = (v.core, v.phys)
        if key in previous:
            for w in v.writers:
                w.preds.extend((r, 1) for r in previous[key].readers)
        previous[key] = v
    for op in graph.ops:
        op.cycle = -1
    return needed
