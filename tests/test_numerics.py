"""Tests of the numerics contract (``isa/numerics.py``).

Independent references: PyTorch's float32 → bfloat16 conversion, and float64 arithmetic
rounded once to float32 (exact for a bf16 × bf16 product; innocuous double rounding for a
binary32 sum, since 53 ≥ 2 × 24 + 2), so numpy's float32 behaviour is checked, not assumed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isa.numerics import (
    CANONICAL_NAN_BF16,
    CANONICAL_NAN_F32,
    VecOp,
    accumulate,
    bf16_bits_to_f32,
    bf16_product,
    bits_f32,
    canonical_nan,
    clamp,
    dot_tree,
    f32_bits,
    f32_to_bf16_bits,
    pack_beats,
    round_to_bf16,
    tile_matvec,
    unpack_beats,
    vec_max,
    vec_min,
    vec_op,
)

pytestmark = pytest.mark.timeout(60)

RNG_SEED = 20240611
ALL_BF16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
F32_PATTERNS = st.integers(0, 0xFFFFFFFF)
BF16_PATTERNS = st.integers(0, 0xFFFF)
PROPERTY = settings(max_examples=300, deadline=None)


def torch_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bf16 bit patterns of PyTorch's ``tensor(x).to(torch.bfloat16)``."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def ref_op(op: np.ufunc, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``op`` of float32 ``x`` and ``y`` computed in float64, rounded once to float32.

    numpy warnings are silenced here only (inf × 0 and casts of signalling NaNs warn); the
    functions under test must be quiet on their own.
    """
    with np.errstate(all="ignore"):
        wide = op(np.asarray(x, np.float32).astype(np.float64),
                  np.asarray(y, np.float32).astype(np.float64))
    return ref_f32(wide)


def ref_f32(x64: np.ndarray) -> np.ndarray:
    """Round float64 values once to float32 and canonicalise NaNs (the reference model)."""
    with np.errstate(all="ignore"):
        x = np.asarray(x64, dtype=np.float64).astype(np.float32)
    return np.where(np.isnan(x), bits_f32(CANONICAL_NAN_F32), x)


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Assert float32 arrays are identical bit for bit, reporting the first mismatches."""
    a = f32_bits(actual)
    e = f32_bits(expected)
    assert a.shape == e.shape
    bad = np.flatnonzero(a != e)
    assert bad.size == 0, [(hex(a.flat[i]), hex(e.flat[i])) for i in bad[:8]]


def random_bf16_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """bf16 values of every class: random bit patterns, small integers and specials."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    nice = f32_to_bf16_bits(rng.integers(-8, 9, size=n).astype(np.float32) / 4)
    special = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F,
                        0x7F80, 0xFF80, 0x7FC0, 0x3F80, 0xBF80], dtype=np.uint16)
    pick = rng.integers(0, 3, size=n)
    out = np.where(pick == 0, bits, nice)
    out[pick == 2] = rng.choice(special, size=int((pick == 2).sum()))
    return bf16_bits_to_f32(out)


# --- fp32 → bf16 -------------------------------------------------------------------------

