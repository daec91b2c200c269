"""The instruction set: opcodes, formats, encode and decode.

This module is the only place instruction fields are defined. Every instruction is one
64-bit word: the opcode in bits [0, 4), then the opcode's fields packed upwards from bit 4 in
the order of its format. The compiler encodes with :func:`encode`, the VM decodes with
:func:`decode`, and the RTL decodes with the Amaranth layouts built from the same table by
:func:`amaranth_layout`. To add an instruction, add an :class:`Opcode`, a dataclass with a
``FIELDS`` table, and register it in :data:`FORMATS`.

The machine is statically scheduled (see ``docs/architecture.md``): each core issues at most
one instruction per cycle, in program order, and never stalls; ``WAIT`` spaces instructions
out; the compiler decides the issue cycle of every instruction.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from isa.functions import Function
from isa.numerics import VecOp

__all__ = [
    "WORD_BITS", "OPCODE_BITS", "Opcode", "Dest", "Field", "Instruction", "End", "Wait", "Mac",
    "Vec", "Fn", "Function", "FORMATS", "EncodingError", "encode", "decode", "encode_program",
    "decode_program", "address_limits", "amaranth_layout", "VecOp", "PC_BITS",
]

WORD_BITS = 64
OPCODE_BITS = 4
#: Width of a program counter: an instruction memory holds at most 2**PC_BITS words.
PC_BITS = 16


class EncodingError(ValueError):
    """An instruction cannot be encoded or a word cannot be decoded; the message says why."""


class Opcode(enum.IntEnum):
    """Instruction opcodes (bits [0, 4) of every word)."""

    #: End of this core's program for the current inference.
    END = 0
    #: Issue the next instruction ``cycles`` cycles after this one.
    WAIT = 1
    #: Tile multiply-accumulate: acc[acc] (=|+=) W[weight] · tram[tram].
    MAC = 2
    #: Vector operation on acc[acc] and tram[tram], result to acc, tensor RAMs or output.
    VEC = 3
    #: Function unit: a function of the bf16 block tram[tram], to local acc or tensor RAM.
    FN = 4


class Dest(enum.IntEnum):
    """Where a ``VEC`` result goes."""

    #: fp32 into the local accumulator store at ``addr``.
    ACC = 0
    #: Rounded to bf16 into tensor RAM ``addr`` of every core in the ``cores`` mask (the
    #: issuing core's own bit is a local write; other cores receive over the interconnect).
    TRAM = 1
    #: Rounded to bf16 and sent as the next beat of the output stream.
    OUTPUT = 2
    #: fp32 into accumulator ``addr`` of every core in the ``cores`` mask (own bit: local
    #: write; other cores over the interconnect). This moves partial sums between cores
    #: without rounding, so a reduction split across cores keeps one fp32 accumulation chain.
    ACCS = 3


@dataclasses.dataclass(frozen=True)
class Field:
    """One bit field of an instruction format."""

    name: str
    width: int
    doc: str


@dataclasses.dataclass(frozen=True)
class Instruction:
    """Base class of decoded instructions; subclasses list their fields in ``FIELDS``."""

    OPCODE: ClassVar[Opcode]
    FIELDS: ClassVar[tuple[Field, ...]] = ()

    def __post_init__(self) -> None:
        for f in self.FIELDS:
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise EncodingError(
                    f"{self.OPCODE.name}.{f.name} must be an int, not {value!r}")
            if not 0 <= value < (1 << f.width):
                raise EncodingError(
                    f"{self.OPCODE.name}.{f.name} = {value} does not fit in {f.width} bits "
                    f"(range 0..{(1 << f.width) - 1})")

    def fields(self) -> dict[str, int]:
        """Return the field values by name."""
        return {f.name: int(getattr(self, f.name)) for f in self.FIELDS}

    def __str__(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.fields().items())
        return f"{self.OPCODE.name.lower()} {args}".rstrip()


@dataclasses.dataclass(frozen=True)
class End(Instruction):
    """End of the core's program for this inference; the core idles until the next one."""

    OPCODE: ClassVar[Opcode] = Opcode.END


