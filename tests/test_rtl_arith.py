# amaranth: UnusedElaboratable=no
"""RTL arithmetic (``rtl/arith.py``, ``rtl/dot.py``) against ``isa.numerics``, bit for bit.

Each builder runs at every stage count from 1 to one beyond its natural cut points, and
must deliver each result exactly ``stages`` cycles after its operands. Each unit runs once
in Amaranth's simulator over a batch of vectors, one per cycle (one testbench looping over
all of them, since a simulator start costs more than a vector):
the cross product of directed edge values of every exponent class (zero, subnormal, normal,
largest, inf, NaN) and their ties and neighbours, then random vectors, half raw bit patterns
and half drawn from the exponent classes with short fractions (ties, cancellation,
overflow and underflow become likely). The expected values come from ``isa.numerics``,
which ``tests/test_numerics.py`` checks against independent references.

Amaranth's simulator runs an fp32 adder at about a hundred cycles a second, so the slow
units get their full batch at the stage count of the realistic depths
(``Depths.realistic()``) only; every other stage count, which moves registers but not logic,
gets a sample of it (:data:`N_SAMPLE` vectors): enough to show a signal that misses a
register, as consecutive vectors differ in every field.
"""

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from isa.config import Depths
from isa.numerics import (
    VecOp,
    accumulate,
    bf16_bits_to_f32,
    bf16_product,
    bits_f32,
    canonical_nan,
    clamp,
    f32_bits,
    f32_to_bf16_bits,
    tile_matvec,
    vec_max,
    vec_min,
    vec_op,
)
from rtl.arith import (
    Bf16Mul,
    ClampRound,
    Fp32Add,
    Fp32Max,
    Fp32Min,
    Fp32MulBf16,
    bf16_mul,
    clamp_round,
    fp32_add,
    fp32_mul_bf16,
)
from rtl.dot import DotUnit, dot_latency

# A hang guard: the edge-lane sweeps take minutes on a busy machine.
pytestmark = pytest.mark.timeout(600)

N_RANDOM = 1500
#: Vectors of the sampled batches (see the module docstring).
N_SAMPLE = 400
REALISTIC = Depths.realistic()


