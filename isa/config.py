"""Machine configuration: the one definition of a core array's sizes and clock.

A :class:`Config` fixes everything the compiler, the VM, the RTL and the testbenches need to
agree on about a machine: how many cores, the block size B (the side of the matrix block and
the width of every I/O beat), the depth of each per-core memory, the depth of each pipeline
(:class:`Depths`) and the clock used to turn cycles into microseconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "Depths"]

#: Largest number of cores: the VEC instruction's core mask has this many bits.
MAX_CORES = 8


class ConfigError(ValueError):
    """A configuration field has an invalid value; the message names the field."""


def _pc_bits() -> int:
    from isa.instructions import PC_BITS

    return PC_BITS


def _limits() -> dict[str, tuple[int, int]]:
    # Imported here: the instruction formats bound the memory depths they can address.
    from isa.instructions import address_limits

    return address_limits()


#: Suffix of a preset name that selects :meth:`Depths.ideal` pipelines.
IDEAL_SUFFIX = "-ideal"

#: Largest pipeline depth of one step (a bound that keeps configurations sane, not a limit
#: of the design).
MAX_DEPTH = 16


@dataclasses.dataclass(frozen=True)
class Depths:
    """Pipeline depths of the machine, in cycles (registers) per step.

    Every latency of the machine (:mod:`isa.timing`) is a sum of these; the RTL builds each
    unit with exactly these depths and checks it at construction. ``docs/timing.md`` says
    where the realistic values come from (``make timing``: no stage longer than 1.25 times
    one bf16 significand multiply in the same synthesis flow).

    Parameters
    ----------
    mem_read : int
        Memory read: from the cycle an address is presented to the cycle its data can be
        used (1: a plain synchronous read; 2: with a registered output).
    bf16_mul : int
        bf16 × bf16 product of the matrix lanes, with its normalise-and-round to fp32.
    fp32_add : int
        One fp32 addition: each adder-tree level, the accumulate stage (hence the loop of
        back-to-back ``MAC`` s into one accumulator) and the vector unit's add, subtract and
        compare.
    vec_mul : int
        The vector unit's fp32 × bf16 significand multiply.
    norm_round : int
        The vector unit's normalise-and-round after ``vec_mul``.
    clamp_round : int
        The vector unit's selection of its op's result, clamp and rounding to bf16 (and
        the function unit's selection and rounding).
    link : int
        One hop of the interconnect: a ``VEC`` result to another core, and an input beat
        to the cores' tensor RAMs.
    output : int
        A ``VEC`` result to the output port.

    Raises
    ------
    ConfigError
        If a depth is not an int from 1 to 16; the message names it.
    """

    mem_read: int = 1
    bf16_mul: int = 1
    fp32_add: int = 1
    vec_mul: int = 1
    norm_round: int = 1
    clamp_round: int = 1
    link: int = 1
    output: int = 1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"depth '{field.name}' must be an int, not {value!r}")
            if not 1 <= value <= MAX_DEPTH:
                raise ConfigError(f"depth '{field.name}' must be in [1, {MAX_DEPTH}], "
                                  f"not {value}")

    @classmethod
    def ideal(cls) -> Depths:
        """Return one stage per step: the machine as if every step fitted in one cycle.

        Not a design that closes timing at ``clock_mhz`` (an fp32 add in one stage); kept
        for comparison with the realistic depths and for fast small tests.
        """
        return cls()

    @classmethod
    def realistic(cls) -> Depths:
        """Return the depths at which every stage passes the ``make timing`` check.

        Each is the fewest stages at which the builder passes (``docs/timing.md``), except
        ``mem_read``: a block-RAM read alone takes 0.9 of the reference stage, so its data
        is registered before anything (the activation broadcast, a multiply) uses it; and
        ``clamp_round``: its first stage also selects the op's result (add, multiply or
        compare), which no op's last stage has room for.
        ``output`` is the register in front of the output port.
        """
        return cls(mem_read=2, bf16_mul=4, fp32_add=4, vec_mul=2, norm_round=3,
                   clamp_round=2, link=1, output=1)

    @classmethod
    def from_dict(cls, data: Any) -> Depths:
        """Build depths from :func:`dataclasses.asdict` output.

        Raises
        ------
        ConfigError
            If ``data`` is not a dict of exactly the depth fields with valid values.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"'depths' must be a JSON object, not {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown or missing:
            raise ConfigError(f"'depths': unknown {unknown}, missing {missing}")
        return cls(**data)

    def describe(self) -> str:
        """Return ``"mem_read=2 bf16_mul=2 ..."`` for reports."""
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True)
class Config:
    """A machine configuration (the reference's ``vollo_compiler.Config``).

    Parameters
    ----------
    num_cores : int
        Number of cores, 1 to 8.
    block_size : int
        B, the side of the B×B matrix block, the number of values in one tensor-RAM word and
        in one I/O beat. A power of two from 2 to 64.
    weight_store_depth : int
        Weight store per core, in B×B bf16 tiles.
    tensor_ram_depth : int
        Tensor RAM per core, in blocks of B bf16 values (activations, constants and
        streaming state).
    accum_store_depth : int
        Accumulator store per core, in blocks of B fp32 values.
    instr_mem_depth : int
        Instruction memory per core, in 64-bit instructions.
    clamp_store_depth : int
        Entries of the per-core clamp table (distinct clamp bounds usable on one core).
    io_depth : int
        Largest number of input beats of one inference (depth of the input descriptor
        table).
    clock_mhz : float
        Compute clock; microseconds are cycles / clock_mhz.
    depths : Depths
        Pipeline depths (default :meth:`Depths.realistic`); :meth:`Depths.ideal` gives the
        one-stage machine for comparison and fast tests.
    name : str
        A label for reports.

    Raises
    ------
    ConfigError
        If any field is out of range; the message names the field and the bad value.
    """

    num_cores: int
    block_size: int
    weight_store_depth: int = 512
    tensor_ram_depth: int = 4096
    accum_store_depth: int = 64
    instr_mem_depth: int = 4096
    clamp_store_depth: int = 8
    io_depth: int = 256
    clock_mhz: float = 320.0
    name: str = "ip_core"
    depths: Depths = dataclasses.field(default_factory=Depths.realistic)

    def __post_init__(self) -> None:
        limits = _limits()
        ints = {
            "num_cores": (1, MAX_CORES),
            "block_size": (2, 64),
            "weight_store_depth": (1, limits["weight"][1]),
            "tensor_ram_depth": (2, limits["tram"][1]),
            "accum_store_depth": (1, limits["acc"][1]),
            "instr_mem_depth": (2, 1 << _pc_bits()),
            "clamp_store_depth": (1, limits["clamp"][1]),
            "io_depth": (1, 1 << 16),
        }
        for field, (lo, hi) in ints.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"'{field}' must be an int, not {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(f"'{field}' must be in [{lo}, {hi}], not {value}")
        if self.block_size & (self.block_size - 1):
            raise ConfigError(f"'block_size' must be a power of two, not {self.block_size}")
        if not isinstance(self.clock_mhz, int | float) or isinstance(self.clock_mhz, bool):
            raise ConfigError(f"'clock_mhz' must be a number, not {self.clock_mhz!r}")
        if not (math.isfinite(self.clock_mhz) and self.clock_mhz > 0):
            raise ConfigError(f"'clock_mhz' must be positive and finite, not {self.clock_mhz}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"'name' must be a non-empty string, not {self.name!r}")
        if not isinstance(self.depths, Depths):
            raise ConfigError(f"'depths' must be a Depths, not {self.depths!r}")

    # -- presets -------------------------------------------------------------------------

    @classmethod
    def ia_420f_c6b32(cls, depths: Depths | None = None) -> Config:
        """Return the BittWare IA-420F preset: 6 cores, B = 32, 512 tiles/core, 320 MHz.

        ``depths`` defaults to :meth:`Depths.realistic`; pass :meth:`Depths.ideal` for the
        one-stage machine.
        """
        return cls(num_cores=6, block_size=32, clock_mhz=320.0, name="ia_420f_c6b32",
                   depths=depths or Depths.realistic())

    @classmethod
    def bittware_ia420f_c6b32(cls, depths: Depths | None = None) -> Config:
        """Return :meth:`ia_420f_c6b32` (the reference's newer preset name)."""
        return cls.ia_420f_c6b32(depths)

    @classmethod
    def ia_840f_c3b64(cls, depths: Depths | None = None) -> Config:
        """Return the BittWare IA-840F preset: 3 cores, B = 64, 512 tiles/core, 320 MHz.

        ``depths`` as in :meth:`ia_420f_c6b32`.
        """
        return cls(num_cores=3, block_size=64, clock_mhz=320.0, name="ia_840f_c3b64",
                   depths=depths or Depths.realistic())

    @classmethod
    def bittware_ia840f_c3b64(cls, depths: Depths | None = None) -> Config:
        """Return :meth:`ia_840f_c3b64` (the reference's newer preset name)."""
        return cls.ia_840f_c3b64(depths)

    @classmethod
    def ip_core(cls, num_cores: int = 1, block_size: int = 32, **fields: Any) -> Config:
        """Return an IP-core configuration of any size.

        Parameters
        ----------
        num_cores, block_size : int
            As in :class:`Config`.
        **fields
            Any other :class:`Config` field (memory depths, ``clock_mhz``, ``name``,
            ``depths``).
        """
        fields.setdefault("name", f"ip_core_c{num_cores}b{block_size}")
        return cls(num_cores=num_cores, block_size=block_size, **fields)

    @classmethod
    def preset(cls, name: str) -> Config:
        """Return the preset called ``name`` (``ia_420f_c6b32``, ``c2b8``, ...).

        ``c<N>b<B>`` names an :meth:`ip_core` with N cores of block size B. A suffix
        ``-ideal`` (``ia_420f_c6b32-ideal``) gives the preset with :meth:`Depths.ideal`
        pipelines instead of the realistic ones.

        Raises
        ------
        ConfigError
            If there is no such preset; the message lists the known names.
        """
        base, ideal = (name[:-len(IDEAL_SUFFIX)], True) if name.endswith(IDEAL_SUFFIX) \
            else (name, False)
        depths = Depths.ideal() if ideal else Depths.realistic()
        presets = {
            "ia_420f_c6b32": cls.ia_420f_c6b32,
            "bittware_ia420f_c6b32": cls.ia_420f_c6b32,
            "ia_840f_c3b64": cls.ia_840f_c3b64,
            "bittware_ia840f_c3b64": cls.ia_840f_c3b64,
        }
        if base in presets:
            return presets[base](depths)
        head, _, tail = base.partition("b")
        if head.startswith("c") and head[1:].isdigit() and tail.isdigit():
            return cls.ip_core(int(head[1:]), int(tail), depths=depths)
        known = ", ".join(sorted(presets)) + f", c<N>b<B> (each with an optional {IDEAL_SUFFIX})"
        raise ConfigError(f"unknown configuration {name!r}; known: {known}")

    def with_depths(self, depths: Depths) -> Config:
        """Return this configuration with other pipeline depths."""
        return dataclasses.replace(self, depths=depths)

    # -- derived quantities --------------------------------------------------------------

    @property
    def tree_levels(self) -> int:
        """Return log2(B), the number of levels of a dot product's adder tree."""
        return self.block_size.bit_length() - 1

    @property
    def io_count_bits(self) -> int:
        """Return the width of a count of input beats (0 to ``io_depth`` inclusive)."""
        return self.io_depth.bit_length()

    @property
    def max_parameters(self) -> int:
        """Return the number of bf16 weights the whole machine's weight stores hold."""
        return self.num_cores * self.weight_store_depth * self.block_size**2

    # -- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Config:
        """Build a configuration from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            If ``data`` is not a dict, has unknown or missing fields, or a bad value.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a JSON object, not {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        if "depths" in data:
            data = {**data, "depths": Depths.from_dict(data["depths"])}
        else:
            raise ConfigError("incomplete configuration: missing field 'depths' (pipeline "
                              "depths; a program compiled by an older tidal must be compiled "
                              "again)")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"incomplete configuration: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the configuration to ``path`` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a configuration written by :meth:`save`.

        Raises
        ------
        ConfigError
            If the file is not valid JSON or holds an invalid configuration.
        """
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not a JSON configuration ({exc})") from None
        return cls.from_dict(data)
