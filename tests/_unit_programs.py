"""The hand-built programs of the RTL unit tests, shared by the tests that run them.

``tests/test_rtl_units.py`` runs each on the native RTL in Amaranth's simulator against its
own reference and the VM; ``tests/test_cosim_directed.py`` runs each through
:func:`sim.cosim.compare` on Icarus and Verilator. Every builder returns a
:class:`UnitCase`: the program, its inferences' input beats and what the unit test needs
beyond them. The programs count cycles on the one-stage (ideal) pipelines; the compiled
programs of ``tests/test_cosim.py`` cover the realistic and unusual depths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from isa.config import Config, Depths
from isa.instructions import Dest, End, Instruction, Mac, Vec, VecOp, Wait, encode_program
from isa.numerics import f32_to_bf16_bits, pack_beats, unpack_beats
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import latencies
from sim.vm import VM, ScheduleError

IDEAL = Depths.ideal()
C1B4 = Config.ip_core(1, 4, depths=IDEAL)
C2B8 = Config.ip_core(2, 8, depths=IDEAL)
C3B4 = Config.ip_core(3, 4, depths=IDEAL)   # only where a core must receive from two others
LAT = latencies(C2B8)
VEC_LOCAL_WRITE, VEC_REMOTE_WRITE, VEC_OUTPUT = (
    LAT.vec_local_write, LAT.vec_remote_write, LAT.vec_output)
RNG_SEED = 20241125

INF = float("inf")
SPECIALS = [0.0, -0.0, INF, -INF, float("nan"), 1.0, -1.5, 3.0e38, -3.0e38, 1e-40, -1e-39,
            2.5, -0.75, 1.00390625, 65504.0, 1e-45]


@dataclasses.dataclass
class UnitCase:
    """A hand-built program and the input beats of each of its inferences.

    Attributes
    ----------
    program : Program
    inferences : list of list of int
        Per inference, its input beats (packed, :func:`isa.numerics.pack_beats`).
    tram_words : int
        Tensor-RAM words per core the unit test compares.
    gap : int
        Idle cycles between inferences in the unit test (co-simulation runs them back to
        back, which the program allows as well).
    data : dict
        What the unit test asserts on beyond the run (weights, activations, ...).
    """

    program: Program
    inferences: list[list[int]]
    tram_words: int = 32
    gap: int = 0
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def beats(self) -> list[np.ndarray]:
        """Return the inferences' beats as ``uint16`` [n_in, B] arrays (for co-simulation)."""
        b = self.program.config.block_size
        return [unpack_beats(beats, b).reshape(-1, b) for beats in self.inferences]


# -- building programs -------------------------------------------------------------------

