"""Unit tests of the RTL (``rtl/``) in Amaranth's simulator, on small configurations.

Each test runs a hand-built program on the ``"native"`` flavour of :class:`rtl.top.Top` and
compares, bit for bit and cycle for cycle, its output beats (value and cycle), done cycles,
issue trace and final tensor-RAM / accumulator contents with the reference below: the
programs' instructions executed one by one in issue-cycle order, which is the machine's
semantics for a hazard-free program (``docs/architecture.md`` §5), with the numerics of
``isa/numerics.py`` and the cycles of ``isa/timing.py`` / ``Program``; and with the VM
(``sim.vm``, the executable specification), which also checks that each hand-built program
obeys the static-schedule rules.

The programs are built in ``tests/_unit_programs.py``, which ``tests/test_cosim_directed.py``
runs through co-simulation on Icarus and Verilator; here the instance flavour (Verilog) is
only generated. Amaranth's simulator runs a two-core, eight-lane machine at about a cycle a
second, so only the programs of the one-core machine run on the RTL here; for the others
this file checks the reference against the VM and the properties each test states, and
co-simulation proves the RTL equals the VM on them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np
import pytest
from _native_sim import run_native
from _unit_programs import (
    C1B4,
    COLLISIONS,
    RNG_SEED,
    VEC_OUTPUT,
    UnitCase,
    accs_local,
    accs_mac_chain_split,
    accs_remote_to_one_core,
    accs_remote_to_several_cores,
    collision_case,
    idle_gap_end_first,
    input_descriptors,
    mac_chains_and_bypass,
    program,
    random_accumulator_traffic,
    random_bf16,
    remote_writes,
    sequencer_restart,
    two_beats,
    vec,
    vector_ops,
)
from amaranth.sim import Simulator

from isa.config import Config
from isa.instructions import Dest, End, Mac, Vec, VecOp, Wait, decode_program, encode
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
from isa.program import INSTR_READ, MODEL_SETUP, Program
from isa.timing import issue_cycles
from rtl.sequencer import Sequencer
from sim.vm import VM, ScheduleError

# The first test of a configuration in a process builds the whole Top's simulator (a minute
# or more on a busy 2-core machine; tests/_native_sim.py), later ones reuse it: the timeout
# guards against a hang only.
pytestmark = pytest.mark.timeout(900)


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


def reference(prog: Program, inferences: Sequence[Sequence[int]], *,
              tram_words: int) -> Outcome:
    """Execute ``prog`` for each inference's input beats by architecture §5."""
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
                            tram[k][item.addr] = f32_to_bf16_bits(r)
                elif item.dest == Dest.ACCS:
                    for k in range(n):
                        if item.cores >> k & 1:
                            acc[k][item.addr] = r
                else:
                    outputs.append((t + VEC_OUTPUT, pack_beats(f32_to_bf16_bits(r), b)[0]))
        out.outputs.append(sorted(outputs))
        out.done.append(prog.done_cycle())
        out.trace.append(sorted(trace))
    out.tram = [t[:tram_words].copy() for t in tram]
    out.acc = [f32_bits(a).copy() for a in acc]
    return out


# -- running the RTL ---------------------------------------------------------------------

def run_rtl(prog: Program, inferences: Sequence[Sequence[int]], *, tram_words: int,
            gap: int = 0, max_cycles: int = 300,
            drop_beat: int | None = None, stall_cycle: int | None = None) -> Outcome:
    """Run ``prog`` on the native RTL, one inference after the other.

    The next inference's first beat is presented ``gap`` cycles after the done cycle (0:
    back to back). ``drop_beat`` withholds that input beat of the first inference (an
    underrun); ``stall_cycle`` drops ``out_ready`` in that cycle of the first inference.
    Every busy cycle checks ``busy``, ``cycle`` and ``in_ready``.
    """
    cfg, b = prog.config, prog.config.block_size
    out = Outcome([], [], [], [], [])
    n_in = len(prog.input_dests)

    async def bench(ctx, top):
        ctx.set(top.out_ready, 1)
        # The model table is read, then the sequencers' prefetch fills: the entry is
        # fetched, then registered (rtl/sequencer.py).
        for _ in range(MODEL_SETUP):
            await ctx.tick()
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

    run_native(prog, bench)
    return out