def sample(inputs: tuple[np.ndarray, ...], n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Return ``n`` of the vectors ``inputs`` (parallel arrays), drawn without replacement
    and kept in their order."""
    keep = np.sort(np.random.default_rng(seed).choice(len(inputs[0]), n, replace=False))
    return tuple(x[keep] for x in inputs)

# fp32 edge values: zeros, subnormals (smallest, largest, mid), the normal boundary, values
# around 1 (ties against 2^-24), the largest finite values, infinities and NaNs.
F32_EDGES = np.array([
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x00000002, 0x00400000, 0x007FFFFF,
    0x807FFFFF, 0x00800000, 0x80800000, 0x00800001, 0x3F800000, 0xBF800000, 0x3F800001,
    0xBF800001, 0x3F7FFFFF, 0x33800000, 0xB3800000, 0x33800001, 0x34000000, 0x7F000000,
    0x7F7FFFFE, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
    0x7F800001, 0x7FBFFFFF,
], dtype=np.uint32)

# bf16 edge values: the same classes, plus products that land on fp32 subnormal ties
# (0x1A00 = 2^-75, 0x1AC0 = 1.5 × 2^-74) and the extremes of the exponent sum.
BF16_EDGES = np.array([
    0x0000, 0x8000, 0x0001, 0x8001, 0x0040, 0x007F, 0x0080, 0x8080, 0x0081, 0x0100, 0x2000,
    0x3400, 0x3F80, 0xBF80, 0x3F81, 0x3FFF, 0x4000, 0x1A00, 0x9A00, 0x1A01, 0x1AC0, 0x1B20,
    0x7F00, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81,
], dtype=np.uint16)


def pairs(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of ``edges``."""
    a, b = np.meshgrid(edges, edges, indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def random_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    """fp32 patterns: half raw random bits, half random exponent class and short fraction."""
    raw = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    sign = rng.integers(0, 2, size=n).astype(np.uint32) << 31
    exp = rng.choice(np.r_[0, 0, 1, 1, 2, 127, 253, 254, 254, 255, np.arange(256)], size=n)
    frac = rng.integers(0, 1 << 23, size=n).astype(np.uint32)
    # Short fractions (few significant bits) make exact ties and cancellations common.
    frac = np.where(rng.random(n) < 0.5, frac & 0x7F0000, frac)
    classy = sign | (exp.astype(np.uint32) << 23) | frac
    return np.where(rng.random(n) < 0.5, raw, classy).astype(np.uint32)


def random_bf16(rng: np.random.Generator, n: int) -> np.ndarray:
    """bf16 patterns drawn like :func:`random_f32` (its top halves)."""
    return (random_f32(rng, n) >> 16).astype(np.uint16)


def near(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Patterns within a few ulps of ±x, or of ±x scaled by a small power of two."""
    y = x.astype(np.int64) + rng.integers(-3, 4, size=len(x))
    y = np.where(rng.random(len(x)) < 0.5, y, y + (rng.integers(-26, 27, size=len(x)) << 23))
    y = np.where(rng.random(len(x)) < 0.5, y, y ^ 0x80000000)
    return (y & 0xFFFFFFFF).astype(np.uint32)


def simulate(dut: wiring.Component, inputs: dict[str, np.ndarray], latency: int,
             out: str = "out") -> np.ndarray:
    """Drive one vector of ``inputs`` (port name → values) into ``dut`` per cycle and return
    port ``out`` read ``latency`` cycles after each: only a unit whose latency is exactly
    ``latency`` matches the model, as consecutive vectors differ."""
    columns = [(getattr(dut, name), values.tolist()) for name, values in inputs.items()]
    count = len(columns[0][1])
    port = getattr(dut, out)
    results: list[int] = []

    async def bench(ctx) -> None:
        for cycle in range(count + latency - 1):
            if cycle < count:
                for p, values in columns:
                    ctx.set(p, values[cycle])
            await ctx.tick()
            # Now in cycle + 1: the result of the vector presented latency cycles before.
            if cycle + 1 >= latency:
                results.append(ctx.get(port))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(results) == count > 0
    return np.array(results, dtype=np.uint64)


def assert_bits_equal(got: np.ndarray, want: np.ndarray, inputs: dict[str, np.ndarray]) -> None:
    """Assert ``got == want`` elementwise, listing the first mismatching vectors in hex."""
    want = np.asarray(want).astype(np.uint64)
    bad = np.flatnonzero(got != want)
    detail = [{**{k: hex(int(v[i])) for k, v in inputs.items()},
               "got": hex(int(got[i])), "want": hex(int(want[i]))} for i in bad[:5]]
    assert bad.size == 0, f"{bad.size} of {len(got)} vectors differ: {detail}"


def check_unit(dut: wiring.Component, inputs: dict[str, np.ndarray], latency: int,
               model: Callable[..., np.ndarray], out: str = "out") -> None:
    """Simulate ``dut`` on ``inputs`` and compare with ``model(*inputs.values())``."""
    assert_bits_equal(simulate(dut, inputs, latency, out), model(*inputs.values()), inputs)


# Sums at the top of the range: below, at and above half an ulp of the largest finite
# value (a tie rounds to even, which is inf), and largest plus largest.
OVERFLOW_PAIRS = np.array([
    (0x7F7FFFFF, 0x73000000), (0x7F7FFFFF, 0x737FFFFF), (0x7F7FFFFF, 0x73800000),
    (0x7F7FFFFF, 0x73800001), (0x7F7FFFFE, 0x73800000), (0x7F7FFFFF, 0x7F7FFFFF),
    (0xFF7FFFFF, 0xF3800000), (0x7F7FFFFF, 0xF3800000), (0x7F000000, 0x7F000000),
    (0x7EFFFFFF, 0x7EFFFFFF), (0x7EFFFFFF, 0x7F000000),
], dtype=np.uint32)


def binary_f32_vectors(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ea, eb = pairs(F32_EDGES)
    a = random_f32(rng, N_RANDOM)
    b = np.where(rng.random(N_RANDOM) < 0.5, near(rng, a), random_f32(rng, N_RANDOM))
    oa, ob = OVERFLOW_PAIRS.T
    return (np.concatenate([ea, oa, ob, a]),
            np.concatenate([eb, ob, oa, b]).astype(np.uint32))


def model_bf16_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return f32_bits(canonical_nan(bf16_product(bf16_bits_to_f32(a), bf16_bits_to_f32(b))))


def model_fp32_mul_bf16(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    return f32_bits(vec_op(VecOp.MUL, bits_f32(a), bf16_bits_to_f32(t)))


# Every stage count from the combinational one to one beyond the builder's natural cut
# points (whose extra register goes to the output).
@pytest.mark.parametrize("stages", range(1, 7))
def test_bf16_mul(stages: int) -> None:
    rng = np.random.default_rng(1)
    ea, eb = pairs(BF16_EDGES)
    a = np.concatenate([ea, random_bf16(rng, N_RANDOM)])
    b = np.concatenate([eb, random_bf16(rng, N_RANDOM)])
    check_unit(Bf16Mul(stages), {"a": a, "b": b}, stages, model_bf16_mul)


@pytest.mark.parametrize(("mul_stages", "round_stages"),
                         [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1), (2, 3), (3, 4)])
def test_fp32_mul_bf16(mul_stages: int, round_stages: int) -> None:
    rng = np.random.default_rng(2)
    ea = np.repeat(F32_EDGES, len(BF16_EDGES))
    et = np.tile(BF16_EDGES, len(F32_EDGES))
    a = np.concatenate([ea, random_f32(rng, N_RANDOM)])
    t = np.concatenate([et, random_bf16(rng, N_RANDOM)])
    check_unit(Fp32MulBf16(mul_stages, round_stages), {"a": a, "t": t},
               mul_stages + round_stages, model_fp32_mul_bf16)


@pytest.mark.parametrize("stages", range(1, 9))
def test_fp32_add(stages: int) -> None:
    a, b = binary_f32_vectors(3)
    if stages != REALISTIC.fp32_add:
        a, b = sample((a, b), N_SAMPLE, seed=stages)
    check_unit(Fp32Add(stages), {"a": a, "b": b}, stages,
               lambda x, y: f32_bits(accumulate(bits_f32(x), bits_f32(y))))


@pytest.mark.parametrize("stages", range(1, 4))
def test_fp32_max_min(stages: int) -> None:
    a, b = binary_f32_vectors(5)
    check_unit(Fp32Max(stages), {"a": a, "b": b}, stages,
               lambda x, y: f32_bits(vec_max(bits_f32(x), bits_f32(y))))
    check_unit(Fp32Min(stages), {"a": a, "b": b}, stages,
               lambda x, y: f32_bits(vec_min(bits_f32(x), bits_f32(y))))


def clamp_vectors(seed: int) -> dict[str, np.ndarray]:
    """Every fp32 edge value, its low half on and around the bf16 rounding boundary, under
    directed bounds; then random values and bounds."""
    rng = np.random.default_rng(seed)
    bounds = np.array([(0x00000000, 0x7F800000),  # ReLU
                       (0xFF800000, 0x7F800000),  # no bound
                       (0xBF800000, 0x3F800000),  # [-1, 1]
                       (0x80000000, 0x00000000),  # [-0, +0]
                       (0x3F800000, 0xBF800000),  # lo > hi: hi wins (MIN last)
                       (0x7FC00000, 0x7F800000)],  # NaN bound
                      dtype=np.uint32)
    lows = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=np.uint32)
    values = ((F32_EDGES[:, None] & 0xFFFF0000) | lows[None, :]).reshape(-1)
    x = np.repeat(values, len(bounds))
    lo, hi = np.tile(bounds.T, len(values))
    # Random values inside wide random bounds, so that the rounding is exercised too.
    wide = rng.random(N_RANDOM) < 0.5
    rlo = np.where(wide, 0xFF800000, random_f32(rng, N_RANDOM)).astype(np.uint32)
    rhi = np.where(wide, 0x7F800000, random_f32(rng, N_RANDOM)).astype(np.uint32)
    return {"a": np.concatenate([x, random_f32(rng, N_RANDOM)]).astype(np.uint32),
            "lo": np.concatenate([lo, rlo]), "hi": np.concatenate([hi, rhi])}


def model_clamp(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return f32_bits(clamp(bits_f32(v), bits_f32(lo), bits_f32(hi)))


@pytest.mark.parametrize("stages", range(1, 5))
def test_clamp_round(stages: int) -> None:
    inputs = clamp_vectors(6)
    clamped = model_clamp(*inputs.values())
    check_unit(ClampRound(stages), inputs, stages, model_clamp)
    check_unit(ClampRound(stages), inputs, stages,
               lambda *_: f32_to_bf16_bits(bits_f32(clamped)), out="out_bf16")


def test_clamp_round_broken_truncates() -> None:
    """The test-only fault truncates, and so differs from the rounding on ties."""
    inputs = clamp_vectors(7)
    truncated = model_clamp(*inputs.values()) >> 16
    check_unit(ClampRound(2, broken_rounding=True), inputs, 2, lambda *_: truncated,
               out="out_bf16")
    assert (truncated != f32_to_bf16_bits(bits_f32(model_clamp(*inputs.values())))).any()


def test_stage_arguments() -> None:
    m = Module()
    a, b = Signal(32), Signal(32)
    with pytest.raises(ValueError, match="fp32_add: stages must be at least 1, not 0"):
        fp32_add(m, a, b, stages=0)
    with pytest.raises(ValueError, match="bf16_mul: stages=2 needs a reg function"):
        bf16_mul(m, a[:16], b[:16], stages=2)
    with pytest.raises(ValueError, match="round_stages must be at least 1, not 0"):
        fp32_mul_bf16(m, a, b[:16], round_stages=0, reg=lambda v, _: v)
    with pytest.raises(ValueError, match="cut between multiply and round needs a reg"):
        fp32_mul_bf16(m, a, b[:16])
    with pytest.raises(ValueError, match="clamp_round: stages=3 needs a reg function"):
        clamp_round(m, a, a, b, stages=3)


# --- DotUnit ------------------------------------------------------------------------------

#: Unit depths for the DotUnit tests: products and adder-tree levels of several stages.
DOT_DEPTHS = [Depths.ideal(), Depths(bf16_mul=2, fp32_add=3)]
#: Edge-lane combinations per depth (test_dot_unit_edge_lanes).
EDGE_COMBOS = 250


def test_dot_latency() -> None:
    ideal = Depths.ideal()
    assert [dot_latency(b, ideal) for b in (1, 2, 4, 8, 16, 32, 64)] == [1, 2, 3, 4, 5, 6, 7]
    deep = Depths(bf16_mul=2, fp32_add=3)
    assert [dot_latency(b, deep) for b in (1, 2, 32)] == [2, 5, 17]
    for bad in (0, 3, 128):
        with pytest.raises(ValueError, match=f"power of two from 1 to 64, not {bad}"):
            dot_latency(bad, ideal)
    with pytest.raises(ValueError, match="power of two from 1 to 64, not 12"):
        DotUnit(12, ideal)


def pack_lanes(rows: np.ndarray) -> list[int]:
    """Pack each row of bf16 patterns into one integer, lane i at bits [16i, 16i + 16)."""
    return [sum(int(v) << (16 * i) for i, v in enumerate(row)) for row in rows]


@pytest.mark.parametrize("depths", DOT_DEPTHS, ids=["ideal", "deep"])
@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_dot_unit(width: int, depths: Depths) -> None:
    rng = np.random.default_rng(100 + width)
    n = {1: 300, 2: 200, 4: 100, 8: 40}[width]    # the simulator's time grows as width²
    # Mostly finite, similar-magnitude values (so the tree's cancellations and ties matter),
    # some vectors from all classes (subnormals, inf, NaN).
    x = f32_to_bf16_bits(rng.standard_normal((n, width)).astype(np.float32))
    tiles = f32_to_bf16_bits(rng.standard_normal((n, width, width)).astype(np.float32))
    wild = rng.random(n) < 0.2
    x[wild] = random_bf16(rng, int(wild.sum()) * width).reshape(-1, width)
    tiles[wild] = random_bf16(rng, int(wild.sum()) * width * width).reshape(-1, width, width)
    # Vector k is row k mod B of tile k: the unit is that lane of the matrix array.
    rows = np.arange(n) % width
    w = tiles[np.arange(n), rows]
    want = f32_bits(tile_matvec(bf16_bits_to_f32(tiles), bf16_bits_to_f32(x)))
    want = want[np.arange(n), rows]
    valid = rng.random(n) < 0.8  # bubbles test the valid pipeline
    valid[:4] = True

    dut = DotUnit(width, depths)
    latency = dot_latency(width, depths)
    a_beats, w_beats = pack_lanes(x), pack_lanes(w)
    seen: list[tuple[int, int]] = []  # (cycle the result appeared, value)
    presented: list[int] = []  # cycle each valid vector was presented

    async def bench(ctx) -> None:
        assert ctx.get(dut.out_valid) == 0  # valid pipeline comes out of reset empty
        for cycle in range(n + latency):
            if cycle < n:
                ctx.set(dut.a, a_beats[cycle])
                ctx.set(dut.w, w_beats[cycle])
                ctx.set(dut.valid, int(valid[cycle]))
                if valid[cycle]:
                    presented.append(cycle)
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            # Now in cycle + 1: a result visible here was presented latency cycles before.
            if ctx.get(dut.out_valid):
                seen.append((cycle + 1, ctx.get(dut.out)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()

    assert len(seen) == len(presented) == int(valid.sum())
    assert [c - latency for c, _ in seen] == presented
    got = np.array([v for _, v in seen], dtype=np.uint64)
    assert_bits_equal(got, want[valid], {"cycle": np.array(presented)})


@pytest.mark.parametrize("depths", DOT_DEPTHS, ids=["ideal", "deep"])
def test_dot_unit_edge_lanes(depths: Depths) -> None:
    """4-lane combinations of extreme products: overflow and cancellation of ±max,
    subnormals, -0, ±inf (inf − inf = NaN) through the tree. Each depth takes its own
    :data:`EDGE_COMBOS` of a fixed shuffle of the 2,401 combinations."""
    width = 4
    products = [(0x3F80, 0x7F7F), (0xBF80, 0x7F7F), (0x0001, 0x3F80), (0x8001, 0x3F80),
                (0x8000, 0x3F80), (0x7F80, 0x3F80), (0xFF80, 0x3F80)]
    combos = np.array(list(itertools.product(range(len(products)), repeat=width)))
    order = np.random.default_rng(9).permutation(len(combos))
    half = DOT_DEPTHS.index(depths)
    combos = combos[np.sort(order[half * EDGE_COMBOS:(half + 1) * EDGE_COMBOS])]
    pick = np.array(products, dtype=np.uint16)[combos]  # [n, width, 2]
    x, w = pick[..., 0], pick[..., 1]
    tiles = np.repeat(w[:, None, :], width, axis=1)  # every row of the tile is w
    want = f32_bits(tile_matvec(bf16_bits_to_f32(tiles), bf16_bits_to_f32(x)))[:, 0]
    dut = DotUnit(width, depths)
    latency = dot_latency(width, depths)
    a_beats, w_beats = pack_lanes(x), pack_lanes(w)
    results: list[int] = []

    async def bench(ctx) -> None:
        ctx.set(dut.valid, 1)
        for cycle in range(len(combos) + latency - 1):
            if cycle < len(combos):
                ctx.set(dut.a, a_beats[cycle])
                ctx.set(dut.w, w_beats[cycle])
            await ctx.tick()
            if cycle >= latency - 1:
                assert ctx.get(dut.out_valid)
                results.append(ctx.get(dut.out))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert_bits_equal(np.array(results, dtype=np.uint64), want, {"n": np.arange(len(want))})
