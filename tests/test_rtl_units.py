"""Unit tests of the RTL (``rtl/``) in Amaranth's simulator, on small configurations.

Each test runs a hand-built program on the ``"native"`` flavour of :class:`rtl.top.Top` and
compares, bit for bit and cycle for cycle, its output beats (value and cycle), done cycles,
issue trace and final tensor-RAM / accumulator contents with the reference below: the
programs' instructions executed one by one in issue-cycle order, which is the machine's
semantics for a hazard-free program (``docs/architecture.md`` §5), with the numerics of
``isa/numerics.py`` and the cycles of ``isa/timing.py`` / ``Program``; and with the VM
(``sim.vm``, the executable specification), which also checks that each hand-built program
obeys the static-schedule rules.

The instance flavour (Verilog) is exercised by co-simulation; here only its generation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np
import pytest
from amaranth.sim import Simulator

from isa.config import Config, Depths
from isa.instructions import (
    Dest,
    End,
    Instruction,
    Mac,
    Vec,
    VecOp,
    Wait,
    decode_program,
    encode_program,
)
from isa.numerics import (
    accumulate,
    bf16_bits_to_f32,
    clamp,
    f32_bits,
    f32_to_bf16_bits,
    pack_beats,
    tile_matvec,
    unpack_beats,
    vec_op,
)
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import issue_cycles, latencies
from rtl.top import Top
from sim.vm import VM, ScheduleError

pytestmark = pytest.mark.timeout(400)

# The hand-built programs here count cycles on the one-stage (ideal) pipelines; the compiled
# programs of tests/test_cosim.py cover the realistic and unusual depths.
IDEAL = Depths.ideal()
C1B4 = Config.ip_core(1, 4, depths=IDEAL)
C2B8 = Config.ip_core(2, 8, depths=IDEAL)
C3B4 = Config.ip_core(3, 4, depths=IDEAL)   # only where a core must receive from two others
LAT = latencies(C2B8)
VEC_LOCAL_WRITE, VEC_REMOTE_WRITE, VEC_OUTPUT = (
    LAT.vec_local_write, LAT.vec_remote_write, LAT.vec_output)
RNG_SEED = 20241125

INF = float("inf")


# -- building programs -------------------------------------------------------------------

def bf16(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return bf16 bit patterns of ``values`` (rounded to nearest even)."""
    return f32_to_bf16_bits(np.asarray(values, dtype=np.float32))


def random_bf16(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0):
    """Return random bf16 patterns of normal values around ``scale`` (both signs)."""
    return bf16(rng.standard_normal(shape).astype(np.float32) * np.float32(scale))


def program(config: Config, cores: Sequence[Sequence[Instruction]], *,
            weights: Sequence[np.ndarray] | None = None,
            tram: Sequence[np.ndarray] | None = None,
            clamps: Sequence[Sequence[tuple[float, float]]] | None = None,
            input_dests: Sequence[tuple[int, int]] = ((1, 0),)) -> Program:
    """Return a validated program of ``config`` from instruction lists and memory images."""
    b = config.block_size
    images = []
    for c, instrs in enumerate(cores):
        w = weights[c] if weights is not None else np.zeros((0, b, b), np.uint16)
        t = tram[c] if tram is not None else np.zeros((0, b), np.uint16)
        cl = clamps[c] if clamps is not None else [(-INF, INF)]
        images.append(CoreImage(instructions=encode_program(instrs),
                                weights=np.asarray(w, np.uint16).reshape(-1, b, b),
                                tram_init=np.asarray(t, np.uint16).reshape(-1, b),
                                clamps=np.asarray(cl, np.float32).reshape(-1, 2)))
    n_out = sum(1 for instrs in cores for i in instrs
                if isinstance(i, Vec) and i.dest == Dest.OUTPUT)
    prog = Program(config=config, cores=images,
                   inputs=[TensorLayout((len(input_dests), b), b)],
                   outputs=[TensorLayout((n_out, b), b)] if n_out else [],
                   input_dests=np.asarray(input_dests, np.uint32).reshape(-1, 2),
                   meta={"name": "rtl-unit"})
    prog.validate()
    return prog


def vec(op: VecOp, *, acc: int = 0, tram: int = 0, dest: Dest = Dest.OUTPUT, addr: int = 0,
        cores: int = 0, clamp_entry: int = 0) -> Vec:
    """Return a VEC instruction with keyword defaults."""
    return Vec(op=int(op), clamp=clamp_entry, acc=acc, tram=tram, dest=int(dest), addr=addr,
               cores=cores)


def random_beats(rng: np.random.Generator, config: Config, n: int) -> list[int]:
    """Return ``n`` input beats of random bf16 values."""
    return pack_beats(random_bf16(rng, (n, config.block_size)), config.block_size)


# -- the reference: instructions executed in issue-cycle order ---------------------------

@dataclasses.dataclass
class Outcome:
    """What one machine did over a sequence of inferences.

    ``outputs``, ``done`` and ``trace`` hold one list per inference; cycles count from that
    inference's cycle 0. ``tram`` and ``acc`` are the final contents (bf16 / fp32 bit
    patterns), one [words, B] array per core.
    """

    outputs: list[list[tuple[int, int]]]
    done: list[int]
    trace: list[list[tuple[int, int, int]]]
    tram: list[np.ndarray]
    acc: list[np.ndarray]
    error: bool = False