@dataclasses.dataclass(frozen=True)
class Wait(Instruction):
    """Issue the next instruction ``cycles`` cycles after this one (``cycles`` ≥ 1)."""

    OPCODE: ClassVar[Opcode] = Opcode.WAIT
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("cycles", 16, "distance in cycles to the next instruction's issue (>= 1)"),
    )
    cycles: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycles < 1:
            raise EncodingError(f"WAIT.cycles must be >= 1, not {self.cycles}")


@dataclasses.dataclass(frozen=True)
class Mac(Instruction):
    """Tile multiply-accumulate: ``acc[acc] (= | +=) W[weight] · tram[tram]``.

    ``accumulate = 0`` writes the tile product; ``1`` adds it to the accumulator (fp32, in
    issue order, back-to-back issue to the same accumulator allowed).
    """

    OPCODE: ClassVar[Opcode] = Opcode.MAC
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("acc", 10, "accumulator address"),
        Field("tram", 16, "tensor RAM address of the activation block"),
        Field("weight", 16, "weight store address of the B×B tile"),
        Field("accumulate", 1, "0: acc = W·x, 1: acc += W·x"),
    )
    acc: int
    tram: int
    weight: int
    accumulate: int


@dataclasses.dataclass(frozen=True)
class Vec(Instruction):
    """Vector operation: ``r = clamp[clamp](op(acc[acc], tram[tram]))`` sent to ``dest``.

    ``op`` is a :class:`VecOp`; ``PASS_A`` does not read tensor RAM and ``PASS_T`` does not
    read the accumulator. ``dest`` is a :class:`Dest`: ``ACC`` writes fp32 ``r`` to
    accumulator ``addr``; ``TRAM`` rounds ``r`` to bf16 and writes it to tensor RAM ``addr`` of
    each core in the ``cores`` mask; ``OUTPUT`` rounds it and sends it as the next output beat;
    ``ACCS`` writes fp32 ``r`` to accumulator ``addr`` of each core in the ``cores`` mask.
    """

    OPCODE: ClassVar[Opcode] = Opcode.VEC
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("op", 3, "VecOp"),
        Field("clamp", 3, "clamp table entry applied to the result"),
        Field("acc", 10, "accumulator address of operand a"),
        Field("tram", 16, "tensor RAM address of operand t"),
        Field("dest", 2, "Dest"),
        Field("addr", 16, "destination address (accumulator or tensor RAM)"),
        Field("cores", 8, "destination core mask (Dest.TRAM, Dest.ACCS)"),
    )
    op: int
    clamp: int
    acc: int
    tram: int
    dest: int
    addr: int
    cores: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dest in (Dest.TRAM, Dest.ACCS) and self.cores == 0:
            raise EncodingError(
                f"VEC.cores must name at least one core for Dest.{Dest(self.dest).name}")

    def __str__(self) -> str:
        return (f"vec {VecOp(self.op).name.lower()} acc={self.acc} tram={self.tram} "
                f"clamp={self.clamp} -> {Dest(self.dest).name.lower()} addr={self.addr} "
                f"cores={self.cores:#x}")


@dataclasses.dataclass(frozen=True)
class Fn(Instruction):
    """Function unit: ``r = fn(tram[tram])`` written to the issuing core's ``dest``.

    ``fn`` is an :class:`isa.functions.Function`, applied to each bf16 element of the block
    (``MAX_LANES``: the largest element, in every lane) exactly as :mod:`isa.functions`
    defines. ``dest`` is ``Dest.TRAM`` (bf16 into tensor RAM ``addr``) or ``Dest.ACC`` (the
    bf16 result, exact in fp32, into accumulator ``addr``); the result never leaves the
    core (a ``VEC`` moves it on).
    """

    OPCODE: ClassVar[Opcode] = Opcode.FN
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("fn", 4, "Function"),
        Field("tram", 16, "tensor RAM address of the operand block"),
        Field("dest", 2, "Dest: TRAM or ACC of this core"),
        Field("addr", 16, "destination address (tensor RAM or accumulator)"),
    )
    fn: int
    tram: int
    dest: int
    addr: int

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            Function(self.fn)
        except ValueError:
            raise EncodingError(f"FN.fn = {self.fn} is not a function "
                                f"(0..{len(Function) - 1})") from None
        if self.dest not in (Dest.TRAM, Dest.ACC):
            raise EncodingError(f"FN.dest must be TRAM or ACC (this core), not "
                                f"Dest.{Dest(self.dest).name}")

    def __str__(self) -> str:
        return (f"fn {Function(self.fn).name.lower()} tram={self.tram} -> "
                f"{Dest(self.dest).name.lower()} addr={self.addr}")


