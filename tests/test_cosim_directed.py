"""Directed co-simulation programs for the numerics and the routing, on both simulators.

Each program is hand-built with every distance derived from :func:`isa.timing.latencies`,
so it is legal at realistic and ideal depths, and is compared with the VM by
:func:`sim.cosim.compare` (outputs, every memory write with its cycle, final state, issue
trace, cycles) on ``c1b4`` and ``c2b8`` at both depths, under Icarus and Verilator:

- :func:`vec_program`: every ``VecOp`` with every clamp entry to the output, and every op
  to the accumulator (fp32, unrounded) and to tensor RAM (bf16), on operand triples built
  for round-to-nearest-even ties (bf16 stores, fp32 adder, multiplier), sticky bits,
  cancellation, ±0, subnormals, overflow, inf − inf and NaN in every operand position;
- :func:`mac_program`: weight rows whose sums depend on the adder tree's pairing, need the
  sticky bit, cancel, overflow or hold NaN/inf/±0/subnormal products, accumulated into
  fp32 chains (ties in the accumulate adder) and sent out by every ``Dest``;
- :func:`routing_program`: per-core input masks (one core, the other, both, none),
  tensor-RAM and accumulator writes to the top half and the last word of every memory,
  local and remote, and input beats that continue after the last output beat;
- every hand-built program of the RTL unit tests (``tests/_unit_programs.py``, which
  ``tests/test_rtl_units.py`` runs on the native RTL), and the accumulator write-port
  collisions among them raising the RTL's ``error``.
"""

from __future__ import annotations

import numpy as np
import pytest
from _unit_programs import CASES, COLLISIONS, collision_case
from conftest import cosim_params, need, simulators_for

from isa.config import Config
from isa.instructions import Dest, End, Instruction, Mac, Vec, VecOp, Wait, encode_program
from isa.numerics import f32_to_bf16_bits
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import latencies
from sim.cosim import RtlError, compare, run_rtl
from sim.cosim.random_programs import clamp_table

CONFIGS = ("c1b4", "c2b8", "c1b4-ideal", "c2b8-ideal")

# Values of the operand triples (all bf16-representable).
INF, NAN = np.inf, np.nan
SUB = 2.0 ** -130            # a bf16 subnormal
MIN_NORMAL = 2.0 ** -126
BIG = 3.0e38

#: (x0, x1, x2) per lane: acc = x0 + x1 in fp32, then ``op(acc, x2)``.
TRIPLES = [
    (1, 2 ** -8, 0),                 # acc is halfway between two bf16: tie to even (down)
    (1 + 2 ** -7, 2 ** -8, 0),       # tie to even (up)
    (1, 2 ** -8, 2 ** -20),          # above the tie only by a far bit: sticky
    (1, -(2 ** -8), 2 ** -9),        # below the tie
    (2 ** 24, 1, 0),                 # fp32 adder tie: 2^24 + 1 rounds to even
    (2 ** 24, 3, 1),                 # fp32 adder tie, rounds up
    (1, 2 ** -24, 2 ** -24),         # fp32 ties in two adds
    (1.5, 2 ** -20, 1.5),            # a product that needs fp32 rounding
    (1 + 2 ** -7, 2 ** -23, 1 + 2 ** -7),
    (BIG, BIG, 2),                   # overflow to inf
    (INF, -INF, 1),                  # inf - inf = NaN
    (INF, 1, -INF),
    (NAN, 1, 1), (1, NAN, 1), (1, 1, NAN),
    (-0.0, -0.0, -0.0), (0.0, -0.0, -0.0), (-0.0, 0.0, 0.0), (-0.0, -0.0, 0.0),
    (SUB, SUB, SUB), (MIN_NORMAL, -(2.0 ** -127), SUB), (-SUB, 0.0, MIN_NORMAL),
    (1, -1, 0), (2 ** 20, -(2 ** 20), 2 ** -20), (3, -3, -0.0),
    (2 ** 100, 2 ** 100, 2 ** 100), (2 ** -100, 2 ** -100, 2 ** -100),
]


def gap(cycles: int) -> list[Instruction]:
    """Return what puts the next instruction ``cycles`` (≥ 1) after the current one."""
    return [Wait(cycles - 1)] if cycles > 1 else []


def bits(values: np.ndarray) -> np.ndarray:
    return f32_to_bf16_bits(np.asarray(values, np.float32))