def reference(prog: Program, inferences: Sequence[Sequence[int]], *, tram_words: int,
              truncate: bool = False) -> Outcome:
    """Execute ``prog`` for each inference's input beats by architecture §5.

    ``truncate`` models the test-only broken RTL (bf16 by truncation, not rounding).
    """
    cfg, b = prog.config, prog.config.block_size
    n = cfg.num_cores
    tram = [np.zeros((cfg.tensor_ram_depth, b), np.uint16) for _ in range(n)]
    acc = [np.zeros((cfg.accum_store_depth, b), np.float32) for _ in range(n)]
    weights = []
    for c, core in enumerate(prog.cores):
        tram[c][:len(core.tram_init)] = core.tram_init
        w = np.zeros((cfg.weight_store_depth, b, b), np.uint16)
        w[:len(core.weights)] = core.weights
        weights.append(bf16_bits_to_f32(w))
    clamps = []
    for core in prog.cores:
        cl = np.zeros((cfg.clamp_store_depth, 2), np.float32)
        cl[:len(core.clamps)] = core.clamps
        clamps.append(cl)
    programs = [decode_program(core.instructions) for core in prog.cores]

    def to_bf16(r: np.ndarray) -> np.ndarray:
        if truncate:
            return (f32_bits(r) >> np.uint32(16)).astype(np.uint16)
        return f32_to_bf16_bits(r)

    out = Outcome([], [], [], tram, acc)
    for beats in inferences:
        # (cycle, rank, core, item): input beats are accepted (rank 0) before anything of
        # their cycle; instructions in core order within a cycle.
        ops: list[tuple[int, int, int, object]] = [
            (i, 0, 0, i) for i in range(len(beats))]
        trace = []
        for c, instrs in enumerate(programs):
            for pc, (instr, t) in enumerate(zip(instrs, issue_cycles(instrs), strict=False)):
                ops.append((t, 1, c, instr))
                trace.append((t, c, pc))
        outputs = []
        for t, rank, c, item in sorted(ops, key=lambda o: o[:3]):
            if rank == 0:
                mask, addr = (int(v) for v in prog.input_dests[item])
                for k in range(n):
                    if mask >> k & 1:
                        tram[k][addr] = unpack_beats([beats[item]], b)
            elif isinstance(item, Mac):
                d = tile_matvec(weights[c][item.weight], bf16_bits_to_f32(tram[c][item.tram]))
                acc[c][item.acc] = accumulate(acc[c][item.acc], d) if item.accumulate else d
            elif isinstance(item, Vec):
                lo, hi = clamps[c][item.clamp]
                r = clamp(vec_op(item.op, acc[c][item.acc], bf16_bits_to_f32(tram[c][item.tram])),
                          lo, hi)
                if item.dest == Dest.ACC:
                    acc[c][item.addr] = r
                elif item.dest == Dest.TRAM:
                    for k in range(n):
                        if item.cores >> k & 1:
                            tram[k][item.addr] = to_bf16(r)
                elif item.dest == Dest.ACCS:
                    for k in range(n):
                        if item.cores >> k & 1:
                            acc[k][item.addr] = r
                else:
                    outputs.append((t + VEC_OUTPUT, pack_beats(to_bf16(r), b)[0]))
        out.outputs.append(sorted(outputs))
        out.done.append(prog.done_cycle())
        out.trace.append(sorted(trace))
    out.tram = [t[:tram_words].copy() for t in tram]
    out.acc = [f32_bits(a).copy() for a in acc]
    return out


# -- running the RTL ---------------------------------------------------------------------

def run_rtl(prog: Program, inferences: Sequence[Sequence[int]], *, tram_words: int,
            broken_rounding: bool = False, gap: int = 0, max_cycles: int = 300,
            drop_beat: int | None = None, stall_cycle: int | None = None) -> Outcome:
    """Run ``prog`` on the native RTL, one inference after the other.

    The next inference's first beat is presented ``gap`` cycles after the done cycle (0:
    back to back). ``drop_beat`` withholds that input beat of the first inference (an
    underrun); ``stall_cycle`` drops ``out_ready`` in that cycle of the first inference.
    Every busy cycle checks ``busy``, ``cycle`` and ``in_ready``.
    """
    cfg, b = prog.config, prog.config.block_size
    top = Top(cfg, program=prog, broken_rounding=broken_rounding)
    sim = Simulator(top)
    sim.add_clock(1e-6)
    out = Outcome([], [], [], [], [])
    n_in = len(prog.input_dests)

    async def bench(ctx):
        ctx.set(top.n_in_beats, n_in)
        ctx.set(top.out_ready, 1)
        # The sequencers' prefetch fills after reset (rtl/sequencer.py): pc 0 is fetched,
        # then registered.
        await ctx.tick().repeat(2)
        for index, beats in enumerate(inferences):
            assert len(beats) == n_in
            outputs, trace = [], []
            for k in range(max_cycles):
                present = k < n_in and not (index == 0 and k == drop_beat)
                ctx.set(top.in_valid, present)
                ctx.set(top.in_data, beats[k] if k < n_in else 0)
                ctx.set(top.out_ready, not (index == 0 and k == stall_cycle))
                assert ctx.get(top.busy), f"not busy in cycle {k}"
                assert ctx.get(top.cycle) == k
                assert ctx.get(top.in_ready) == (k < n_in), f"in_ready in cycle {k}"
                if ctx.get(top.out_valid):
                    outputs.append((k, ctx.get(top.out_data)))
                valid, pcs = ctx.get(top.trace_valid), ctx.get(top.trace_pc)
                for c in range(cfg.num_cores):
                    if valid >> c & 1:
                        trace.append((k, c, pcs >> (16 * c) & 0xFFFF))
                done = ctx.get(top.done)
                await ctx.tick()
                if done:
                    break
            else:
                raise AssertionError(f"inference {index} not done in {max_cycles} cycles")
            out.outputs.append(outputs)
            out.done.append(k)
            out.trace.append(trace)
            ctx.set(top.in_valid, 0)
            assert not ctx.get(top.busy) and ctx.get(top.in_ready)
            for _ in range(gap):
                assert not ctx.get(top.busy)
                await ctx.tick()
        out.error = bool(ctx.get(top.error))
        for core in top.cores:
            tram = [ctx.get(core.memories["tram"].data[i]) for i in range(tram_words)]
            acc = [ctx.get(core.memories["acc"].data[i]) for i in range(cfg.accum_store_depth)]
            out.tram.append(unpack_beats(tram, b).reshape(-1, b))
            acc_mac = [ctx.get(core.memories["acc_mac"].data[i])
                       for i in range(cfg.accum_store_depth)]
            assert acc == acc_mac, "the two accumulator copies differ"
            words = np.array([[w >> (32 * i) & 0xFFFFFFFF for i in range(b)] for w in acc],
                             dtype=np.uint32)
            out.acc.append(words)

    sim.add_testbench(bench)
    sim.run()
    return out


