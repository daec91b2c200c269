"""The function unit's contract (isa/functions.py): accuracy over every bf16 input, the
float64 references against PyTorch, special values, MAX_LANES, and the generated table of
docs/numerics.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isa import functions as F
from isa.functions import Function
from isa.numerics import CANONICAL_NAN_BF16, bf16_bits_to_f32, f32_to_bf16_bits
from scripts import function_table

pytestmark = pytest.mark.timeout(120)

ALL = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
ELEMENTWISE = [f for f in Function if f != Function.MAX_LANES]

#: The bound each function is held to, in bf16 ulps (docs/numerics.md): correct rounding,
#: except the reciprocal's doubly rounded subnormal results.
BOUND = {f: 0.5 for f in ELEMENTWISE} | {Function.RECIP: 0.75}


def bits(values: list[float]) -> np.ndarray:
    return f32_to_bf16_bits(np.array(values, dtype=np.float32))


def values(b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # NaN payloads widen with a warning
        return bf16_bits_to_f32(b).astype(np.float64)


@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: f.name)
def test_accuracy_over_every_input(fn: Function) -> None:
    err, worst = F.max_ulp_error(fn)
    assert err <= BOUND[fn], f"{fn.name}: {err:.3f} ulp at {worst:#06x}"


_TORCH = {
    Function.TANH: torch.tanh,
    Function.SIGMOID: torch.sigmoid,
    Function.EXP: torch.exp,
    Function.SILU: torch.nn.functional.silu,
    Function.GELU: torch.nn.functional.gelu,
    Function.GELU_TANH: lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    Function.SOFTPLUS: torch.nn.functional.softplus,
    Function.ELU: torch.nn.functional.elu,
    Function.ABS: torch.abs,
    Function.RECIP: torch.reciprocal,
    Function.RSQRT: torch.rsqrt,
    Function.SQRT: torch.sqrt,
    Function.LOG: torch.log,
}


@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: f.name)
def test_reference_agrees_with_pytorch(fn: Function) -> None:
    """The float64 references are PyTorch's functions (so is the accuracy measured against
    the right thing), on every finite bf16 input."""
    x = values(ALL)
    x = x[np.isfinite(x)]
    if fn in (Function.GELU, Function.GELU_TANH):
        # PyTorch evaluates ½x(1 + erf) and ½x(1 + tanh), which cancel for large negative
        # x (the references use erfc and a sigmoid instead): compare where they do not.
        x = x[x > -4]
    ours = F.reference(fn, x)
    theirs = _TORCH[fn](torch.from_numpy(x)).numpy()
    both_nan = np.isnan(ours) & np.isnan(theirs)
    # atol: float64 subnormals (far below the bf16 range) carry fewer digits.
    close = np.isclose(ours, theirs, rtol=1e-9, atol=1e-300) | both_nan
    assert close.all(), f"{fn.name} differs at {x[~close][:5]}"


SPECIAL = [
    (Function.EXP, 0.0, 1.0), (Function.EXP, -math.inf, 0.0), (Function.EXP, math.inf, math.inf),
    (Function.EXP, 100.0, math.inf), (Function.TANH, math.inf, 1.0),
    (Function.TANH, -math.inf, -1.0), (Function.TANH, -0.0, -0.0),
    (Function.SIGMOID, 0.0, 0.5), (Function.SIGMOID, -200.0, 0.0),
    (Function.SILU, -math.inf, -0.0), (Function.GELU, -math.inf, -0.0),
    (Function.GELU, math.inf, math.inf), (Function.SOFTPLUS, 0.0, 0.69140625),
    (Function.ELU, -math.inf, -1.0), (Function.ELU, 3.0, 3.0), (Function.ABS, -0.0, 0.0),
    (Function.ABS, -math.inf, math.inf), (Function.RECIP, 0.0, math.inf),
    (Function.RECIP, -0.0, -math.inf), (Function.RECIP, -math.inf, -0.0),
    (Function.RECIP, 4.0, 0.25), (Function.RSQRT, 0.0, math.inf),
    (Function.RSQRT, -0.0, -math.inf), (Function.RSQRT, 4.0, 0.5),
    (Function.RSQRT, -1.0, math.nan), (Function.SQRT, -0.0, -0.0),
    (Function.SQRT, -4.0, math.nan), (Function.SQRT, math.inf, math.inf),
    (Function.SQRT, 9.0, 3.0), (Function.LOG, 0.0, -math.inf), (Function.LOG, 1.0, 0.0),
    (Function.LOG, -1.0, math.nan), (Function.LOG, math.inf, math.inf),
]


@pytest.mark.parametrize(("fn", "x", "want"), SPECIAL,
                         ids=[f"{f.name}({x})" for f, x, _ in SPECIAL])
def test_special_values(fn: Function, x: float, want: float) -> None:
    got = F.apply(fn, bits([x]))[0]
    if math.isnan(want):
        assert got == CANONICAL_NAN_BF16
    else:
        assert got == bits([want])[0], f"{fn.name}({x}) = {values(np.array([got]))}"


@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: f.name)
def test_nan_in_nan_out_and_lut(fn: Function) -> None:
    nans = np.array([0x7FC0, 0xFFC0, 0x7F81, 0xFFFF], dtype=np.uint16)
    assert (F.apply(fn, nans) == CANONICAL_NAN_BF16).all()
    assert np.array_equal(F.lut(fn), F.apply(fn, ALL))


def test_window_tables_hold_the_correctly_rounded_results() -> None:
    tab = F.table()
    for fn in ELEMENTWISE:
        if F.SPECS[fn].mode != F.Mode.WINDOW:
            continue
        sel = F.select(fn, ALL)
        inside = sel.index >= 0
        assert sel.direct[inside].all()
        assert np.array_equal(sel.b[inside], tab[sel.index[inside]])
        for w in F.windows(fn):
            assert 1 <= w.lo <= w.hi <= 255


def test_max_lanes() -> None:
    block = bits([1.0, -3.0, 2.5, 0.0])
    assert (F.max_lanes(block) == bits([2.5] * 4)).all()
    assert (F.max_lanes(bits([-0.0, -0.0])) == bits([-0.0, -0.0])).all()
    assert (F.max_lanes(bits([-0.0, 0.0])) == bits([0.0, 0.0])).all()
    assert (F.max_lanes(bits([1.0, math.nan, 2.0, 3.0])) == CANONICAL_NAN_BF16).all()
    assert (F.max_lanes(bits([-math.inf, -math.inf])) == bits([-math.inf] * 2)).all()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    b = f32_to_bf16_bits(x)
    want = values(b).max(axis=1)
    assert np.array_equal(values(F.max_lanes(b))[:, 0], want)


def test_docs_table_is_current() -> None:
    assert function_table.main(["--check"]) == 0, "docs/numerics.md: run `make functions`"