def in_native_tier(prog: Program) -> bool:
    """Return True if ``prog`` runs in Amaranth's simulator here (see the module docstring:
    the one-core machine only; co-simulation runs the others on Icarus and Verilator)."""
    return prog.config.num_cores == 1


def check(prog: Program, inferences: Sequence[Sequence[int]], *, tram_words: int = 32,
          rtl: bool = True, **kwargs) -> Outcome:
    """Assert that the reference and the VM agree on ``prog``, and that the RTL matches them
    where it runs here (``rtl`` and :func:`in_native_tier`); return the RTL's outcome, or the
    reference's (equal to the VM's) where the RTL does not run here."""
    want = reference(prog, inferences, tram_words=tram_words)
    # The VM does not load a program without output beats (it has no latency to report).
    with_vm = bool(prog.output_cycles())
    if not (rtl and in_native_tier(prog)):
        assert with_vm, "a program checked without the RTL must be checked against the VM"
        compare_with_vm(prog, inferences, want, tram_words)
        return want
    got = run_rtl(prog, inferences, tram_words=tram_words, **kwargs)
    assert not got.error, "the RTL raised error"
    assert got.trace == want.trace, "issue trace"
    assert got.done == want.done, "done cycles"
    for index, (g, w) in enumerate(zip(got.outputs, want.outputs, strict=True)):
        assert [c for c, _ in g] == [c for c, _ in w], f"output cycles of inference {index}"
        assert [hex(v) for _, v in g] == [hex(v) for _, v in w], f"outputs of {index}"
    for c in range(prog.config.num_cores):
        np.testing.assert_array_equal(got.tram[c], want.tram[c], err_msg=f"core {c} tram")
        np.testing.assert_array_equal(got.acc[c], want.acc[c], err_msg=f"core {c} acc")
    if with_vm:
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

def run_case(case: UnitCase, **kwargs) -> Outcome:
    """:func:`check` one of the shared hand-built programs (``tests/_unit_programs.py``)."""
    return check(case.program, case.inferences, tram_words=case.tram_words, gap=case.gap,
                 **kwargs)


def test_sequencer_issue_wait_end_restart():
    """Issue one per cycle, WAIT n spaces by n, END ends; the next inference restarts at pc 0
    one cycle after done, with state kept."""
    case = sequencer_restart()
    prog = case.program
    got = run_case(case)
    assert got.done == [prog.done_cycle()] * 3
    assert [t[0] for t in got.trace[0]] == issue_cycles(decode_program(prog.cores[0].instructions))


def test_sequencer_idle_gap_and_end_first():
    """An inference may start any time after done; a core whose pc 0 is END is done at
    once, and the machine is done when the last input beat has been written (here after
    the only output beat: a program needs one)."""
    got = run_case(idle_gap_end_first())
    assert got.done == [8, 8]