def check(prog: Program, inferences: Sequence[Sequence[int]], *, tram_words: int = 32,
          **kwargs) -> Outcome:
    """Run ``prog`` on the RTL and assert it matches the reference (and the VM, if any)."""
    got = run_rtl(prog, inferences, tram_words=tram_words, **kwargs)
    want = reference(prog, inferences, tram_words=tram_words,
                     truncate=kwargs.get("broken_rounding", False))
    assert not got.error, "the RTL raised error"
    assert got.trace == want.trace, "issue trace"
    assert got.done == want.done, "done cycles"
    for index, (g, w) in enumerate(zip(got.outputs, want.outputs, strict=True)):
        assert [c for c, _ in g] == [c for c, _ in w], f"output cycles of inference {index}"
        assert [hex(v) for _, v in g] == [hex(v) for _, v in w], f"outputs of {index}"
    for c in range(prog.config.num_cores):
        np.testing.assert_array_equal(got.tram[c], want.tram[c], err_msg=f"core {c} tram")
        np.testing.assert_array_equal(got.acc[c], want.acc[c], err_msg=f"core {c} acc")
    # The VM does not load a program without output beats (it has no latency to report).
    if not kwargs.get("broken_rounding", False) and prog.output_cycles():
        compare_with_vm(prog, inferences, got, tram_words)
    return got


def compare_with_vm(prog: Program, inferences: Sequence[Sequence[int]], got: Outcome,
                    tram_words: int) -> None:
    """Compare with the VM (the executable specification), which also checks that the
    hand-built program obeys the static-schedule rules."""
    b = prog.config.block_size
    vm = VM(prog, trace=True)
    for k, beats in enumerate(inferences):
        out = vm.run_beats(unpack_beats(beats, b).reshape(-1, b))
        want = [(w.cycle, pack_beats(np.asarray(w.data, np.uint16), b)[0])
                for w in vm.write_trace if w.memory == "out"]
        assert want == [(c, pack_beats(row, b)[0]) for (c, _), row in zip(want, out,
                                                                          strict=True)]
        assert got.outputs[k] == want, f"outputs of inference {k} (VM)"
        assert got.trace[k] == [(r.cycle, r.core, r.pc) for r in vm.trace], "trace (VM)"
        assert got.done[k] + 1 == vm.cycle_count(spaced=False), "done cycle (VM)"
    state = vm.state()
    for c in range(prog.config.num_cores):
        np.testing.assert_array_equal(got.tram[c], state["tram"][c][:tram_words],
                                      err_msg=f"core {c} tram (VM)")
        np.testing.assert_array_equal(got.acc[c], state["acc"][c], err_msg=f"core {c} acc (VM)")


# -- tests ---------------------------------------------------------------------------------

def test_sequencer_issue_wait_end_restart():
    """Issue one per cycle, WAIT n spaces by n, END ends; the next inference restarts at pc 0
    one cycle after done, with state kept."""
    rng = np.random.default_rng(RNG_SEED)
    b = C1B4.block_size
    instrs = [
        Wait(3),
        vec(VecOp.PASS_T, tram=0),          # t=3: the last inference's beat (or the image)
        Wait(1),
        vec(VecOp.PASS_T, tram=1, dest=Dest.TRAM, addr=2, cores=1),   # t=5: this beat, at 9
        Wait(7),
        vec(VecOp.PASS_T, tram=2),          # t=13: out at 18
        vec(VecOp.PASS_T, tram=1, dest=Dest.TRAM, addr=0, cores=1),   # t=14: state, at 18
        End(),                              # t=15
    ]
    prog = program(C1B4, [instrs], tram=[random_bf16(rng, (3, b))], input_dests=[(1, 1)])
    beats = [random_beats(rng, C1B4, 1) for _ in range(3)]
    got = check(prog, beats, tram_words=4)
    assert got.done == [prog.done_cycle()] * 3
    assert [t[0] for t in got.trace[0]] == issue_cycles(decode_program(prog.cores[0].instructions))