def lanes(columns: list[tuple[float, ...]], b: int) -> list[np.ndarray]:
    """Return per-inference beat blocks: lane ``j`` of inference ``k`` = ``columns[k*b+j]``
    (each column a tuple, one value per beat), padded with zeros."""
    n = -(-len(columns) // b)
    cols = list(columns) + [tuple(0.0 for _ in columns[0])] * (n * b - len(columns))
    return [bits(np.array(cols[k * b:(k + 1) * b], np.float32).T) for k in range(n)]


def build(cfg: Config, code: list[list[Instruction]], *, dests: list[tuple[int, int]],
          n_out: int, weights: list[np.ndarray] | None = None,
          tram: list[np.ndarray] | None = None, name: str) -> Program:
    """Return a validated program (every core ends with ``END``; the clamp table of
    :func:`clamp_table`, with entries of every kind)."""
    b = cfg.block_size
    table = clamp_table(np.random.default_rng(0), cfg.clamp_store_depth)
    images = []
    for c in range(cfg.num_cores):
        images.append(CoreImage(
            encode_program([*code[c], End()]),
            weights[c] if weights else np.zeros((0, b, b), np.uint16),
            tram[c] if tram else np.zeros((0, b), np.uint16), table))
    program = Program(cfg, images, [TensorLayout((len(dests) * b,), b)],
                      [TensorLayout((n_out * b,), b)], np.array(dests, np.uint32),
                      {"name": name})
    program.validate()
    return program


def vec_program(cfg: Config) -> Program:
    """Every op with every clamp entry to the output, and every op to ACC and TRAM.

    Input beats x0, x1, x2 land in tensor RAM 0..2 of core 0; acc[1] = x0 + x1 (fp32, via
    acc[0] = x0); then ``op(acc[1], x2)`` for every op.
    """
    lat = latencies(cfg)
    depth = cfg.clamp_store_depth
    local = lat.vec_local_write + 1
    code: list[Instruction] = [
        Wait(2 + lat.input_write + 1),                     # the three beats have landed
        Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=0, dest=Dest.ACC, addr=0, cores=0),
        *gap(local),
        Vec(op=VecOp.ADD, clamp=0, acc=0, tram=1, dest=Dest.ACC, addr=1, cores=0),
        *gap(local),
    ]
    for op in VecOp:
        code += [Vec(op=op, clamp=k, acc=1, tram=2, dest=Dest.OUTPUT, addr=0, cores=0)
                 for k in range(depth)]
    for op in VecOp:
        code += [Vec(op=op, clamp=int(op) % depth, acc=1, tram=2, dest=Dest.ACC,
                     addr=2 + int(op), cores=0),
                 Vec(op=op, clamp=(int(op) + 3) % depth, acc=1, tram=2, dest=Dest.TRAM,
                     addr=3 + int(op), cores=1)]
    code += gap(local)
    # Read the TRAM results back out (bf16 stores of every op).
    code += [Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=3 + int(op), dest=Dest.OUTPUT, addr=0,
                 cores=0) for op in VecOp]
    n_out = len(VecOp) * depth + len(VecOp)
    idle: list[list[Instruction]] = [[] for _ in range(cfg.num_cores - 1)]
    return build(cfg, [code, *idle], dests=[(1, 0), (1, 1), (1, 2)], n_out=n_out,
                 name="directed vec ops")