# (fp32 bits, bf16 bits) pairs, each stating one rule of round-to-nearest-even on the pattern.
DIRECTED_BF16 = [
    (0x3F800000, 0x3F80),  # exact
    (0x3F808000, 0x3F80),  # tie, kept LSB even: down
    (0x3F818000, 0x3F82),  # tie, kept LSB odd: up
    (0x3F808001, 0x3F81),  # just above half: up
    (0x3F807FFF, 0x3F80),  # just below half: down
    (0xBF808000, 0xBF80),  # negative tie, even
    (0xBF818000, 0xBF82),  # negative tie, odd
    (0x3FFF8000, 0x4000),  # tie carries into the exponent
    (0x7F7F0000, 0x7F7F),  # largest finite bf16
    (0x7F7F7FFF, 0x7F7F),  # below half an ulp above it: stays finite
    (0x7F7F8000, 0x7F80),  # tie with odd LSB: overflows to +inf
    (0xFF7F8000, 0xFF80),  # ... and to -inf
    (0x7F7FFFFF, 0x7F80),  # largest finite fp32: inf
    (0x7F7E8000, 0x7F7E),  # tie with even LSB near the top: stays finite
    (0x00000000, 0x0000),  # +0
    (0x80000000, 0x8000),  # -0
    (0x00000001, 0x0000),  # smallest fp32 subnormal: +0
    (0x80000001, 0x8000),  # ... negative: -0
    (0x00008000, 0x0000),  # tie at zero: even (0)
    (0x00008001, 0x0001),  # above the tie: smallest bf16 subnormal
    (0x00018000, 0x0002),  # subnormal tie, odd: up
    (0x00010000, 0x0001),  # smallest bf16 subnormal
    (0x007F0000, 0x007F),  # largest bf16 subnormal
    (0x007F7FFF, 0x007F),  # below the tie: stays subnormal
    (0x007F8000, 0x0080),  # subnormal/normal boundary: tie rounds up to the smallest normal
    (0x007FFFFF, 0x0080),  # largest fp32 subnormal: smallest bf16 normal
    (0x00800000, 0x0080),  # smallest normal
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x7F800001, 0x7FC0),  # signalling NaN, smallest payload
    (0x7F810000, 0x7FC0),  # NaN whose truncation would be a bf16 NaN with payload
    (0x7FC00000, 0x7FC0),  # canonical quiet NaN
    (0xFFC00000, 0x7FC0),  # negative NaN
    (0x7FFFFFFF, 0x7FC0),  # largest NaN (rounding must not carry into the sign)
    (0xFFFFFFFF, 0x7FC0),
]


def test_f32_to_bf16_directed() -> None:
    x = bits_f32(np.array([d[0] for d in DIRECTED_BF16], dtype=np.uint32))
    want = np.array([d[1] for d in DIRECTED_BF16], dtype=np.uint16)
    got = f32_to_bf16_bits(x)
    assert [hex(g) for g in got] == [hex(w) for w in want]
    not_nan = ~np.isnan(x)
    np.testing.assert_array_equal(torch_bf16_bits(x[not_nan]), want[not_nan])


def test_f32_to_bf16_matches_torch_random() -> None:
    rng = np.random.default_rng(RNG_SEED)
    bits = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    # Force the low half onto the rounding boundaries (ties and their neighbours) for a part.
    bits[::4] = (bits[::4] & 0xFFFF0000) | rng.choice([0x7FFF, 0x8000, 0x8001], size=1 << 18)
    nice = (rng.standard_normal(1 << 18) * 10.0 ** rng.integers(-40, 39, 1 << 18))
    x = np.concatenate([bits_f32(bits), ref_f32(nice)])
    got = f32_to_bf16_bits(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], torch_bf16_bits(x[~nan]))
    assert np.all(got[nan] == CANONICAL_NAN_BF16)
    assert nan.sum() > 1000  # random patterns hit NaNs with payloads


def test_bf16_round_trip_exhaustive() -> None:
    x = bf16_bits_to_f32(ALL_BF16)
    np.testing.assert_array_equal(f32_bits(x), ALL_BF16.astype(np.uint32) << 16)
    back = f32_to_bf16_bits(x)
    nan = np.isnan(x)
    assert nan.sum() == 2 * 127  # exponent all ones, fraction non-zero, either sign
    np.testing.assert_array_equal(back[~nan], ALL_BF16[~nan])
    assert np.all(back[nan] == CANONICAL_NAN_BF16)


def test_round_to_bf16_is_widened_conversion() -> None:
    rng = np.random.default_rng(RNG_SEED + 1)
    x = bits_f32(rng.integers(0, 1 << 32, size=1 << 16, dtype=np.uint64).astype(np.uint32))
    assert_same_bits(round_to_bf16(x), bf16_bits_to_f32(f32_to_bf16_bits(x)))
    assert round_to_bf16(x).dtype == np.float32