def test_sequencer_idle_gap_and_end_first():
    """An inference may start any time after done; a core whose pc 0 is END is done at
    once, and the machine is done when the last input beat has been written (here after
    the only output beat: a program needs one)."""
    rng = np.random.default_rng(RNG_SEED + 1)
    b = C2B8.block_size
    dests = [(0b11, 3 + i) for i in range(8)]            # written in cycles 1 .. 8
    prog = program(C2B8, [[End()], [vec(VecOp.PASS_T, tram=0), End()]],   # out at 5
                   tram=[np.zeros((0, b)), random_bf16(rng, (1, b))], input_dests=dests)
    got = check(prog, [random_beats(rng, C2B8, len(dests)) for _ in range(2)],
                tram_words=12, gap=3)
    assert got.done == [8, 8]


def test_mac_chains_and_bypass():
    """MAC chains into one accumulator at distances 1, 2 and 3 accumulate in issue order;
    interleaved chains do not see each other; set (accumulate=0) discards the old value;
    a VEC result in the accumulator is picked up by a later MAC."""
    rng = np.random.default_rng(RNG_SEED + 2)
    b = C1B4.block_size
    weights = random_bf16(rng, (8, b, b))
    tram = random_bf16(rng, (8, b), scale=3.0)

    def chain(acc: int, tiles: Sequence[int], gap: int) -> list[Instruction]:
        out: list[Instruction] = []
        for k, w in enumerate(tiles):
            out.append(Mac(acc=acc, tram=w, weight=w, accumulate=int(k > 0)))
            if gap > 1 and k < len(tiles) - 1:
                out.append(Wait(gap))
        return out

    instrs: list[Instruction] = []
    instrs += chain(0, [0, 1, 2, 3], 1)
    instrs += chain(1, [4, 5, 6], 2)
    instrs += chain(2, [7, 0, 1], 3)
    # Interleaved: acc 3 and acc 4 alternate, each at distance 2 with another address at 1.
    instrs += [Mac(acc=3 + k % 2, tram=k, weight=7 - k, accumulate=int(k > 1))
               for k in range(6)]
    # Set after accumulate: acc 0 is overwritten by a lone product, then accumulated on.
    instrs += [Wait(8), Mac(acc=0, tram=5, weight=5, accumulate=0),
               Mac(acc=0, tram=6, weight=2, accumulate=1), Wait(2)]
    # A VEC result in acc 5 (written at t+4), then MACs accumulating onto it.
    instrs += [vec(VecOp.ADD, acc=1, tram=3, dest=Dest.ACC, addr=5), Wait(5),
               Mac(acc=5, tram=2, weight=3, accumulate=1),
               Mac(acc=5, tram=4, weight=4, accumulate=1), Wait(8)]
    instrs += [vec(VecOp.PASS_A, acc=a) for a in range(6)]
    instrs += [End()]
    prog = program(C1B4, [instrs], weights=[weights], tram=[tram], input_dests=[(1, 20)])
    check(prog, [random_beats(rng, C1B4, 1)], tram_words=8)


def test_mac_distance_is_order_sensitive():
    """The chain test above would pass with a wrong bypass if sums were exact: check that
    the accumulated values depend on the order, so a stale read changes the result."""
    rng = np.random.default_rng(RNG_SEED + 2)
    b = C1B4.block_size
    w = bf16_bits_to_f32(random_bf16(rng, (8, b, b)))
    x = bf16_bits_to_f32(random_bf16(rng, (8, b), scale=3.0))
    d = [tile_matvec(w[k], x[k]) for k in range(4)]
    full = accumulate(accumulate(accumulate(d[0], d[1]), d[2]), d[3])
    stale = accumulate(accumulate(d[0], d[2]), d[3])    # missing the distance-1 forward
    assert (f32_bits(full) != f32_bits(stale)).any()


@pytest.mark.parametrize("seed", range(3))
def test_random_accumulator_traffic(seed):
    """Random MACs (set and accumulate) and VEC results into a few accumulators at random
    distances, kept only where the VM accepts the schedule: the bypass and the
    accumulator's write port under every legal interleaving the generator finds."""
    rng = np.random.default_rng(RNG_SEED + 100 + seed)
    b = C1B4.block_size
    weights = [random_bf16(rng, (8, b, b))]
    tram = [random_bf16(rng, (8, b), scale=2.0)]
    tail = [Wait(12)] + [vec(VecOp.PASS_A, acc=a) for a in range(3)] + [End()]

    def legal(instrs: list[Instruction]) -> bool:
        try:
            VM(program(C1B4, [instrs + tail], weights=weights, tram=tram))
        except ScheduleError:
            return False
        return True

    instrs: list[Instruction] = []
    while len(instrs) < 40:
        kind = rng.integers(4)
        acc, t = int(rng.integers(3)), int(rng.integers(8))
        if kind < 2:
            cand: Instruction = Mac(acc=acc, tram=t, weight=int(rng.integers(8)),
                                    accumulate=int(rng.integers(4) > 0))
        elif kind == 2:
            cand = vec(VecOp(int(rng.choice([VecOp.ADD, VecOp.MUL, VecOp.PASS_T]))), acc=acc,
                       tram=t, dest=Dest.ACC, addr=int(rng.integers(3)))
        else:
            cand = Wait(int(rng.integers(1, 4)))
        instrs.append(cand if legal(instrs + [cand]) else Wait(1))
    prog = program(C1B4, [instrs + tail], weights=weights, tram=tram)
    check(prog, [random_beats(rng, C1B4, 1)], tram_words=8)