def tree_rows(b: int) -> np.ndarray:
    """Return weight rows (float32 [n, B]) whose sums against x = 1 are hard (see module)."""
    t, s = 2.0 ** -24, 2.0 ** -30
    pair_sensitive = [[1, t, t, 0], [1, 0, t, t], [t, 1, 0, t], [1, 0, t, s], [1, t, 0, s],
                      [2 ** 20, -(2 ** 20), 1, 2 ** -20], [1, 2 ** 20, -(2 ** 20), t],
                      [BIG, BIG, 0, 0], [BIG, 0, BIG, -BIG], [INF, -INF, 0, 0],
                      [INF, 0, 1, 0], [NAN, 1, 0, 0], [1, 0, 0, NAN],
                      [-0.0, -0.0, -0.0, -0.0], [0.0, -0.0, -0.0, -0.0],
                      [SUB, SUB, 0, 0], [MIN_NORMAL, -(2.0 ** -127), 0, 0],
                      [1, -1, 2 ** -24, 0], [3, 2 ** -23, 2 ** -23, 2 ** -23]]
    rows = []
    for r in pair_sensitive:
        if b == 4:
            rows.append(r)
        else:
            # Spread the pattern over both halves of the tree, and keep it in one half.
            spread = [0.0] * b
            spread[0], spread[b // 2], spread[1], spread[b // 2 + 1] = r
            rows += [r + [0.0] * (b - 4), spread]
    return np.array(rows, np.float32)


def mac_program(cfg: Config) -> Program:
    """MACs of hard rows into fp32 chains, sent out by every destination.

    Tile ``k`` of core 0 holds rows ``k·B .. k·B + B − 1`` of :func:`tree_rows`. Each tile's
    product is set into acc[k], then tile ``k + 1`` (wrapping) is accumulated onto it (fp32
    ties in the accumulate adder); acc[k] then goes to the output (bf16), to tensor RAM
    (bf16, own core and, with two cores, the other's top half) and to accumulators (fp32,
    ``ACCS``).
    """
    lat = latencies(cfg)
    b, n = cfg.block_size, cfg.num_cores
    rows = tree_rows(b)
    tiles = -(-len(rows) // b)
    rows = np.vstack([rows, np.zeros((tiles * b - len(rows), b), np.float32)])
    weights = bits(rows.reshape(tiles, b, b))
    code: list[Instruction] = [Wait(lat.input_write + 1)]
    for k in range(tiles):
        code.append(Mac(acc=k, tram=0, weight=k, accumulate=0))
    code += gap(max(1, lat.mac_spacing - tiles + 1))
    for k in range(tiles):
        code.append(Mac(acc=k, tram=0, weight=(k + 1) % tiles, accumulate=1))
    code += gap(lat.mac_acc_write + 1)
    top = cfg.tensor_ram_depth // 2
    everyone = (1 << n) - 1
    for k in range(tiles):
        code += [Vec(op=VecOp.PASS_A, clamp=0, acc=k, tram=0, dest=Dest.OUTPUT, addr=0,
                     cores=0),
                 Vec(op=VecOp.PASS_A, clamp=0, acc=k, tram=0, dest=Dest.TRAM, addr=top + k,
                     cores=everyone),
                 Vec(op=VecOp.PASS_A, clamp=0, acc=k, tram=0, dest=Dest.ACCS,
                     addr=cfg.accum_store_depth - 1 - k, cores=everyone)]
    idle: list[list[Instruction]] = [[] for _ in range(n - 1)]
    zero = np.zeros((0, b, b), np.uint16)
    return build(cfg, [code, *idle], dests=[(1, 0)], n_out=tiles,
                 weights=[weights] + [zero] * (n - 1), name="directed mac tree")


#: Inputs of :func:`mac_program`, one beat per inference: ones (the products are the
#: weights), signs, specials, and values whose products underflow.
def mac_inputs(b: int) -> list[np.ndarray]:
    specials = [1, -1, NAN, INF, -0.0, 0.0, SUB, 2.0 ** -70]
    return [bits(np.array([row], np.float32)) for row in (
        [1.0] * b, [(-1.0) ** j for j in range(b)], [specials[j % 8] for j in range(b)],
        [2.0 ** -70] * b, [2.0 ** 60] * b)]


def routing_program(cfg: Config) -> Program:
    """Input masks of every kind, writes to the top of every memory, late input beats.

    Beats: 0 → the last tensor-RAM word of core 0 only; 1 → the middle of the last core
    only; 2 → word 5 of every core; 3 → no core; the rest → every core (or none, where
    they would collide with a copy), still arriving after the last output beat. Core 0
    copies beat 0 to the top half of every core's tensor RAM and to the last accumulator of
    every core (``ACCS``); every core sends its copies out; the last core adds what it
    received to beat 1.
    """
    lat = latencies(cfg)
    n = cfg.num_cores
    last, mid = n - 1, cfg.tensor_ram_depth // 2
    top, acc_top = cfg.tensor_ram_depth - 1, cfg.accum_store_depth - 1
    everyone = (1 << n) - 1
    start = 2 + lat.input_write + 1                     # beats 0..2 have landed
    send = [Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=top, dest=Dest.TRAM, addr=mid + 1,
                cores=everyone),
            Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=top, dest=Dest.ACCS, addr=acc_top,
                cores=everyone)]
    arrived = start + 1 + lat.vec_remote_write + 1      # both copies readable everywhere
    last_out = arrived + 3 * last + 2 + lat.vec_output
    dests = [(1, top), (1 << last, mid), (everyone, 5), (0, 6)]
    # Late beats: the last one is written two cycles after the last output beat; those
    # landing when core 0's tensor-RAM copies do go to no core (one write port).
    busy = {start + lat.vec_local_write, start + lat.vec_remote_write}
    dests += [(0 if i + lat.input_write in busy else everyone, 3 + i)
              for i in range(len(dests), last_out + 3 - lat.input_write)]
    code: list[list[Instruction]] = []
    outputs = 0
    for c in range(n):
        instrs: list[Instruction] = [Wait(start)] + (send if c == 0 else [])
        t = start + (2 if c == 0 else 0)
        # Stagger the cores' output beats: core c's beats come after core c - 1's.
        instrs += gap(arrived + 3 * c - t)
        instrs += [Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=mid + 1, dest=Dest.OUTPUT,
                       addr=0, cores=0),
                   Vec(op=VecOp.PASS_A, clamp=0, acc=acc_top, tram=0, dest=Dest.OUTPUT,
                       addr=0, cores=0),
                   Vec(op=VecOp.ADD, clamp=0, acc=acc_top, tram=mid if c == last else 5,
                       dest=Dest.OUTPUT, addr=0, cores=0)]
        outputs += 3
        code.append(instrs)
    program = build(cfg, code, dests=dests, n_out=outputs, name="directed routing")
    assert max(program.output_cycles()) < len(dests) - 1 + lat.input_write, \
        "the input beats must continue after the last output beat"
    return program