def test_canonical_nan() -> None:
    x = bits_f32(np.array([0x7F800001, 0xFFC00000, 0x7FFFFFFF, 0x3F800000, 0x80000000],
                          dtype=np.uint32))
    assert [hex(v) for v in f32_bits(canonical_nan(x))] == [
        "0x7fc00000", "0x7fc00000", "0x7fc00000", "0x3f800000", "0x80000000"]
    clean = np.ones(8, dtype=np.float32)
    assert canonical_nan(clean) is clean  # nothing copied when there is no NaN


# --- products ----------------------------------------------------------------------------

def test_bf16_product_random_against_float64() -> None:
    rng = np.random.default_rng(RNG_SEED + 2)
    a = random_bf16_values(rng, 1 << 20)
    b = random_bf16_values(rng, 1 << 20)
    assert_same_bits(canonical_nan(bf16_product(a, b)),
                     ref_op(np.multiply, a, b))


def bf16(bits: int) -> np.float32:
    return bf16_bits_to_f32(np.uint16(bits))[()]


@pytest.mark.parametrize("a, b, want", [
    (0x1C80, 0x1C80, 0x00000200),  # 2^-70 squared = 2^-140: exact fp32 subnormal
    (0x1A00, 0x1A00, 0x00000000),  # 2^-75 squared = 2^-150: tie between 0 and 2^-149 → 0
    (0x1A01, 0x1A01, 0x00000001),  # just above the tie → smallest subnormal
    (0x9A00, 0x1A00, 0x80000000),  # negative underflow keeps its sign: -0
    (0x1A40, 0x1A40, 0x00000001),  # 1.5² × 2^-150 = 1.125 × 2^-149 → 2^-149
    (0x1AC0, 0x1A00, 0x00000002),  # 1.5 × 2^-149: tie, odd → even (2)
    (0x1B20, 0x1A00, 0x00000002),  # 2.5 × 2^-149: tie, even (2) stays
    (0x1AC0, 0x1AC0, 0x00000004),  # 4.5 × 2^-149: tie → 4
    (0x1B40, 0x1B40, 0x00000012),  # 18 × 2^-149: exact subnormal
    (0x0001, 0x0001, 0x00000000),  # 2^-266: far below the range → +0
    (0x0001, 0x3F80, 0x00010000),  # smallest bf16 subnormal × 1 = 2^-133, exact
    (0x007F, 0x3F00, 0x003F8000),  # largest bf16 subnormal × 0.5, exact subnormal
    (0x0001, 0x7F00, 0x3C800000),  # bf16 subnormal 2^-133 × 2^127 = 2^-6 (normal)
    (0x7F7F, 0x7F7F, 0x7F800000),  # largest finite squared: +inf
    (0xFF7F, 0x7F7F, 0xFF800000),  # ... -inf
    (0x7F80, 0x0000, CANONICAL_NAN_F32),  # inf × 0 = NaN
    (0x8000, 0xFF80, CANONICAL_NAN_F32),  # -0 × -inf = NaN
    (0x7F80, 0x0001, 0x7F800000),  # inf × subnormal = inf
    (0xFF80, 0x3F80, 0xFF800000),
    (0x0000, 0xBF80, 0x80000000),  # +0 × -1 = -0
    (0x8000, 0x8000, 0x00000000),  # -0 × -0 = +0
    (0x7FC1, 0x3F80, CANONICAL_NAN_F32),  # NaN propagates
    (0x3FFF, 0x3FFF, 0x407E0100),  # 1.9921875² exact in fp32 (16 significant bits)
])
def test_bf16_product_directed(a: int, b: int, want: int) -> None:
    got = canonical_nan(bf16_product(bf16(a), bf16(b)))
    ref = ref_op(np.multiply, bf16(a), bf16(b))
    assert hex(f32_bits(ref)) == hex(want)
    assert hex(f32_bits(got)) == hex(want)


# --- dot products and accumulation -------------------------------------------------------