SPECIALS = [0.0, -0.0, INF, -INF, float("nan"), 1.0, -1.5, 3.0e38, -3.0e38, 1e-40, -1e-39,
            2.5, -0.75, 1.00390625, 65504.0, 1e-45]


def _vector_program(rng: np.random.Generator) -> Program:
    b = C1B4.block_size
    tram = np.concatenate([
        random_bf16(rng, (4, b), scale=4.0),
        bf16(np.array(SPECIALS, np.float32).reshape(-1, b)),
        np.array([[0x7FC1, 0xFFFF, 0x0001, 0x8001]], np.uint16),    # NaN payloads, tiny
        bf16(rng.permutation(np.array(SPECIALS, np.float32)).reshape(-1, b)),
    ])
    rows = len(tram)
    clamps = [(-INF, INF), (-1.0, 2.5), (0.0, INF), (-INF, -0.0)]
    instrs: list[Instruction] = []
    # Accumulator operands that are not bf16 values: sums of two blocks (t+4 writes).
    for a in range(rows - 1):
        instrs += [vec(VecOp.PASS_T, tram=a, dest=Dest.ACC, addr=a), Wait(5),
                   vec(VecOp.ADD, acc=a, tram=a + 1, dest=Dest.ACC, addr=a)]
    instrs += [Wait(5)]
    # Every op, against several tensor-RAM rows, through several clamp entries.
    for op in VecOp:
        for a, t in [(0, 1), (4, 5), (5, 4), (6, 7), (7, 2), (3, 6)]:
            instrs.append(vec(op, acc=a, tram=t, clamp_entry=(a + int(op)) % 5))
    # Results to the accumulator and to the own tensor RAM, read back later.
    instrs += [vec(VecOp.MUL, acc=1, tram=2, dest=Dest.ACC, addr=9, clamp_entry=1),
               vec(VecOp.SUB, acc=5, tram=6, dest=Dest.TRAM, addr=12, cores=1),
               vec(VecOp.RSUB, acc=6, tram=4, dest=Dest.TRAM, addr=13, cores=1), Wait(5),
               vec(VecOp.PASS_A, acc=9), vec(VecOp.PASS_T, tram=12), vec(VecOp.PASS_T, tram=13),
               End()]
    return program(C1B4, [instrs], tram=[tram], clamps=[clamps], input_dests=[(1, 20)])


def test_vector_ops_clamps_and_destinations():
    """Every VEC op on ordinary and special values (NaN, ±inf, ±0, subnormals, overflow),
    through clamp entries (incl. one left zero), to the output, accumulator and tensor RAM."""
    rng = np.random.default_rng(RNG_SEED + 3)
    prog = _vector_program(rng)
    check(prog, [random_beats(rng, C1B4, 1)], tram_words=16)


def test_broken_rounding_is_detected():
    """The test-only broken RTL truncates to bf16: it differs from the contract (and matches
    a truncating model), which is what lets co-simulation prove a broken RTL is caught."""
    rng = np.random.default_rng(RNG_SEED + 3)
    prog = _vector_program(rng)
    beats = [random_beats(rng, C1B4, 1)]
    got = check(prog, beats, tram_words=16, broken_rounding=True)
    want = reference(prog, beats, tram_words=16)
    assert [v for _, v in got.outputs[0]] != [v for _, v in want.outputs[0]]


def test_remote_writes_outputs_and_done():
    """A VEC to tensor RAM writes its own core at t+4 and the others at t+5; output beats
    leave at t+5 from either core; the done cycle counts a last remote write at t+5."""
    rng = np.random.default_rng(RNG_SEED + 4)
    b = C2B8.block_size
    tram0, tram1 = random_bf16(rng, (4, b)), random_bf16(rng, (4, b))
    core0 = [
        vec(VecOp.PASS_T, tram=0, dest=Dest.TRAM, addr=10, cores=0b11),   # t=0: at 4 and 5
        vec(VecOp.PASS_T, tram=1, dest=Dest.TRAM, addr=11, cores=0b10),   # t=1: remote, 6
        Wait(4),
        vec(VecOp.PASS_T, tram=10),                     # t=6: the local copy, out at 11
        End(),
    ]
    core1 = [Wait(7),
             vec(VecOp.PASS_T, tram=10),                # t=7: remote copy, out at 12
             vec(VecOp.PASS_T, tram=11),                # t=8: out at 13
             vec(VecOp.PASS_T, tram=2, dest=Dest.TRAM, addr=12, cores=0b01),   # t=9: at 14
             End()]
    prog = program(C2B8, [core0, core1], tram=[tram0, tram1], input_dests=[(0b11, 30)])
    got = check(prog, [random_beats(rng, C2B8, 1)], tram_words=32)
    assert [c for c, _ in got.outputs[0]] == [11, 12, 13]
    assert got.done[0] == 14            # core 1's remote write to core 0


# -- VEC to accumulators (Dest.ACCS) ------------------------------------------------------

