"""The VM's fast path: a checked schedule compiled into a few batched numpy steps.

``docs/architecture.md`` §5: under the schedule rules, executing every instruction completely,
in order of issue cycle (input beats first, then cores 0, 1, ... within a cycle), gives the
hardware's result. Any order that keeps each read after the writes it depends on, and each
write after the reads and writes it must follow, gives that same result. The plan therefore
assigns every operation the earliest *level* consistent with those dependencies and executes
level by level: first every read of the level (gather), then every write (scatter), so that
a read and a later write of one location may share a level.

An accumulation *chain* is a ``MAC`` (set or accumulate) or a ``VEC ADD`` of an accumulator
into itself with no clamp, followed by ``MAC`` accumulates and such ``VEC ADD`` instructions
into the same accumulator, with no other access to it in between. All the chains of a level
are one :func:`tile_matvec` over the stack of their tiles, then the fp32 accumulation in
issue order. A chain executes at a point of its span where each member's activation block
holds the value the member reads, so that chains fed by beats or partial sums arriving one
by one still execute as one operation. The ``FN`` s of a level run as one table lookup per
function (:func:`apply_function`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from isa.functions import Function, lut, max_lanes
from isa.instructions import Dest, Fn, Mac, Vec, VecOp
from isa.numerics import bf16_bits_to_f32, canonical_nan, tile_matvec, vec_max, vec_min
from sim._vm_schedule import Schedule, Source

__all__ = ["Memories", "Plan", "VEC_OPS", "round_canonical_to_bf16", "accumulate_chains",
           "apply_function"]

_ZERO = np.float32(0.0)
#: The additive identity of IEEE addition under round-to-nearest: x + (-0) == x for every x,
#: also for x = +0 (+0 + -0 = +0) and x = -0.
_NEG_ZERO = np.float32(-0.0)


@dataclasses.dataclass
class Memories:
    """The machine's mutable memories, all cores stacked, as float32.

    ``tram`` is [num_cores × tensor_ram_depth, B] of bf16-valued float32 (core ``c``'s word
    ``a`` is row ``c × depth + a``; the low 16 bits of every pattern are zero), ``acc`` is
    [num_cores × accum_store_depth, B] of fp32. Weights are [tiles, B, B] per core, widened
    from bf16 once at load, and clamps [clamp_store_depth, 2] per core.
    """

    tram: np.ndarray
    acc: np.ndarray
    weights: list[np.ndarray]
    clamps: list[np.ndarray]
    tram_depth: int
    acc_depth: int

    @property
    def num_cores(self) -> int:
        """The number of cores."""
        return len(self.weights)

    def tram_row(self, core: int, addr: int) -> int:
        """Return the row of ``tram`` holding core ``core``'s word ``addr``."""
        return core * self.tram_depth + addr

    def acc_row(self, core: int, addr: int) -> int:
        """Return the row of ``acc`` holding core ``core``'s word ``addr``."""
        return core * self.acc_depth + addr

    def tile(self, core: int, addr: int) -> np.ndarray:
        """Return weight tile ``addr`` of ``core`` (zero beyond the image)."""
        w = self.weights[core]
        if addr < len(w):
            return w[addr]
        return np.zeros(w.shape[1:], dtype=np.float32)