def test_dot_tree_order_is_pairwise() -> None:
    p = np.float32([1e8, 1.0, -1e8, 1.0])
    # The tree adds (p0 + p1) + (p2 + p3): 1e8 + 1 = 1e8 and -1e8 + 1 = -1e8 in fp32, so 0.
    assert f32_bits(dot_tree(p)) == 0
    # Other orders give other answers, so the order is really part of the contract.
    sequential = ((p[0] + p[1]) + p[2]) + p[3]
    strided = (p[0] + p[2]) + (p[1] + p[3])
    assert sequential == 1.0 and strided == 2.0


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32, 64])
def test_dot_tree_matches_explicit_tree(width: int) -> None:
    rng = np.random.default_rng(RNG_SEED + width)
    p = (rng.standard_normal((50, width)) * 10.0 ** rng.integers(-6, 7, (50, width)))
    p = p.astype(np.float32)

    def tree(v: list[np.float32]) -> np.float32:
        while len(v) > 1:
            v = [np.float32(v[i] + v[i + 1]) for i in range(0, len(v), 2)]
        return v[0]

    assert_same_bits(dot_tree(p), np.array([tree(list(row)) for row in p], dtype=np.float32))


@pytest.mark.parametrize("width", [0, 3, 6, 128])
def test_dot_tree_rejects_bad_width(width: int) -> None:
    with pytest.raises(ValueError, match=rf"power of two from 1 to 64, not {width}"):
        dot_tree(np.zeros((2, width), dtype=np.float32))


def test_dot_tree_nan_and_inf() -> None:
    inf = np.float32(np.inf)
    assert f32_bits(dot_tree(np.float32([inf, 1, -inf, 1]))) == CANONICAL_NAN_F32
    assert f32_bits(dot_tree(np.float32([inf, 1, 1, 1]))) == 0x7F800000
    big = np.float32(3e38)
    assert f32_bits(dot_tree(np.float32([big, big, -big, -big]))) == CANONICAL_NAN_F32


def test_tile_matvec_is_rowwise_dot() -> None:
    rng = np.random.default_rng(RNG_SEED + 3)
    b = 8
    w = random_bf16_values(rng, 3 * b * b).reshape(3, b, b)
    x = random_bf16_values(rng, 3 * b).reshape(3, b)
    out = tile_matvec(w, x)
    assert out.shape == (3, b)
    for k in range(3):
        for i in range(b):
            assert_same_bits(out[k, i], dot_tree(bf16_product(w[k, i, :], x[k])))