def accs(op: VecOp, *, acc: int = 0, tram: int = 0, addr: int, cores: int,
         clamp_entry: int = 0) -> Vec:
    """Return a VEC whose fp32 result goes to accumulator ``addr`` of the ``cores``."""
    return vec(op, acc=acc, tram=tram, dest=Dest.ACCS, addr=addr, cores=cores,
               clamp_entry=clamp_entry)


def not_bf16(words: np.ndarray) -> bool:
    """Return True if some fp32 pattern of ``words`` is not a bf16 value: had an ACCS
    result been rounded on its way, the test holding it would have seen the difference."""
    return bool((np.asarray(words, np.uint32) & np.uint32(0xFFFF)).any())


def test_accs_local():
    """ACCS with only the own bit writes the own accumulator at t+4, in fp32 (not rounded,
    clamped like any VEC result); a later VEC and a MAC accumulating on it see the value."""
    rng = np.random.default_rng(RNG_SEED + 10)
    b = C1B4.block_size
    instrs = [
        vec(VecOp.PASS_T, tram=0, dest=Dest.ACC, addr=0),                # t=0: acc0 at 4
        Wait(5),
        accs(VecOp.ADD, acc=0, tram=1, addr=1, cores=0b1),               # t=6: acc1 at 10
        Wait(5),
        accs(VecOp.MUL, acc=1, tram=2, addr=2, cores=0b1, clamp_entry=1),   # t=12: at 16
        accs(VecOp.SUB, acc=1, tram=3, addr=3, cores=0b1),               # t=13: acc3 at 17
        Mac(acc=1, tram=3, weight=0, accumulate=1),     # t=14: reads acc1 in 17, writes 19
        Wait(6),
        vec(VecOp.PASS_A, acc=1),                       # t=21
        vec(VecOp.PASS_A, acc=2),
        vec(VecOp.PASS_A, acc=3),
        End(),
    ]
    prog = program(C1B4, [instrs], weights=[random_bf16(rng, (1, b, b))],
                   tram=[random_bf16(rng, (4, b), scale=3.0)],
                   clamps=[[(-INF, INF), (-1.0, 2.5)]], input_dests=[(1, 20)])
    got = check(prog, [random_beats(rng, C1B4, 1)], tram_words=4)
    assert not_bf16(got.acc[0][2:4])


def test_accs_remote_to_one_core():
    """ACCS to the other core only (t+5) and to both (own at t+4, other at t+5), while the
    receiver takes input beats into its tensor RAM and sends its own ACCS back: the
    received fp32 values are exact and are read by VEC and accumulated on by MAC."""
    rng = np.random.default_rng(RNG_SEED + 11)
    b = C2B8.block_size
    tram = [random_bf16(rng, (4, b), scale=2.0) for _ in range(2)]
    core0 = [
        vec(VecOp.PASS_T, tram=0, dest=Dest.ACC, addr=0),                # t=0: at 4
        vec(VecOp.PASS_T, tram=1, dest=Dest.ACC, addr=1),                # t=1: at 5
        Wait(4),
        accs(VecOp.ADD, acc=0, tram=2, addr=2, cores=0b10),              # t=6: core 1 at 11
        accs(VecOp.SUB, acc=1, tram=3, addr=3, cores=0b11),              # t=7: 11 / 12
        Wait(7),
        vec(VecOp.PASS_A, acc=3),                       # t=15: out at 20
        vec(VecOp.PASS_A, acc=4),
        End(),
    ]
    core1 = [
        vec(VecOp.PASS_T, tram=0, dest=Dest.ACC, addr=0),                # t=0: at 4
        Wait(7),
        accs(VecOp.MUL, acc=0, tram=1, addr=4, cores=0b01),              # t=8: core 0 at 13
        Mac(acc=2, tram=2, weight=0, accumulate=1),     # t=9: reads acc2 in 13, writes 15
        Wait(12),
        vec(VecOp.PASS_A, acc=2),                       # t=22: out at 27
        vec(VecOp.PASS_A, acc=3),
        End(),
    ]
    # Input beats into core 1's tensor RAM in cycles 1 .. 12, across the ACCS arrivals.
    dests = [(0b10, 20 + i) for i in range(12)]
    weights = [np.zeros((0, b, b)), random_bf16(rng, (1, b, b))]
    prog = program(C2B8, [core0, core1], weights=weights, tram=tram, input_dests=dests)
    got = check(prog, [random_beats(rng, C2B8, len(dests))], tram_words=32)
    assert not_bf16(got.acc[1][3]) and not_bf16(got.acc[0][4])
    assert got.acc[0][3].tolist() == got.acc[1][3].tolist()