#: Every instruction class by opcode: the table encode, decode and the RTL layouts use.
FORMATS: dict[Opcode, type[Instruction]] = {
    cls.OPCODE: cls for cls in (End, Wait, Mac, Vec, Fn)}


def _check_formats() -> None:
    for opcode, cls in FORMATS.items():
        width = OPCODE_BITS + sum(f.width for f in cls.FIELDS)
        assert width <= WORD_BITS, f"{opcode.name} format is {width} bits wide"


_check_formats()


def address_limits() -> dict[str, tuple[int, int]]:
    """Return the (min, max) memory depths the formats can address, by memory.

    Keys: ``weight``, ``tram``, ``acc``, ``clamp``.
    """
    widths = {
        "weight": Mac.FIELDS[2].width,
        "tram": Mac.FIELDS[1].width,
        "acc": Mac.FIELDS[0].width,
        "clamp": Vec.FIELDS[1].width,
    }
    return {k: (1, 1 << w) for k, w in widths.items()}


def encode(instr: Instruction) -> int:
    """Return the 64-bit word of ``instr``.

    Field ranges are checked when the instruction is constructed (:class:`EncodingError`
    names the field).
    """
    word = int(instr.OPCODE)
    shift = OPCODE_BITS
    for f in instr.FIELDS:
        word |= int(getattr(instr, f.name)) << shift
        shift += f.width
    return word


def decode(word: int) -> Instruction:
    """Return the instruction encoded in ``word``.

    Raises
    ------
    EncodingError
        If the word is out of 64-bit range, has an unknown opcode, sets bits above its
        format, or holds an invalid field value.
    """
    word = int(word)
    if not 0 <= word < (1 << WORD_BITS):
        raise EncodingError(f"instruction word {word:#x} is not a 64-bit value")
    code = word & ((1 << OPCODE_BITS) - 1)
    try:
        cls = FORMATS[Opcode(code)]
    except ValueError:
        raise EncodingError(f"unknown opcode {code} in word {word:#018x}") from None
    values: dict[str, Any] = {}
    shift = OPCODE_BITS
    for f in cls.FIELDS:
        values[f.name] = (word >> shift) & ((1 << f.width) - 1)
        shift += f.width
    if word >> shift:
        raise EncodingError(f"{cls.OPCODE.name} word {word:#018x} sets bits above bit {shift}")
    return cls(**values)


def encode_program(instrs: Iterable[Instruction]) -> np.ndarray:
    """Return a core's instructions as a ``uint64`` array of words."""
    return np.array([encode(i) for i in instrs], dtype=np.uint64)


def decode_program(words: Sequence[int] | np.ndarray) -> list[Instruction]:
    """Decode an array of words; :class:`EncodingError` names the index of a bad word."""
    out = []
    for pc, word in enumerate(words):
        try:
            out.append(decode(int(word)))
        except EncodingError as exc:
            raise EncodingError(f"pc {pc}: {exc}") from None
    return out


def amaranth_layout(opcode: Opcode) -> Any:
    """Return an ``amaranth.lib.data.StructLayout`` of ``opcode``'s whole 64-bit word.

    Members: ``opcode`` (4 bits), each field of the format in order, and ``_pad`` up to 64
    bits, so that ``word.as_value()`` viewed through the layout decodes the fields the same
    way :func:`decode` does.
    """
    from amaranth.lib import data

    cls = FORMATS[opcode]
    members: dict[str, int] = {"opcode": OPCODE_BITS}
    for f in cls.FIELDS:
        members[f.name] = f.width
    used = OPCODE_BITS + sum(f.width for f in cls.FIELDS)
    if used < WORD_BITS:
        members["_pad"] = WORD_BITS - used
    return data.StructLayout(members)