def _rsub(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.subtract(t, a)


def _pass_a(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a


def _pass_t(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    return t


#: The vector operations on gathered (hence private) float32 operands, as
#: :func:`isa.numerics.vec_op` defines them but without its per-call NaN canonicalisation,
#: which the plan does once per level (NaN-ness propagates through every op and through
#: ``vec_max``/``vec_min``). Run with floating-point warnings silenced.
VEC_OPS: dict[VecOp, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    VecOp.PASS_A: _pass_a,
    VecOp.PASS_T: _pass_t,
    VecOp.ADD: np.add,
    VecOp.SUB: np.subtract,
    VecOp.RSUB: _rsub,
    VecOp.MUL: np.multiply,
    VecOp.MAX: vec_max,
    VecOp.MIN: vec_min,
}


def round_canonical_to_bf16(x: np.ndarray) -> np.ndarray:
    """Return :func:`isa.numerics.round_to_bf16` of ``x``, for ``x`` with canonical NaNs.

    Round to nearest even on the bit pattern, like the contract, but on the whole pattern
    instead of the magnitude: for every non-NaN float32 the magnitude plus the rounding
    increment stays below 2**31, so the sign bit is never disturbed, and the canonical NaN
    ``0x7FC00000`` rounds to itself. Four array operations instead of a dozen.
    """
    u = x.view(np.uint32)
    r = u + np.uint32(0x7FFF)
    r += (u >> np.uint32(16)) & np.uint32(1)
    r &= np.uint32(0xFFFF0000)
    return r.view(np.float32)


def accumulate_chains(init: np.ndarray, d: np.ndarray, steps: list[tuple[int, int]]
                      ) -> np.ndarray:
    """Accumulate tile products into chains' running sums, in issue order.

    Equal to applying :func:`isa.numerics.accumulate` once per product: fp32 additions with
    round-to-nearest-even, NaNs made canonical once at the end (NaN-ness propagates through
    IEEE addition and intermediate payloads never matter, so one pass suffices).

    Parameters
    ----------
    init : numpy.ndarray
        float32 [chains, B]: each chain's starting value, updated in place (-0 for a chain
        that starts with a set: ``-0 + d == d`` exactly).
    d : numpy.ndarray
        float32 [products, B]: the products, step-major: step ``k``'s products are
        ``d[off:off + n]`` for ``(off, n) = steps[k]``, for chains ``0 .. n-1`` (chains sorted
        by decreasing length).
    steps : list of (int, int)
        ``(offset, count)`` of each step.

    Returns
    -------
    numpy.ndarray
        float32 [chains, B], NaNs canonical. Call with floating-point warnings silenced.
    """
    for off, n in steps:
        np.add(init[:n], d[off:off + n], out=init[:n])
    return canonical_nan(init)


def apply_function(function: Function, x: np.ndarray) -> np.ndarray:
    """Return ``FN function`` of bf16-valued float32 blocks ``x`` [n, B] (:mod:`isa.functions`:
    elementwise through :func:`isa.functions.lut`, ``MAX_LANES`` by
    :func:`isa.functions.max_lanes`), as bf16-valued float32 with canonical NaNs."""
    bits = (x.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    r = max_lanes(bits) if function == Function.MAX_LANES else lut(function)[bits]
    return bf16_bits_to_f32(r)


@dataclasses.dataclass
class _Op:
    """One operation for the level scheduler: its sources and the row ids it reads and
    writes. It executes at position ``lo`` (+ 0.5 for a chain) of the execution order; a
    chain can still take members while its position stays below ``hi``."""

    kind: str
    srcs: list[Source]
    reads: set[int]
    writes: set[int]
    lo: int
    hi: float = float("inf")


@dataclasses.dataclass
class _ChainGroup:
    m: int
    w: np.ndarray | None
    mac_rows: np.ndarray | None
    mac_pos: np.ndarray | None
    add_rows: np.ndarray | None
    add_pos: np.ndarray | None
    steps: list[tuple[int, int]]
    init_rows: np.ndarray | None
    set_rows: np.ndarray | None
    dst: np.ndarray


@dataclasses.dataclass
class _VecGroup:
    n: int
    a_rows: np.ndarray | None
    t_rows: np.ndarray | None
    ops: list[tuple[VecOp, int, int]]
    lo: np.ndarray | None
    hi: np.ndarray | None
    acc_rows: np.ndarray | None
    acc_dst: np.ndarray | None
    round_rows: np.ndarray | None
    tram_rep: np.ndarray | None
    tram_dst: np.ndarray | None
    out_rep: np.ndarray | None
    out_dst: np.ndarray | None


@dataclasses.dataclass
class _FnGroup:
    t_rows: np.ndarray
    fns: list[tuple[Function, int, int]]
    acc_rows: np.ndarray | None
    acc_dst: np.ndarray | None
    tram_rows: np.ndarray | None
    tram_dst: np.ndarray | None


@dataclasses.dataclass
class _Level:
    in_src: np.ndarray | None = None
    in_dst: np.ndarray | None = None
    chains: _ChainGroup | None = None
    vec: _VecGroup | None = None
    fn: _FnGroup | None = None


def _rows(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.intp)


def _acc_of(src: Source) -> int:
    assert isinstance(src.instr, Mac | Vec)
    return src.instr.acc


def _vec(src: Source) -> Vec:
    assert isinstance(src.instr, Vec)
    return src.instr


def _fn(src: Source) -> Fn:
    assert isinstance(src.instr, Fn)
    return src.instr


class Plan:
    """A checked schedule compiled for fast execution.

    Parameters
    ----------
    schedule : Schedule
        The output of :func:`sim._vm_schedule.analyse` (rules already checked).
    mem : Memories
        The memories the plan will run on (their layout and the weights and clamps).
    input_dests : numpy.ndarray
        The program's ``input_dests``.
    """

    def __init__(self, schedule: Schedule, mem: Memories, input_dests: np.ndarray) -> None:
        self.n_out = schedule.n_out
        self._ram_ids = len(mem.tram)
        self._out_slot = {a.src: a.addr for a in schedule.writes if a.memory == "out"}
        ops = self._operations(schedule, mem, input_dests)
        levels: dict[int, list[_Op]] = defaultdict(list)
        for op, level in zip(ops, self._levels(ops), strict=True):
            levels[level].append(op)
        self.levels = [self._build(levels[k], mem, input_dests) for k in sorted(levels)]

    # -- planning ------------------------------------------------------------------------

    def _acc_id(self, mem: Memories, core: int, addr: int) -> int:
        # Tensor-RAM rows and accumulator rows share one id space for the scheduler.
        return self._ram_ids + mem.acc_row(core, addr)

    def _member(self, src: Source, mem: Memories) -> tuple[int, int, bool, bool] | None:
        """Return ``(accumulator id, activation row, head reads the accumulator, continues a
        chain)`` if ``src`` can be an accumulation-chain member, else None."""
        instr = src.instr
        if isinstance(instr, Mac):
            return (self._acc_id(mem, src.core, instr.acc),
                    mem.tram_row(src.core, instr.tram), bool(instr.accumulate),
                    bool(instr.accumulate))
        if (isinstance(instr, Vec) and instr.op == VecOp.ADD and instr.dest == Dest.ACC
                and instr.addr == instr.acc
                and mem.clamps[src.core][instr.clamp].tolist() == [-np.inf, np.inf]):
            return (self._acc_id(mem, src.core, instr.acc),
                    mem.tram_row(src.core, instr.tram), True, True)
        return None

    def _accesses(self, src: Source, mem: Memories, input_dests: np.ndarray
                  ) -> tuple[str, set[int], set[int]]:
        """Return the kind, reads and writes of a source that is not a chain member."""
        instr = src.instr
        if src.core < 0:
            mask, addr = (int(v) for v in input_dests[src.pc])
            return "in", set(), {mem.tram_row(d, addr) for d in range(mem.num_cores)
                                 if mask >> d & 1}
        if isinstance(instr, Fn):
            dst = (mem.tram_row(src.core, instr.addr) if instr.dest == Dest.TRAM
                   else self._acc_id(mem, src.core, instr.addr))
            return "fn", {mem.tram_row(src.core, instr.tram)}, {dst}
        if not isinstance(instr, Vec):
            return "none", set(), set()
        reads = set()
        if instr.op != VecOp.PASS_T:
            reads.add(self._acc_id(mem, src.core, instr.acc))
        if instr.op != VecOp.PASS_A:
            reads.add(mem.tram_row(src.core, instr.tram))
        writes = set()
        if instr.dest == Dest.ACC:
            writes.add(self._acc_id(mem, src.core, instr.addr))
        elif instr.dest == Dest.TRAM:
            writes = {mem.tram_row(d, instr.addr) for d in range(mem.num_cores)
                      if instr.cores >> d & 1}
        elif instr.dest == Dest.ACCS:
            writes = {self._acc_id(mem, d, instr.addr) for d in range(mem.num_cores)
                      if instr.cores >> d & 1}
        return "vec", reads, writes

    def _operations(self, schedule: Schedule, mem: Memories, input_dests: np.ndarray
                    ) -> list[_Op]:
        """Return the operations in an execution order equivalent to the issue order.

        A chain runs at a single position P of its span: member ``j`` (at position
        ``p_j``) must see there the value of its activation block at ``p_j``, so no write
        to that block may lie between ``p_j`` and P. Writes before a member raise the
        chain's lower bound ``lo``; writes after a member lower its upper bound ``hi``; a
        member that would make ``lo >= hi`` starts a new chain instead. P = lo + 0.5.
        """
        ops: list[_Op] = []
        open_chains: dict[int, _Op] = {}
        readers: dict[int, list[_Op]] = defaultdict(list)
        last_write: dict[int, int] = {}
        for pos, src in enumerate(schedule.sources):
            member = self._member(src, mem)
            if member is not None:
                aid, xid, head_reads_acc, continues = member
                chain = open_chains.get(aid)
                lo = -1 if chain is None else max(chain.lo, last_write.get(xid, -1))
                if chain is not None and continues and lo < chain.hi:
                    chain.lo = lo
                    chain.srcs.append(src)
                    chain.reads.add(xid)
                else:
                    chain = _Op("chain", [src], {xid, aid} if head_reads_acc else {xid},
                                {aid}, pos)
                    open_chains[aid] = chain
                    ops.append(chain)
                readers[xid].append(chain)
                writes = {aid}
            else:
                kind, reads, writes = self._accesses(src, mem, input_dests)
                if kind == "none":
                    continue
                for loc in reads | writes:
                    # Any other use of an accumulator ends its chain.
                    open_chains.pop(loc, None)
                for loc in writes:
                    for chain in readers.get(loc, ()):
                        chain.hi = min(chain.hi, pos)
                ops.append(_Op(kind, [src], reads, writes, pos))
            for loc in writes:
                last_write[loc] = pos
        return sorted(ops, key=lambda op: (op.lo, op.kind == "chain", op.srcs[0].key))

    @staticmethod
    def _levels(ops: list[_Op]) -> list[int]:
        """Return the earliest level of each operation (ASAP over the dependencies)."""
        last_w: dict[int, int] = {}
        last_r: dict[int, int] = {}
        out = []
        for op in ops:
            level = 0
            for loc in op.reads:
                level = max(level, last_w.get(loc, -1) + 1)
            for loc in op.writes:
                level = max(level, last_w.get(loc, -1) + 1, last_r.get(loc, 0))
            for loc in op.reads:
                last_r[loc] = max(last_r.get(loc, 0), level)
            for loc in op.writes:
                last_w[loc] = level
            out.append(level)
        return out

    def _build(self, ops: list[_Op], mem: Memories, input_dests: np.ndarray) -> _Level:
        level = _Level()
        ins = [op.srcs[0] for op in ops if op.kind == "in"]
        if ins:
            src_rows, dst_rows = [], []
            for s in ins:
                mask, addr = (int(v) for v in input_dests[s.pc])
                for d in range(mem.num_cores):
                    if mask >> d & 1:
                        src_rows.append(s.pc)
                        dst_rows.append(mem.tram_row(d, addr))
            level.in_src, level.in_dst = _rows(src_rows), _rows(dst_rows)
        chains = [op.srcs for op in ops if op.kind == "chain"]
        if chains:
            level.chains = self._build_chains(chains, mem)
        vecs = [op.srcs[0] for op in ops if op.kind == "vec"]
        if vecs:
            level.vec = self._build_vecs(vecs, mem)
        fns = [op.srcs[0] for op in ops if op.kind == "fn"]
        if fns:
            level.fn = self._build_fns(fns, mem)
        return level

    @staticmethod
    def _build_chains(chains: list[list[Source]], mem: Memories) -> _ChainGroup:
        chains = sorted(chains, key=len, reverse=True)
        tiles, mac_rows, mac_pos, add_rows, add_pos, steps = ([] for _ in range(6))
        m = 0
        for k in range(len(chains[0])):
            members = [ch[k] for ch in chains if len(ch) > k]
            steps.append((m, len(members)))
            for s in members:
                if isinstance(s.instr, Mac):
                    tiles.append(mem.tile(s.core, s.instr.weight))
                    mac_rows.append(mem.tram_row(s.core, s.instr.tram))
                    mac_pos.append(m)
                else:
                    add_rows.append(mem.tram_row(s.core, _vec(s).tram))
                    add_pos.append(m)
                m += 1
        heads = [ch[0] for ch in chains]
        dst = _rows([mem.acc_row(s.core, _acc_of(s)) for s in heads])
        sets = [i for i, s in enumerate(heads) if isinstance(s.instr, Mac)
                and not s.instr.accumulate]
        mixed = bool(tiles) and bool(add_rows)
        return _ChainGroup(
            m=m,
            w=np.ascontiguousarray(np.stack(tiles)) if tiles else None,
            mac_rows=_rows(mac_rows) if tiles else None,
            mac_pos=_rows(mac_pos) if mixed else None,
            add_rows=_rows(add_rows) if add_rows else None,
            add_pos=_rows(add_pos) if mixed else None,
            steps=steps,
            init_rows=None if len(sets) == len(heads) else dst,
            set_rows=_rows(sets) if sets and len(sets) < len(heads) else None,
            dst=dst,
        )

    def _build_vecs(self, vecs: list[Source], mem: Memories) -> _VecGroup:
        vecs = sorted(vecs, key=lambda s: _vec(s).op)
        instrs = [_vec(s) for s in vecs]
        ops: list[tuple[VecOp, int, int]] = []
        for i, ins in enumerate(instrs):
            if ops and ops[-1][0] == ins.op:
                ops[-1] = (ops[-1][0], ops[-1][1], i + 1)
            else:
                ops.append((VecOp(ins.op), i, i + 1))
        need_a = any(i.op != VecOp.PASS_T for i in instrs)
        need_t = any(i.op != VecOp.PASS_A for i in instrs)
        bounds = np.stack([mem.clamps[s.core][i.clamp] for s, i in zip(vecs, instrs, strict=True)])
        lo, hi = bounds[:, :1], bounds[:, 1:]
        acc_rows, acc_dst, rnd_rows, tram_rep, tram_dst, out_rep, out_dst = ([] for _ in range(7))
        for i, (s, ins) in enumerate(zip(vecs, instrs, strict=True)):
            if ins.dest == Dest.ACC:
                acc_rows.append(i)
                acc_dst.append(mem.acc_row(s.core, ins.addr))
                continue
            if ins.dest == Dest.ACCS:
                for d in range(mem.num_cores):
                    if ins.cores >> d & 1:
                        acc_rows.append(i)
                        acc_dst.append(mem.acc_row(d, ins.addr))
                continue
            j = len(rnd_rows)
            rnd_rows.append(i)
            if ins.dest == Dest.TRAM:
                for d in range(mem.num_cores):
                    if ins.cores >> d & 1:
                        tram_rep.append(j)
                        tram_dst.append(mem.tram_row(d, ins.addr))
            else:
                out_rep.append(j)
                out_dst.append(self._out_slot[s])

        def opt(values: list[int]) -> np.ndarray | None:
            return _rows(values) if values else None

        return _VecGroup(
            n=len(vecs),
            a_rows=_rows([mem.acc_row(s.core, i.acc) for s, i in zip(vecs, instrs, strict=True)])
            if need_a else None,
            t_rows=_rows([mem.tram_row(s.core, i.tram) for s, i in zip(vecs, instrs, strict=True)])
            if need_t else None,
            ops=ops,
            # A bound of -inf (low) or +inf (high) leaves every value, NaN and signed zeros
            # included, exactly unchanged, so a side with no finite bound is skipped.
            lo=lo if (lo != -np.inf).any() else None,
            hi=hi if (hi != np.inf).any() else None,
            acc_rows=opt(acc_rows), acc_dst=opt(acc_dst),
            round_rows=None if rnd_rows == list(range(len(vecs))) else opt(rnd_rows),
            tram_rep=opt(tram_rep), tram_dst=opt(tram_dst),
            out_rep=opt(out_rep), out_dst=opt(out_dst),
        )

    @staticmethod
    def _build_fns(fns: list[Source], mem: Memories) -> _FnGroup:
        srcs = sorted(fns, key=lambda s: _fn(s).fn)
        instrs = [_fn(s) for s in srcs]
        groups: list[tuple[Function, int, int]] = []
        for i, ins in enumerate(instrs):
            if groups and groups[-1][0] == ins.fn:
                groups[-1] = (groups[-1][0], groups[-1][1], i + 1)
            else:
                groups.append((Function(ins.fn), i, i + 1))
        acc_rows, acc_dst, tram_rows, tram_dst = [], [], [], []
        for i, (s, ins) in enumerate(zip(srcs, instrs, strict=True)):
            if ins.dest == Dest.TRAM:
                tram_rows.append(i)
                tram_dst.append(mem.tram_row(s.core, ins.addr))
            else:
                acc_rows.append(i)
                acc_dst.append(mem.acc_row(s.core, ins.addr))

        def opt(values: list[int]) -> np.ndarray | None:
            return _rows(values) if values else None

        return _FnGroup(
            t_rows=_rows([mem.tram_row(s.core, i.tram) for s, i in zip(srcs, instrs, strict=True)]),
            fns=groups, acc_rows=opt(acc_rows), acc_dst=opt(acc_dst),
            tram_rows=opt(tram_rows), tram_dst=opt(tram_dst))

    # -- execution -----------------------------------------------------------------------

    def run(self, mem: Memories, beats: np.ndarray) -> np.ndarray:
        """Execute one inference on ``mem``; return the output beats (float32 [n_out, B]).

        ``beats`` are the input beats as bf16-valued float32 [n_in, B].
        """
        tram, acc = mem.tram, mem.acc
        out = np.empty((self.n_out, tram.shape[1]), dtype=np.float32)
        with np.errstate(all="ignore"):
            for lv in self.levels:
                # Gather and compute everything the level reads before any of its writes.
                if lv.chains is not None:
                    g = lv.chains
                    if g.w is not None:
                        d = tile_matvec(g.w, tram[g.mac_rows])
                        if g.add_rows is not None:
                            products = d
                            d = np.empty((g.m, tram.shape[1]), dtype=np.float32)
                            d[g.mac_pos] = products
                            d[g.add_pos] = tram[g.add_rows]
                    else:
                        d = tram[g.add_rows]
                    if g.init_rows is None:
                        sums = accumulate_chains(d[: g.steps[0][1]].copy(), d, g.steps[1:])
                    else:
                        init = acc[g.init_rows]
                        if g.set_rows is not None:
                            init[g.set_rows] = _NEG_ZERO
                        sums = accumulate_chains(init, d, g.steps)
                if lv.vec is not None:
                    v = lv.vec
                    a = acc[v.a_rows] if v.a_rows is not None else _ZERO
                    t = tram[v.t_rows] if v.t_rows is not None else _ZERO
                    if len(v.ops) == 1:
                        r = VEC_OPS[v.ops[0][0]](a, t)
                    else:
                        r = np.empty((v.n, tram.shape[1]), dtype=np.float32)
                        for op, lo, hi in v.ops:
                            r[lo:hi] = VEC_OPS[op](a[lo:hi] if v.a_rows is not None else a,
                                                   t[lo:hi] if v.t_rows is not None else t)
                    if v.lo is not None:
                        r = vec_max(r, v.lo)
                    if v.hi is not None:
                        r = vec_min(r, v.hi)
                    r = canonical_nan(r)
                    if v.tram_rep is not None or v.out_rep is not None:
                        rb = round_canonical_to_bf16(r if v.round_rows is None
                                                     else r[v.round_rows])
                if lv.fn is not None:
                    f = lv.fn
                    x = tram[f.t_rows]
                    fr = np.empty_like(x)
                    for function, lo, hi in f.fns:
                        fr[lo:hi] = apply_function(function, x[lo:hi])
                # Then the writes.
                if lv.in_dst is not None:
                    tram[lv.in_dst] = beats[lv.in_src]
                if lv.chains is not None:
                    acc[lv.chains.dst] = sums
                if lv.vec is not None:
                    if v.acc_rows is not None:
                        acc[v.acc_dst] = r[v.acc_rows]
                    if v.tram_rep is not None:
                        tram[v.tram_dst] = rb[v.tram_rep]
                    if v.out_rep is not None:
                        out[v.out_dst] = rb[v.out_rep]
                if lv.fn is not None:
                    if f.acc_rows is not None:
                        acc[f.acc_dst] = fr[f.acc_rows]
                    if f.tram_rows is not None:
                        tram[f.tram_dst] = fr[f.tram_rows]
        return out