def test_tile_matvec_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="tile_matvec needs"):
        tile_matvec(np.zeros((4, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="tile_matvec needs"):
        tile_matvec(np.zeros((4, 4), np.float32), np.zeros(2, np.float32))


@pytest.mark.parametrize("a, b, want", [
    (-0.0, -0.0, 0x80000000),  # -0 + -0 = -0
    (-0.0, 0.0, 0x00000000),  # mixed zeros: +0
    (1.0, -1.0, 0x00000000),  # exact cancellation: +0
    (-1.5, 1.5, 0x00000000),
    (3e38, 3e38, 0x7F800000),  # overflow: inf
    (np.inf, -np.inf, CANONICAL_NAN_F32),
    (1.0, 2.0 ** -24, 0x3F800000),  # tie, even: stays 1
    (1.0 + 2.0 ** -23, 2.0 ** -24, 0x3F800002),  # tie, odd: up
    (1.1754942e-38, 1e-45, 0x00800000),  # largest subnormal + smallest = smallest normal
])
def test_accumulate_directed(a: float, b: float, want: int) -> None:
    assert hex(f32_bits(accumulate(np.float32(a), np.float32(b)))) == hex(want)


# --- vector operations -------------------------------------------------------------------

ZERO_P, ZERO_N = np.float32(0.0), np.float32(-0.0)
NAN_PAYLOAD = bits_f32(np.uint32(0xFFA00001))


@pytest.mark.parametrize("a, b, want_max, want_min", [
    (ZERO_P, ZERO_N, 0x00000000, 0x80000000),
    (ZERO_N, ZERO_P, 0x00000000, 0x80000000),
    (ZERO_N, ZERO_N, 0x80000000, 0x80000000),
    (ZERO_P, ZERO_P, 0x00000000, 0x00000000),
    (ZERO_N, np.float32(-1), 0x80000000, 0xBF800000),
    (ZERO_P, np.float32(-1), 0x00000000, 0xBF800000),
    (ZERO_N, np.float32(1), 0x3F800000, 0x80000000),
    (ZERO_P, np.float32(1), 0x3F800000, 0x00000000),
    (NAN_PAYLOAD, np.float32(1), CANONICAL_NAN_F32, CANONICAL_NAN_F32),
    (np.float32(-np.inf), NAN_PAYLOAD, CANONICAL_NAN_F32, CANONICAL_NAN_F32),
    (np.float32(np.inf), np.float32(3e38), 0x7F800000, 0x7F61B1E6),
    (bits_f32(np.uint32(1)), bits_f32(np.uint32(0x80000001)), 0x00000001, 0x80000001),
])
def test_max_min_directed(a: np.float32, b: np.float32, want_max: int, want_min: int) -> None:
    assert hex(f32_bits(vec_max(a, b))) == hex(want_max)
    assert hex(f32_bits(vec_max(b, a))) == hex(want_max)
    assert hex(f32_bits(vec_min(a, b))) == hex(want_min)
    assert hex(f32_bits(vec_min(b, a))) == hex(want_min)


def test_clamp() -> None:
    x = np.float32([-2.0, -0.0, 0.0, 0.5, 3.0, np.inf, -np.inf, np.nan])
    relu = clamp(x, np.float32(0.0), np.float32(np.inf))
    assert [hex(v) for v in f32_bits(relu)] == [
        "0x0", "0x0", "0x0", "0x3f000000", "0x40400000", "0x7f800000", "0x0", "0x7fc00000"]
    capped = clamp(x, np.float32(-1.0), np.float32(1.0))
    np.testing.assert_array_equal(capped[:7], np.float32([-1, -0.0, 0, 0.5, 1, 1, -1]))
    assert f32_bits(capped[1]) == 0x80000000 and np.isnan(capped[7])
    unbounded = clamp(x, np.float32(-np.inf), np.float32(np.inf))
    assert_same_bits(unbounded, canonical_nan(x))


def test_vec_op_enum_is_the_encoding() -> None:
    assert [(op.name, op.value) for op in VecOp] == [
        ("PASS_A", 0), ("PASS_T", 1), ("ADD", 2), ("SUB", 3), ("RSUB", 4), ("MUL", 5),
        ("MAX", 6), ("MIN", 7)]


def test_vec_op_all_ops() -> None:
    rng = np.random.default_rng(RNG_SEED + 4)
    n = 1 << 14
    a = bits_f32(rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32))
    a[::3] = rng.standard_normal(len(a[::3])).astype(np.float32)
    t = random_bf16_values(rng, n)
    want = {
        VecOp.PASS_A: canonical_nan(a), VecOp.PASS_T: canonical_nan(t),
        VecOp.ADD: ref_op(np.add, a, t), VecOp.SUB: ref_op(np.subtract, a, t),
        VecOp.RSUB: ref_op(np.subtract, t, a), VecOp.MUL: ref_op(np.multiply, a, t),
        VecOp.MAX: vec_max(a, t), VecOp.MIN: vec_min(a, t),
    }
    for op in VecOp:
        assert_same_bits(vec_op(op, a, t), want[op])
    assert_same_bits(vec_op(int(VecOp.RSUB), a, t), want[VecOp.RSUB])
    with pytest.raises(ValueError):
        vec_op(8, a, t)


def test_vec_op_pass_is_a_writable_copy() -> None:
    a = np.float32([1.0, -0.0])
    r = vec_op(VecOp.PASS_A, a, np.float32(0.0))
    r[0] = 5.0
    assert a[0] == 1.0 and f32_bits(r[1]) == 0x80000000


# --- I/O beats ---------------------------------------------------------------------------

def test_pack_beats_lane_order() -> None:
    assert pack_beats(np.array([0x1111, 0x2222, 0x3333, 0x4444], np.uint16), 2) == [
        0x2222_1111, 0x4444_3333]
    assert pack_beats(np.array([0x3F80] + [0] * 31, np.uint16), 32) == [0x3F80]
    beats = [0xFFFF << (16 * 31), 1]
    np.testing.assert_array_equal(unpack_beats(beats, 32)[[0, 31, 32, 63]],
                                  [0, 0xFFFF, 1, 0])


def test_pack_beats_errors() -> None:
    with pytest.raises(ValueError, match="multiple of the block size 4, not 6"):
        pack_beats(np.zeros(6, np.uint16), 4)
    with pytest.raises(ValueError, match="16-bit"):
        pack_beats(np.array([1 << 16, 0]), 2)
    with pytest.raises(ValueError, match="unsigned 32-bit integer, not 4294967296"):
        unpack_beats([1, 1 << 32], 2)
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        unpack_beats([-1], 2)
    with pytest.raises(ValueError, match="block size must be a positive integer"):
        pack_beats(np.zeros(0, np.uint16), 0)


@PROPERTY
@given(st.lists(BF16_PATTERNS, max_size=64), st.sampled_from([1, 2, 4, 8, 32, 64]))
def test_pack_unpack_round_trip(values: list[int], block: int) -> None:
    v = np.array(values + [0] * (-len(values) % block), dtype=np.uint16)
    beats = pack_beats(v, block)
    assert len(beats) == len(v) // block
    assert all(0 <= b < 1 << (16 * block) for b in beats)
    np.testing.assert_array_equal(unpack_beats(beats, block), v)


# --- properties --------------------------------------------------------------------------

@PROPERTY
@given(F32_PATTERNS, F32_PATTERNS)
def test_accumulate_is_rounded_exact_sum(a: int, b: int) -> None:
    x, y = bits_f32(np.uint32(a)), bits_f32(np.uint32(b))
    assert_same_bits(accumulate(x, y), ref_op(np.add, x, y))
    assert_same_bits(accumulate(x, y), accumulate(y, x))


@PROPERTY
@given(BF16_PATTERNS, BF16_PATTERNS)
def test_product_is_rounded_exact_product(a: int, b: int) -> None:
    x, y = bf16(a), bf16(b)
    assert_same_bits(canonical_nan(bf16_product(x, y)), ref_op(np.multiply, x, y))


@PROPERTY
@given(st.floats(width=32, allow_nan=False))
def test_round_to_bf16_is_nearest(v: float) -> None:
    x = np.float32(v)
    r = round_to_bf16(x)
    assert_same_bits(round_to_bf16(r), r)  # idempotent
    if np.isfinite(r):
        # No bf16 value is strictly nearer: check both bf16 neighbours of r.
        rb = int(f32_to_bf16_bits(r))
        for nb in (rb - 1, rb + 1):
            n = bf16_bits_to_f32(np.uint16(nb & 0xFFFF))
            if np.isfinite(n) and np.sign(n) == np.sign(r):
                assert abs(np.float64(n) - np.float64(x)) >= abs(np.float64(r) - np.float64(x))


@PROPERTY
@given(st.floats(width=32, allow_nan=False), st.floats(width=32, allow_nan=False))
def test_round_to_bf16_is_monotonic(u: float, v: float) -> None:
    x, y = sorted([np.float32(u), np.float32(v)])
    assert round_to_bf16(x) <= round_to_bf16(y)


@PROPERTY
@given(F32_PATTERNS, F32_PATTERNS)
def test_max_min_properties(a: int, b: int) -> None:
    x, y = bits_f32(np.uint32(a)), bits_f32(np.uint32(b))
    mx, mn = vec_max(x, y), vec_min(x, y)
    assert_same_bits(mx, vec_max(y, x))
    assert_same_bits(mn, vec_min(y, x))
    if np.isnan(x) or np.isnan(y):
        assert f32_bits(mx) == f32_bits(mn) == CANONICAL_NAN_F32
    else:
        # Each returns one of its operands, and together they return both.
        assert sorted([int(f32_bits(mx)), int(f32_bits(mn))]) == sorted([a, b])
        assert mn <= mx