def bf16(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return bf16 bit patterns of ``values`` (rounded to nearest even)."""
    return f32_to_bf16_bits(np.asarray(values, dtype=np.float32))


def random_bf16(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0
                ) -> np.ndarray:
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


def accs(op: VecOp, *, acc: int = 0, tram: int = 0, addr: int, cores: int,
         clamp_entry: int = 0) -> Vec:
    """Return a VEC whose fp32 result goes to accumulator ``addr`` of the ``cores``."""
    return vec(op, acc=acc, tram=tram, dest=Dest.ACCS, addr=addr, cores=cores,
               clamp_entry=clamp_entry)


def random_beats(rng: np.random.Generator, config: Config, n: int) -> list[int]:
    """Return ``n`` input beats of random bf16 values."""
    return pack_beats(random_bf16(rng, (n, config.block_size)), config.block_size)


# -- the programs --------------------------------------------------------------------------

def sequencer_restart() -> UnitCase:
    """WAITs and END on one core, three inferences carrying state from one to the next."""
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
    return UnitCase(prog, [random_beats(rng, C1B4, 1) for _ in range(3)], tram_words=4)


def idle_gap_end_first() -> UnitCase:
    """A core whose pc 0 is END; input beats written after the only output beat."""
    rng = np.random.default_rng(RNG_SEED + 1)
    b = C2B8.block_size
    dests = [(0b11, 3 + i) for i in range(8)]            # written in cycles 1 .. 8
    prog = program(C2B8, [[End()], [vec(VecOp.PASS_T, tram=0), End()]],   # out at 5
                   tram=[np.zeros((0, b)), random_bf16(rng, (1, b))], input_dests=dests)
    return UnitCase(prog, [random_beats(rng, C2B8, len(dests)) for _ in range(2)],
                    tram_words=12, gap=3)


def mac_chains_and_bypass() -> UnitCase:
    """MAC chains at distances 1–3, interleaved chains, set after accumulate, MACs on a VEC
    result in the accumulator."""
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
    return UnitCase(prog, [random_beats(rng, C1B4, 1)], tram_words=8)


def random_accumulator_traffic(seed: int) -> UnitCase:
    """Random MACs and VEC results into a few accumulators at random distances, each kept
    only where the VM accepts the schedule."""
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
    return UnitCase(prog, [random_beats(rng, C1B4, 1)], tram_words=8)


def vector_ops() -> UnitCase:
    """Every VEC op on ordinary and special values through clamp entries, to the output,
    the accumulator and tensor RAM."""
    rng = np.random.default_rng(RNG_SEED + 3)
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
    prog = program(C1B4, [instrs], tram=[tram], clamps=[clamps], input_dests=[(1, 20)])
    return UnitCase(prog, [random_beats(rng, C1B4, 1)], tram_words=16)


def remote_writes() -> UnitCase:
    """VECs to tensor RAM of the own and the other core, output beats from both cores, a
    last remote write deciding the done cycle."""
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
    return UnitCase(prog, [random_beats(rng, C2B8, 1)], tram_words=32)


def accs_local() -> UnitCase:
    """ACCS to the own accumulator, read by a VEC and accumulated on by a MAC."""
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
    return UnitCase(prog, [random_beats(rng, C1B4, 1)], tram_words=4)


def accs_remote_to_one_core() -> UnitCase:
    """ACCS to the other core and to both, while the receiver takes input beats and sends
    its own ACCS back."""
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
    return UnitCase(prog, [random_beats(rng, C2B8, len(dests))], tram_words=32)


def accs_remote_to_several_cores() -> UnitCase:
    """ACCS to two and to three cores; a core receiving an ACCS and a TRAM block (or an
    ACCS block and an input beat) in one cycle."""
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
    return UnitCase(prog, [random_beats(rng, C3B4, len(dests))], tram_words=32)


def accs_mac_chain_split(*, early: bool = False) -> UnitCase:
    """A MAC chain split across two cores by an ACCS of the partial sum (``data``: the
    weights, activations, tile count and split point). ``early``: core 1 resumes one cycle
    too early (in the cycle of the ACCS write), which the VM refuses."""
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
    resume = send + VEC_REMOTE_WRITE + 1 - LAT.mac_acc_read - int(early)
    rest = [Mac(acc=2, tram=i, weight=i, accumulate=1) for i in range(k, tiles)]
    core1 = [Wait(resume), *rest, Wait(mac_write + 2 + int(early)), vec(VecOp.PASS_A, acc=2),
             End()]
    cores = [core0, core1]
    if early:
        # The VM refuses this schedule, so it cannot go through program(), which validates
        # only the encoding; the caller builds the VM.
        return UnitCase(program(C2B8, cores, weights=[weights] * 2, tram=[acts] * 2,
                                input_dests=[(0b11, 30)]), [])
    prog = program(C2B8, cores, weights=[weights] * 2, tram=[acts] * 2,
                   input_dests=[(0b11, 30)])
    return UnitCase(prog, [random_beats(rng, C2B8, 1)], tram_words=32,
                    data={"weights": weights, "acts": acts, "tiles": tiles, "k": k})


def collision(case: str, late: int) -> Program:
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


#: The accumulator write-port collisions of :func:`collision`.
COLLISIONS = ("mac-and-remote", "mac-and-local", "vec-and-remote", "remote-and-remote")


def collision_case(case: str, late: int) -> UnitCase:
    """Return :func:`collision` with one inference of random beats."""
    rng = np.random.default_rng(RNG_SEED + 14)
    prog = collision(case, late)
    return UnitCase(prog, [random_beats(rng, prog.config, 1)], tram_words=4)


def input_descriptors() -> UnitCase:
    """Input beats to one core, the other and both, read by VEC and MAC once landed."""
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
    return UnitCase(prog, [random_beats(rng, C2B8, len(dests)) for _ in range(2)],
                    tram_words=8)


def two_beats() -> UnitCase:
    """Two input beats and one output beat (the underrun and stall tests drop one)."""
    rng = np.random.default_rng(RNG_SEED + 6)
    prog = program(C1B4, [[Wait(4), vec(VecOp.PASS_T, tram=0), End()]],
                   input_dests=[(1, 0), (1, 1)])
    return UnitCase(prog, [random_beats(rng, C1B4, 2)], tram_words=2)


#: Every legal hand-built program, by name (what the co-simulation runs).
CASES: dict[str, Callable[[], UnitCase]] = {
    "sequencer-restart": sequencer_restart,
    "idle-gap-end-first": idle_gap_end_first,
    "mac-chains-and-bypass": mac_chains_and_bypass,
    **{f"random-accumulator-traffic-{s}": (lambda s=s: random_accumulator_traffic(s))
       for s in range(3)},
    "vector-ops": vector_ops,
    "remote-writes": remote_writes,
    "accs-local": accs_local,
    "accs-remote-to-one-core": accs_remote_to_one_core,
    "accs-remote-to-several-cores": accs_remote_to_several_cores,
    "accs-mac-chain-split": accs_mac_chain_split,
    **{f"collision-{c}-late": (lambda c=c: collision_case(c, 1)) for c in COLLISIONS},
    "input-descriptors": input_descriptors,
    "two-beats": two_beats,
}