def random_beats(program: Program, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    b = program.config.block_size
    return [bits(rng.standard_normal((len(program.input_dests), b)).astype(np.float32) * 4)
            for _ in range(n)]


def cases(config: str) -> list[tuple[Program, list[np.ndarray]]]:
    """Return the directed programs of ``config`` with their inputs."""
    cfg = Config.preset(config)
    b = cfg.block_size
    vec = vec_program(cfg)
    mac = mac_program(cfg)
    routing = routing_program(cfg)
    return [(vec, lanes(TRIPLES, b)), (mac, mac_inputs(b)),
            (routing, random_beats(routing, 2, 1))]


@pytest.mark.parametrize("config", CONFIGS)
def test_directed_programs_are_legal_and_hard(config: str) -> None:
    """The programs pass the VM's schedule checks and reach what they are for."""
    from sim.cosim import vm_reference

    for program, inputs in cases(config):
        ref = vm_reference(program, inputs)
        assert all(len(o) == len(program.output_cycles()) for o in ref.outputs)
    vec, inputs = cases(config)[0]
    out = np.concatenate(vm_reference(vec, inputs).outputs)
    assert (out == 0x8000).any() and (out == 0).any() and (out == 0x7F80).any()
    assert ((out & 0x7F80) == 0x7F80).any() and ((out & 0x7F80) == 0).any()


@pytest.mark.cosim
@pytest.mark.timeout(900)
@pytest.mark.parametrize("config, simulator", cosim_params(list(CONFIGS)))
def test_directed_programs_match_vm(simulator: str, config: str) -> None:
    """Numerics and routing programs: bit- and cycle-exact, every write included."""
    need(simulator)
    for program, inputs in cases(config):
        report = compare(program, inputs=inputs, simulator=simulator)
        assert report.ok, report.summary()
        assert report.write_records > 0 and report.output_values > 0


@pytest.mark.cosim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name, simulator", [
    (name, sim) for name, make in CASES.items() for sim in simulators_for(make().program.config)])
def test_rtl_unit_programs_match_vm(simulator: str, name: str) -> None:
    """Every hand-built program of the RTL unit tests (ideal depths, c1b4, c2b8, c3b4)."""
    need(simulator)
    case = CASES[name]()
    report = compare(case.program, inputs=case.beats(), simulator=simulator)
    assert report.ok, report.summary()


@pytest.mark.cosim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("simulator", sorted({
    sim for name in COLLISIONS for sim in simulators_for(collision_case(name, 0).program.config)}))
def test_rtl_unit_collisions_raise_error(simulator: str) -> None:
    """Two accumulator writes in one cycle on one core (the VM refuses these programs):
    the generated RTL raises ``error``, as the native one does in the unit tests."""
    need(simulator)
    for name in COLLISIONS:
        case = collision_case(name, late=0)
        with pytest.raises(RtlError, match="raised error"):
            run_rtl(case.program, case.beats(), simulator=simulator)