def test_accs_remote_to_several_cores():
    """ACCS to two other cores at once (and to all three), and a core receiving in one
    cycle an ACCS block (accumulator) and a TRAM block (tensor RAM) from two other cores, or
    an ACCS block and an input beat: the two write muxes of a core are independent."""
    rng = np.random.default_rng(RNG_SEED + 12)
    b = C3B4.block_size
    tram = [random_bf16(rng, (4, b), scale=2.0) for _ in range(3)]
    core0 = [
        vec(VecOp.PASS_T, tram=0, dest=Dest.ACC, addr=0),                # t=0: at 4
        Wait(5),
        accs(VecOp.ADD, acc=0, tram=1, addr=1, cores=0b111),             # t=6: 10; 11, 11
        accs(VecOp.MUL, acc=0, tram=2, addr=2, cores=0b110),             # t=7: 12, 12
        Wait(12),
        vec(VecOp.PASS_A, acc=1),                       # t=20: out at 25
        vec(VecOp.PASS_A, acc=3),
        End(),
    ]
    core1 = [
        Wait(7),
        vec(VecOp.PASS_T, tram=1, dest=Dest.TRAM, addr=9, cores=0b100),  # t=7: core 2 at 12
        Wait(15),
        vec(VecOp.PASS_A, acc=1),                       # t=23: out at 28
        vec(VecOp.PASS_A, acc=2),
        vec(VecOp.PASS_A, acc=3),
        End(),
    ]
    core2 = [
        Wait(12),
        accs(VecOp.MUL, acc=1, tram=0, addr=3, cores=0b011),             # t=12: 17, 17
        Mac(acc=2, tram=3, weight=0, accumulate=1),     # t=13: reads acc2 in 16, writes 18
        Wait(13),
        vec(VecOp.PASS_A, acc=1),                       # t=27: out at 32
        vec(VecOp.PASS_A, acc=2),
        vec(VecOp.PASS_T, tram=9),
        End(),
    ]
    # Input beats into core 2's tensor RAM in cycles 1 .. 11: the last one with core 0's
    # first ACCS block; in cycle 12 core 2 takes core 0's second and core 1's TRAM block.
    dests = [(0b100, 20 + i) for i in range(11)]
    weights = [np.zeros((0, b, b))] * 2 + [random_bf16(rng, (1, b, b))]
    prog = program(C3B4, [core0, core1, core2], weights=weights, tram=tram,
                   input_dests=dests)
    got = check(prog, [random_beats(rng, C3B4, len(dests))], tram_words=32)
    assert got.acc[0][1].tolist() == got.acc[1][1].tolist() == got.acc[2][1].tolist()
    assert not_bf16(got.acc[1][2]) and not_bf16(got.acc[0][3])


def test_accs_mac_chain_split_across_cores():
    """A chain of MACs into one accumulator, split after k tiles: core 0 accumulates the
    first k, moves the partial sum with ACCS into core 1's accumulator, and core 1
    continues with MAC accumulate=1. The result is bit-identical to the whole chain on one
    core, and would not be if the partial sum were rounded to bf16 on the way."""
    rng = np.random.default_rng(RNG_SEED + 13)
    b, tiles, k = C2B8.block_size, 8, 5
    mac_write = LAT.mac_acc_write
    weights = random_bf16(rng, (tiles, b, b))
    acts = random_bf16(rng, (tiles, b), scale=3.0)
    whole = [Mac(acc=0, tram=i, weight=i, accumulate=int(i > 0)) for i in range(tiles)]
    first = [Mac(acc=1, tram=i, weight=i, accumulate=int(i > 0)) for i in range(k)]
    # First MACs in cycles tiles .. tiles+k-1; the partial sum is read once written.
    send = tiles + k + mac_write
    core0 = [*whole, *first, Wait(mac_write),
             accs(VecOp.PASS_A, acc=1, addr=2, cores=0b10),      # core 1's acc2 at send+5
             Wait(8), vec(VecOp.PASS_A, acc=0), End()]
    # Core 1's first accumulate-read (issue + mac_acc_read) must come after the arrival.
    resume = send + VEC_REMOTE_WRITE + 1 - LAT.mac_acc_read
    rest = [Mac(acc=2, tram=i, weight=i, accumulate=1) for i in range(k, tiles)]
    core1 = [Wait(resume), *rest, Wait(mac_write + 2), vec(VecOp.PASS_A, acc=2), End()]
    prog = program(C2B8, [core0, core1], weights=[weights] * 2, tram=[acts] * 2,
                   input_dests=[(0b11, 30)])
    got = check(prog, [random_beats(rng, C2B8, 1)], tram_words=32)
    assert got.acc[1][2].tolist() == got.acc[0][0].tolist(), "split chain != whole chain"
    # The chain is not trivially exact: a bf16 partial sum would change the result.
    w, x = bf16_bits_to_f32(weights), bf16_bits_to_f32(acts)
    partial = tile_matvec(w[0], x[0])
    for i in range(1, k):
        partial = accumulate(partial, tile_matvec(w[i], x[i]))
    rounded = bf16_bits_to_f32(f32_to_bf16_bits(partial))
    for i in range(k, tiles):
        rounded = accumulate(rounded, tile_matvec(w[i], x[i]))
    assert (f32_bits(rounded) != got.acc[1][2]).any()
    # One cycle earlier, core 1 would read its accumulator in the cycle of the ACCS write:
    # no bypass forwards an ACCS write, so the VM refuses that schedule.
    early = [Wait(resume - 1), *rest, Wait(mac_write + 3), vec(VecOp.PASS_A, acc=2), End()]
    with pytest.raises(ScheduleError, match="in flight"):
        VM(program(C2B8, [core0, early], weights=[weights] * 2, tram=[acts] * 2,
           input_dests=[(0b11, 30)]))


