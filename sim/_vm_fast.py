"""The VM's compiled path: a checked schedule executed in issue order by numba-compiled code.

``docs/architecture.md`` §5: under the schedule rules, executing every instruction completely,
in order of issue cycle (input beats first, then cores 0, 1, ... within a cycle), gives the
hardware's result. The numpy executor (:mod:`sim._vm_plan`) regroups that order into batched
steps; this module does not regroup anything: it flattens the schedule's sources, in that
order, into a table of integer operations once at load and executes the table with one
compiled loop per call, for one inference or for a whole sequence of inferences. It takes
the order and the output-beat slots from :func:`sim._vm_schedule.analyse` and no latency from
anywhere, so it follows any change to the machine's timing.

The arithmetic is the contract of :mod:`isa.numerics`, lane by lane: float32 products and
sums with IEEE round-to-nearest-even and gradual underflow (numba's default: no fast-math,
so no reassociation, contraction into FMA or flush-to-zero), the dot product's fixed binary
tree, ``MAX``/``MIN`` with the contract's NaN and signed-zero rules, and every NaN stored made
canonical. ``tests/test_vm_fast.py`` checks it bit for bit against the numpy executor.

The kernel is compiled on first use and cached on disk by numba (``cache=True``: in
``__pycache__`` next to this file, or under ``NUMBA_CACHE_DIR``); :func:`compile_info`
reports what the first call in this process cost.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time

import numpy as np

from isa.functions import Function, lut
from isa.instructions import Dest, End, Fn, Mac, Vec, VecOp, Wait
from isa.numerics import CANONICAL_NAN_F32
from sim._vm_plan import Memories
from sim._vm_schedule import OUT, Schedule

__all__ = ["AVAILABLE", "FastPlan", "compile_info"]

#: Whether the compiled path can run (numba installed; it is imported on first use, which
#: keeps ``import sim`` light).
AVAILABLE = importlib.util.find_spec("numba") is not None

# Operation kinds: the first column of the operation table (FastPlan builds the others).
_IN, _MAC, _VEC, _FN = 0, 1, 2, 3
# isa's encodings the kernel uses, as literals: numba folds globals into the compiled code
# and its disk cache is invalidated only by a change of this file, so a change in isa must
# fail here (and be copied here) rather than leave a stale kernel in the cache.
_D_ACC, _D_TRAM, _D_OUT, _D_ACCS = 0, 1, 2, 3
_PASS_A, _PASS_T, _ADD, _SUB, _RSUB, _MUL, _MAX, _MIN = 0, 1, 2, 3, 4, 5, 6, 7
_NAN_BITS = 0x7FC00000
_MAX_LANES = 13
if ((_D_ACC, _D_TRAM, _D_OUT, _D_ACCS) != tuple(Dest)
        or (_PASS_A, _PASS_T, _ADD, _SUB, _RSUB, _MUL, _MAX, _MIN) != tuple(VecOp)
        or _NAN_BITS != CANONICAL_NAN_F32 or _MAX_LANES != Function.MAX_LANES):
    raise ImportError("isa's Dest, VecOp, Function.MAX_LANES or CANONICAL_NAN_F32 changed: "
                      "update the literals of sim/_vm_fast.py (and its kernel)")


def _max(a, b):  # noqa: ANN001, ANN202
    """``isa.numerics.vec_max`` of two float32 scalars (a NaN result not yet canonical)."""
    if a != a or b != b:
        return a + b
    if a == 0 and b == 0:
        # Of two zeros, +0 unless both are -0.
        return b if math.copysign(1.0, a) < 0 else a
    return a if a > b else b


def _min(a, b):  # noqa: ANN001, ANN202
    """``isa.numerics.vec_min`` of two float32 scalars (a NaN result not yet canonical)."""
    if a != a or b != b:
        return a + b
    if a == 0 and b == 0:
        # Of two zeros, -0 unless both are +0.
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def _kernel(ops, tram, acc, weights, clamps, luts, beats, out,  # noqa: ANN001, ANN202
            tram_depth, acc_depth, num_cores, round_inputs):
    """Execute ``ops`` once per inference of ``beats`` [n, n_in, B] into ``out`` [n, n_out, B].

    Input beats are rounded to bf16 here (``isa.numerics.round_to_bf16``) if
    ``round_inputs``, else stored as they are.

    ``tram`` and ``acc`` are updated in place. ``weights`` holds the tiles' bf16 patterns
    transposed to [tile, j, i] (input lane j, output lane i): every inner loop of a ``MAC``
    runs over consecutive output lanes and compiles to vector instructions, while each lane
    still computes exactly the contract's sequence of roundings, and the weights stream from
    memory at two bytes a value. ``clamps`` is [cores × depth, 2]. ``luts`` [function,
    65,536] holds every elementwise function's results (:func:`isa.functions.lut`) as bf16
    patterns (the ``MAX_LANES`` row is unused).
    """
    b = tram.shape[1]
    nan = np.uint32(_NAN_BITS).view(np.float32)  # isa.numerics.CANONICAL_NAN_F32
    # The dot-product tree, one level after another with no overlap between a level's rows
    # and the next's (so that the loops vectorise): the first level's B/2 sums in rows
    # [0, B/2), the second level's B/4 after them, ...
    tree = np.empty((b, b), np.float32)
    r = np.empty(b, np.float32)
    for n in range(beats.shape[0]):
        for k in range(ops.shape[0]):
            kind = ops[k, 0]
            if kind == _IN:
                beat, mask, addr = ops[k, 1], ops[k, 2], ops[k, 3]
                for i in range(b):
                    v = beats[n, beat, i]
                    r[i] = _round_bf16(nan if v != v else v) if round_inputs else v
                for d in range(num_cores):
                    if (mask >> d) & 1:
                        row = d * tram_depth + addr
                        for i in range(b):
                            tram[row, i] = r[i]
            elif kind == _FN:
                fn, trow, row = ops[k, 1], ops[k, 2], ops[k, 3]
                if fn == _MAX_LANES:
                    # isa.functions.max_lanes: vec_max folded over the lanes in order.
                    m = tram[trow, 0]
                    for i in range(1, b):
                        m = _max(m, tram[trow, i])
                    for i in range(b):
                        r[i] = nan if m != m else m
                else:
                    for i in range(b):
                        bits = np.float32(tram[trow, i]).view(np.uint32) >> np.uint32(16)
                        r[i] = _widen(luts[fn, bits])
                # The row is of acc (dest ACC) or tram (dest TRAM), chosen at load.
                dst = acc if ops[k, 4] == _D_ACC else tram
                for i in range(b):
                    dst[row, i] = r[i]
            elif kind == _MAC:
                arow, xrow, tile, accumulate = ops[k, 1], ops[k, 2], ops[k, 3], ops[k, 4]
                # Products and the first level of the contract's tree (lane 2j plus lane
                # 2j + 1), then the other levels.
                for j in range(b // 2):
                    x0, x1 = tram[xrow, 2 * j], tram[xrow, 2 * j + 1]
                    for i in range(b):
                        tree[j, i] = _widen(weights[tile, 2 * j, i]) * x0 + \
                            _widen(weights[tile, 2 * j + 1, i]) * x1
                src, dst, width = 0, b // 2, b // 2
                while width > 1:
                    width //= 2
                    for j in range(width):
                        for i in range(b):
                            tree[dst + j, i] = tree[src + 2 * j, i] + tree[src + 2 * j + 1, i]
                    src, dst = dst, dst + width
                for i in range(b):
                    v = acc[arow, i] + tree[src, i] if accumulate else tree[src, i]
                    acc[arow, i] = nan if v != v else v
            else:
                op, arow, trow, crow = ops[k, 1], ops[k, 2], ops[k, 3], ops[k, 4]
                dest, addr, mask = ops[k, 5], ops[k, 6], ops[k, 7]
                # One loop per operation, so that the common ones compile to vector code.
                if op == _PASS_A:
                    for i in range(b):
                        r[i] = acc[arow, i]
                elif op == _PASS_T:
                    for i in range(b):
                        r[i] = tram[trow, i]
                elif op == _ADD:
                    for i in range(b):
                        r[i] = acc[arow, i] + tram[trow, i]
                elif op == _SUB:
                    for i in range(b):
                        r[i] = acc[arow, i] - tram[trow, i]
                elif op == _RSUB:
                    for i in range(b):
                        r[i] = tram[trow, i] - acc[arow, i]
                elif op == _MUL:
                    for i in range(b):
                        r[i] = acc[arow, i] * tram[trow, i]
                elif op == _MAX:
                    for i in range(b):
                        r[i] = _max(acc[arow, i], tram[trow, i])
                else:  # _MIN, the last VecOp (checked at import)
                    for i in range(b):
                        r[i] = _min(acc[arow, i], tram[trow, i])
                # A bound of -inf (low) or +inf (high) leaves every value exactly unchanged,
                # NaN and signed zeros included (vec_max, vec_min): such a side is skipped.
                lo, hi = clamps[crow, 0], clamps[crow, 1]
                if lo != -np.inf:
                    for i in range(b):
                        r[i] = _max(r[i], lo)
                if hi != np.inf:
                    for i in range(b):
                        r[i] = _min(r[i], hi)
                for i in range(b):
                    if r[i] != r[i]:
                        r[i] = nan
                if dest == _D_ACC or dest == _D_ACCS:
                    for d in range(num_cores):
                        if (mask >> d) & 1:
                            row = d * acc_depth + addr
                            for i in range(b):
                                acc[row, i] = r[i]
                    continue
                for i in range(b):
                    r[i] = _round_bf16(r[i])
                if dest == _D_OUT:
                    for i in range(b):
                        out[n, addr, i] = r[i]
                else:
                    for d in range(num_cores):
                        if (mask >> d) & 1:
                            row = d * tram_depth + addr
                            for i in range(b):
                                tram[row, i] = r[i]


def _widen(bits):  # noqa: ANN001, ANN202
    """The float32 value of a bf16 pattern (exact)."""
    return np.uint32(np.uint32(bits) << np.uint32(16)).view(np.float32)


def _round_bf16(x):  # noqa: ANN001, ANN202
    """``isa.numerics.round_to_bf16`` of a float32 scalar with canonical NaN.

    Round to nearest even on the pattern, as ``sim._vm_plan.round_canonical_to_bf16``: with
    canonical NaNs the increment never reaches the sign bit.
    """
    u = np.float32(x).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return np.uint32(u).view(np.float32)


@functools.cache
def _luts() -> np.ndarray:
    """Return every elementwise function's :func:`isa.functions.lut`, one row per
    :class:`isa.functions.Function` (the ``MAX_LANES`` row zero)."""
    return np.stack([lut(f) if f != Function.MAX_LANES else np.zeros(1 << 16, np.uint16)
                     for f in Function])


_jitted = None
_compile_info: dict[str, float | bool] = {}


def _compiled():  # noqa: ANN202
    """Return the compiled kernel, compiling it (or loading numba's disk cache) once."""
    global _jitted, _max, _min, _round_bf16, _widen
    if _jitted is None:
        start = time.perf_counter()
        import numba

        # The helpers first: the kernel calls the compiled versions.
        jit = numba.njit(cache=True, nogil=True)
        _max, _min, _round_bf16, _widen = jit(_max), jit(_min), jit(_round_bf16), jit(_widen)
        i64, f32, u16 = numba.int64, numba.float32, numba.uint16
        sig = numba.void(i64[:, ::1], f32[:, ::1], f32[:, ::1], u16[:, :, ::1], f32[:, ::1],
                         u16[:, ::1], f32[:, :, ::1], f32[:, :, ::1], i64, i64, i64,
                         numba.boolean)
        kernel = numba.njit(sig, cache=True, nogil=True)(_kernel)
        # The first call of a compiled function costs a few milliseconds more: pay it here.
        mem = np.zeros((1, 2), np.float32)
        kernel(np.zeros((0, 8), np.int64), mem, mem.copy(), np.zeros((1, 2, 2), np.uint16),
               mem.copy(), np.zeros((1, 1), np.uint16), np.zeros((0, 1, 2), np.float32),
               np.zeros((0, 0, 2), np.float32), 1, 1, 1, True)
        _compile_info["seconds"] = time.perf_counter() - start
        _compile_info["from_disk_cache"] = sum(kernel.stats.cache_hits.values()) > 0
        _jitted = kernel
    return _jitted


def compile_info() -> dict[str, float | bool]:
    """Return what making the kernel ready cost in this process.

    Returns
    -------
    dict
        ``seconds``: compiling it, or loading it from numba's disk cache, plus its first
        call; ``from_disk_cache``: whether it was loaded. Empty before the first
        :class:`FastPlan`.
    """
    return dict(_compile_info)


class FastPlan:
    """A checked schedule as a table of operations for the compiled kernel.

    Parameters
    ----------
    schedule : Schedule
        The output of :func:`sim._vm_schedule.analyse` (rules already checked).
    mem : Memories
        The memories the plan will run on (their layout and the weights and clamps).
    input_dests : numpy.ndarray
        The program's ``input_dests``.

    Raises
    ------
    RuntimeError
        If numba is not installed (:data:`AVAILABLE` is False).
    """

    def __init__(self, schedule: Schedule, mem: Memories, input_dests: np.ndarray) -> None:
        if not AVAILABLE:
            raise RuntimeError("the compiled VM needs numba: pip install -r requirements.txt")
        self._kernel = _compiled()
        self.n_out = schedule.n_out
        b = mem.tram.shape[1]
        # Tiles of all cores, transposed, then one zero tile for addresses beyond an image.
        offsets = np.cumsum([0] + [len(w) for w in mem.weights])
        zero_tile = int(offsets[-1])
        self._weights = np.zeros((zero_tile + 1, b, b), np.uint16)
        for c, w in enumerate(mem.weights):
            bits = w.view(np.uint32) >> np.uint32(16)
            self._weights[offsets[c]:offsets[c + 1]] = bits.transpose(0, 2, 1)
        depth = len(mem.clamps[0])
        self._clamps = np.ascontiguousarray(np.concatenate(mem.clamps), dtype=np.float32)
        out_slot = {a.src: a.addr for a in schedule.writes if a.memory == OUT}
        rows = []
        for src in schedule.sources:
            instr, c = src.instr, src.core
            if c < 0:
                mask, addr = (int(v) for v in input_dests[src.pc])
                rows.append((_IN, src.pc, mask, addr, 0, 0, 0, 0))
            elif isinstance(instr, Mac):
                tile = (offsets[c] + instr.weight if instr.weight < len(mem.weights[c])
                        else zero_tile)
                rows.append((_MAC, mem.acc_row(c, instr.acc), mem.tram_row(c, instr.tram),
                             tile, instr.accumulate, 0, 0, 0))
            elif isinstance(instr, Vec):
                if instr.dest == Dest.OUTPUT:
                    addr, mask = out_slot[src], 0
                elif instr.dest == Dest.ACC:
                    addr, mask = instr.addr, 1 << c
                else:
                    addr, mask = instr.addr, instr.cores
                rows.append((_VEC, instr.op, mem.acc_row(c, instr.acc),
                             mem.tram_row(c, instr.tram), c * depth + instr.clamp, instr.dest,
                             addr, mask))
            elif isinstance(instr, Fn):
                row = (mem.tram_row(c, instr.addr) if instr.dest == Dest.TRAM
                       else mem.acc_row(c, instr.addr))
                rows.append((_FN, instr.fn, mem.tram_row(c, instr.tram), row, instr.dest,
                             0, 0, 0))
            elif not isinstance(instr, End | Wait):
                raise NotImplementedError(f"sim/_vm_fast.py cannot execute {instr}: teach it "
                                          "the new instruction, or use executor='numpy'")
        self._ops = np.array(rows, dtype=np.int64).reshape(-1, 8)
        # The tables cost most of a second to build: only for programs that use them.
        self._luts = _luts() if (self._ops[:, 0] == _FN).any() else np.zeros((1, 1), np.uint16)
        self._layout = (mem.tram_depth, mem.acc_depth, mem.num_cores)
        self._out_beats = (self.n_out, b)

    def run(self, mem: Memories, beats: np.ndarray, round_inputs: bool = True) -> np.ndarray:
        """Execute inferences on ``mem``; return their output beats.

        Parameters
        ----------
        mem : Memories
            Updated in place.
        beats : numpy.ndarray
            float32 input beats, [n_in, B] for one inference or [inferences, n_in, B] for
            a sequence run back to back.
        round_inputs : bool
            Round the beats to bf16 (``isa.numerics.round_to_bf16``); False: they are bf16
            values already and are stored as they are (NaN payloads included).

        Returns
        -------
        numpy.ndarray
            float32 [n_out, B], or [inferences, n_out, B].
        """
        one = beats.ndim == 2
        many = beats[np.newaxis] if one else beats
        if many.dtype != np.float32 or not many.flags.c_contiguous:
            many = np.ascontiguousarray(many, dtype=np.float32)
        out = np.empty((len(many), *self._out_beats), np.float32)
        self._kernel(self._ops, mem.tram, mem.acc, self._weights, self._clamps, self._luts, many,
                     out, *self._layout, round_inputs)
        return out[0] if one else out
