"""Numerics contract of the machine (one definition, used by compiler, VM, RTL and tests)."""

import enum


class NumberFormat(enum.Enum):
    """Number format of a value in the model (the reference's ``NumberFormat``)."""

    BF16 = "bf16"
    FP32 = "fp32"