def _collision(case: str, late: int) -> Program:
    """Return a program whose two accumulator writes of ``case`` land in one cycle on one
    core when ``late`` is 0, and one cycle apart when it is 1."""
    b = C2B8.block_size
    mac_write = LAT.mac_acc_write
    tail = [Wait(12), vec(VecOp.PASS_A, acc=0), End()]
    mac = Mac(acc=2, tram=0, weight=0, accumulate=0)    # writes in cycle mac_write
    if case == "mac-and-remote":                        # core 1: MAC and core 0's ACCS
        cores = [[Wait(mac_write - VEC_REMOTE_WRITE + late),
                  accs(VecOp.PASS_T, addr=1, cores=0b10), *tail],
                 [mac, End()]]
    elif case == "mac-and-local":                       # core 0: MAC and its own ACCS
        cores = [[mac, Wait(mac_write - VEC_LOCAL_WRITE - 1 + late),
                  accs(VecOp.PASS_T, addr=1, cores=0b01), *tail],
                 [End()]]
    elif case == "vec-and-remote":                      # core 1: its VEC and core 0's ACCS
        cores = [[accs(VecOp.PASS_T, addr=1, cores=0b10), *tail],
                 [Wait(VEC_REMOTE_WRITE - VEC_LOCAL_WRITE + late),
                  vec(VecOp.PASS_T, dest=Dest.ACC, addr=2), End()]]
    else:                                               # core 2: ACCS from cores 0 and 1
        cores = [[accs(VecOp.PASS_T, addr=1, cores=0b100), *tail],
                 [Wait(1 + late), accs(VecOp.PASS_T, addr=2, cores=0b100), End()],
                 [End()]]
        if not late:                                    # WAIT 1 is a no-op: same cycle
            cores[1] = cores[1][1:]
        return program(C3B4, cores, input_dests=[(0b111, 30)])
    weights = [np.ones((1, b, b), np.uint16)] * 2
    return program(C2B8, cores, weights=weights, input_dests=[(0b11, 30)])


@pytest.mark.parametrize("case", ["mac-and-remote", "mac-and-local", "vec-and-remote",
                                  "remote-and-remote"])
def test_accs_write_port_collisions_raise_error(case):
    """Two accumulator writes in one cycle on one core (MAC write-back, local VEC result,
    ACCS arriving from another core; two arrivals) are refused by the VM and raise the
    RTL's error; one cycle apart, the same program is legal and matches the VM."""
    rng = np.random.default_rng(RNG_SEED + 14)
    bad = _collision(case, late=0)
    with pytest.raises(ScheduleError, match="a second write into the acc"):
        VM(bad)
    beats = [random_beats(rng, bad.config, 1)]
    assert run_rtl(bad, beats, tram_words=4).error
    check(_collision(case, late=1), beats, tram_words=4)


def test_input_descriptors():
    """Input beat i is written in cycle i + 1 to the masked cores at its address, and can
    be read from cycle i + 2 on (here by VEC and MAC)."""
    rng = np.random.default_rng(RNG_SEED + 5)
    b = C2B8.block_size
    dests = [(0b01, 5), (0b10, 6), (0b11, 7), (0b10, 5)]
    weights = [random_bf16(rng, (2, b, b)) for _ in range(2)]
    core0 = [Wait(2), vec(VecOp.PASS_T, tram=5), Wait(2), Mac(acc=0, tram=7, weight=1,
             accumulate=0), Wait(8), vec(VecOp.PASS_A, acc=0), End()]
    core1 = [Wait(3), vec(VecOp.PASS_T, tram=6), Wait(2), vec(VecOp.PASS_T, tram=5),
             Mac(acc=1, tram=7, weight=0, accumulate=0), Wait(9),
             vec(VecOp.ADD, acc=1, tram=6), End()]
    prog = program(C2B8, [core0, core1], weights=weights, input_dests=dests)
    check(prog, [random_beats(rng, C2B8, len(dests)) for _ in range(2)], tram_words=8)


def test_input_underrun_and_output_stall_raise_error():
    """A missing input beat and an output stall are errors (sticky)."""
    rng = np.random.default_rng(RNG_SEED + 6)
    prog = program(C1B4, [[Wait(4), vec(VecOp.PASS_T, tram=0), End()]],
                   input_dests=[(1, 0), (1, 1)])
    beats = [random_beats(rng, C1B4, 2)]
    assert not run_rtl(prog, beats, tram_words=2).error
    assert run_rtl(prog, beats, tram_words=2, drop_beat=1).error
    assert run_rtl(prog, beats, tram_words=2, stall_cycle=4 + VEC_OUTPUT).error


def test_generate_verilog(tmp_path):
    """The instance flavour converts (lane, core and top once each) and the manifest lists
    every memory (instance names are checked by the generator)."""
    from rtl.gen import generate, memory_images

    manifest = generate(C1B4, tmp_path)
    assert manifest["sources"][-1] == "tidal_top.v"
    for name in manifest["sources"] + manifest["verilator_config"]:
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    kinds = sorted(m["kind"] for m in manifest["memories"])
    b = C1B4.block_size
    assert kinds == sorted(["indesc", "imem", "tram", "clamp", "acc"] + ["weights"] * b)
    top = (tmp_path / "tidal_top.v").read_text()
    assert top.count("tidal_core core0") == 1
    assert (tmp_path / "tidal_matrix.v").read_text().count("tidal_lane lane") == b
    prog = program(C1B4, [[vec(VecOp.PASS_T, tram=1), End()]],
                   weights=[np.ones((2, b, b), np.uint16)])
    images = memory_images(prog)
    paths = {m["path"] for m in manifest["memories"]}
    assert set(images) <= paths
    assert images["core0.matrix.lane1.wmem"] == [sum(1 << (16 * j) for j in range(b))] * 2