def test_mac_chains_and_bypass():
    """MAC chains into one accumulator at distances 1, 2 and 3 accumulate in issue order;
    interleaved chains do not see each other; set (accumulate=0) discards the old value;
    a VEC result in the accumulator is picked up by a later MAC."""
    run_case(mac_chains_and_bypass())


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
    accumulator's write port under every legal interleaving the generator finds. (The RTL
    runs them under co-simulation: each is a few hundred cycles, minutes here.)"""
    run_case(random_accumulator_traffic(seed), rtl=False)


def test_vector_ops_clamps_and_destinations():
    """Every VEC op on ordinary and special values (NaN, ±inf, ±0, subnormals, overflow),
    through clamp entries (incl. one left zero), to the output, accumulator and tensor RAM."""
    run_case(vector_ops())


def test_remote_writes_outputs_and_done():
    """A VEC to tensor RAM writes its own core at t+4 and the others at t+5; output beats
    leave at t+5 from either core; the done cycle counts a last remote write at t+5."""
    got = run_case(remote_writes())
    assert [c for c, _ in got.outputs[0]] == [11, 12, 13]
    assert got.done[0] == 14            # core 1's remote write to core 0


# -- VEC to accumulators (Dest.ACCS) ------------------------------------------------------

def not_bf16(words: np.ndarray) -> bool:
    """Return True if some fp32 pattern of ``words`` is not a bf16 value: had an ACCS
    result been rounded on its way, the test holding it would have seen the difference."""
    return bool((np.asarray(words, np.uint32) & np.uint32(0xFFFF)).any())


def test_accs_local():
    """ACCS with only the own bit writes the own accumulator at t+4, in fp32 (not rounded,
    clamped like any VEC result); a later VEC and a MAC accumulating on it see the value."""
    got = run_case(accs_local())
    assert not_bf16(got.acc[0][2:4])


def test_accs_remote_to_one_core():
    """ACCS to the other core only (t+5) and to both (own at t+4, other at t+5), while the
    receiver takes input beats into its tensor RAM and sends its own ACCS back: the
    received fp32 values are exact and are read by VEC and accumulated on by MAC."""
    got = run_case(accs_remote_to_one_core())
    assert not_bf16(got.acc[1][3]) and not_bf16(got.acc[0][4])
    assert got.acc[0][3].tolist() == got.acc[1][3].tolist()


def test_accs_remote_to_several_cores():
    """ACCS to two other cores at once (and to all three), and a core receiving in one
    cycle an ACCS block (accumulator) and a TRAM block (tensor RAM) from two other cores, or
    an ACCS block and an input beat: the two write muxes of a core are independent."""
    got = run_case(accs_remote_to_several_cores())
    assert got.acc[0][1].tolist() == got.acc[1][1].tolist() == got.acc[2][1].tolist()
    assert not_bf16(got.acc[1][2]) and not_bf16(got.acc[0][3])


def test_accs_mac_chain_split_across_cores():
    """A chain of MACs into one accumulator, split after k tiles: core 0 accumulates the
    first k, moves the partial sum with ACCS into core 1's accumulator, and core 1
    continues with MAC accumulate=1. The result is bit-identical to the whole chain on one
    core, and would not be if the partial sum were rounded to bf16 on the way."""
    case = accs_mac_chain_split()
    got = run_case(case)
    assert got.acc[1][2].tolist() == got.acc[0][0].tolist(), "split chain != whole chain"
    # The chain is not trivially exact: a bf16 partial sum would change the result.
    w, x = bf16_bits_to_f32(case.data["weights"]), bf16_bits_to_f32(case.data["acts"])
    k, tiles = case.data["k"], case.data["tiles"]
    partial = tile_matvec(w[0], x[0])
    for i in range(1, k):
        partial = accumulate(partial, tile_matvec(w[i], x[i]))
    rounded = bf16_bits_to_f32(f32_to_bf16_bits(partial))
    for i in range(k, tiles):
        rounded = accumulate(rounded, tile_matvec(w[i], x[i]))
    assert (f32_bits(rounded) != got.acc[1][2]).any()
    # One cycle earlier, core 1 would read its accumulator in the cycle of the ACCS write:
    # no bypass forwards an ACCS write, so the VM refuses that schedule.
    with pytest.raises(ScheduleError, match="in flight"):
        VM(accs_mac_chain_split(early=True).program)


@pytest.mark.parametrize("case", COLLISIONS)
def test_accs_write_port_collisions_raise_error(case):
    """Two accumulator writes in one cycle on one core (MAC write-back, local VEC result,
    ACCS arriving from another core; two arrivals) are refused by the VM and raise the
    RTL's error; one cycle apart, the same program is legal and matches the VM."""
    bad = collision_case(case, late=0)
    with pytest.raises(ScheduleError, match="a second write into the acc"):
        VM(bad.program)
    # Multi-core: tests/test_cosim_directed.py::test_rtl_unit_collisions_raise_error runs
    # the bad programs on the RTL.
    if in_native_tier(bad.program):
        assert run_rtl(bad.program, bad.inferences, tram_words=4).error
    run_case(collision_case(case, late=1))


def test_input_descriptors():
    """Input beat i is written in cycle i + 1 to the masked cores at its address, and can
    be read from cycle i + 2 on (here by VEC and MAC)."""
    run_case(input_descriptors())


def test_input_underrun_and_output_stall_raise_error():
    """A missing input beat and an output stall are errors (sticky)."""
    case = two_beats()
    prog, beats = case.program, case.inferences
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
    assert kinds == sorted(["indesc", "models", "imem", "tram", "clamp", "acc"]
                           + ["weights"] * b)
    top = (tmp_path / "tidal_top.v").read_text()
    assert top.count("tidal_core core0") == 1
    assert (tmp_path / "tidal_matrix.v").read_text().count("tidal_lane lane") == b
    prog = program(C1B4, [[vec(VecOp.PASS_T, tram=1), End()]],
                   weights=[np.ones((2, b, b), np.uint16)])
    images = memory_images(prog)
    paths = {m["path"] for m in manifest["memories"]}
    assert set(images) <= paths
    assert images["core0.matrix.lane1.wmem"] == [sum(1 << (16 * j) for j in range(b))] * 2


# -- the sequencer alone -------------------------------------------------------------------

def _sequencer_issues(program: list, entries: list[int], starts: set[int],
                      cycles: int) -> list[tuple[int, int, int]]:
    """Run a Sequencer on ``program`` (words from pc 0) with ``entries[c]`` on ``entry`` and
    ``start`` in the cycles of ``starts``; the instruction memory answers after INSTR_READ
    cycles. Return ``(cycle, pc, error)`` for every cycle that issued or raised ``error``."""
    words = [encode(i) for i in program]
    seq = Sequencer(Config.ip_core(1, 2))
    seen: list[tuple[int, int, int]] = []

    async def bench(ctx) -> None:
        addrs: list[int] = []
        for cycle in range(cycles):
            addrs.append(ctx.get(seq.imem_addr))
            read = addrs[-1 - INSTR_READ] if len(addrs) > INSTR_READ else 0
            ctx.set(seq.word, words[read] if read < len(words) else 0)
            ctx.set(seq.entry, entries[min(cycle, len(entries) - 1)])
            ctx.set(seq.start, cycle in starts)
            if ctx.get(seq.issue) or ctx.get(seq.error):
                seen.append((cycle, ctx.get(seq.pc), ctx.get(seq.error)))
            await ctx.tick()

    sim = Simulator(seq)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_sequencer_refill_takes_model_setup_cycles():
    """The entry read in cycle c (the model table's read of an index held from c - 1) may
    start an inference in c + MODEL_SETUP - 1, not a cycle earlier; an END issued before
    the entry's words are all copied still restarts at the entry with the rest in flight."""
    program = [Wait(2), End(), End(), Wait(1), End()]  # model 0 at pc 0, model 1 at pc 2
    change = 20
    entries = [0] * change + [2]
    earliest = change + MODEL_SETUP - 1
    on_time = _sequencer_issues(program, entries, {earliest, earliest + 1}, earliest + 4)
    assert [(c, pc) for c, pc, err in on_time if c >= change] == [
        (earliest, 2), (earliest + 1, 2)]
    assert not any(err for _, _, err in on_time)
    early = _sequencer_issues(program, entries, {earliest - 1}, earliest + 2)
    # (What follows an error is undefined: the top's error is sticky.)
    assert [(c, err) for c, _, err in early if c >= change][0] == (earliest - 1, 1)
    # After reset: model 0 started at the earliest cycle issues WAIT 2, then END, then
    # (restarted at once) WAIT 2 again.
    boot = MODEL_SETUP - 1
    seen = _sequencer_issues(program, [0], {boot, boot + 3}, boot + 8)
    assert [(c, pc, err) for c, pc, err in seen] == [
        (boot, 0, 0), (boot + 2, 1, 0), (boot + 3, 0, 0), (boot + 5, 1, 0)]
    # An END at the entry, issued while the entry's later words are still arriving.
    seen = _sequencer_issues([End(), Wait(1), End()], [0], {boot, boot + 1, boot + 2}, boot + 6)
    assert seen == [(boot, 0, 0), (boot + 1, 0, 0), (boot + 2, 0, 0)]
