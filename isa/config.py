"""Machine configuration: the one definition of a core array's sizes and clock.

A :class:`Config` fixes everything the compiler, the VM, the RTL and the testbenches need to
agree on about a machine: how many cores, the block size B (the side of the matrix block and
the width of every I/O beat), the depth of each per-core memory and the clock used to turn
cycles into microseconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError"]

#: Largest number of cores: the VEC instruction's core mask has this many bits.
MAX_CORES = 8


class ConfigError(ValueError):
    """A configuration field has an invalid value; the message names the field."""


def _limits() -> dict[str, tuple[int, int]]:
    # Imported here: the instruction formats bound the memory depths they can address.
    from isa.instructions import address_limits

    return address_limits()


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

    def __post_init__(self) -> None:
        limits = _limits()
        ints = {
            "num_cores": (1, MAX_CORES),
            "block_size": (2, 64),
            "weight_store_depth": (1, limits["weight"][1]),
            "tensor_ram_depth": (2, limits["tram"][1]),
            "accum_store_depth": (1, limits["acc"][1]),
            "instr_mem_depth": (2, 1 << 16),
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

    # -- presets -------------------------------------------------------------------------

    @classmethod
    def ia_420f_c6b32(cls) -> Config:
        """Return the BittWare IA-420F preset: 6 cores, B = 32, 512 tiles/core, 320 MHz."""
        return cls(num_cores=6, block_size=32, clock_mhz=320.0, name="ia_420f_c6b32")

    @classmethod
    def bittware_ia420f_c6b32(cls) -> Config:
        """Return :meth:`ia_420f_c6b32` (the reference's newer preset name)."""
        return cls.ia_420f_c6b32()

    @classmethod
    def ia_840f_c3b64(cls) -> Config:
        """Return the BittWare IA-840F preset: 3 cores, B = 64, 512 tiles/core, 320 MHz."""
        return cls(num_cores=3, block_size=64, clock_mhz=320.0, name="ia_840f_c3b64")

    @classmethod
    def bittware_ia840f_c3b64(cls) -> Config:
        """Return :meth:`ia_840f_c3b64` (the reference's newer preset name)."""
        return cls.ia_840f_c3b64()

    @classmethod
    def ip_core(cls, num_cores: int = 1, block_size: int = 32, **fields: Any) -> Config:
        """Return an IP-core configuration of any size.

        Parameters
        ----------
        num_cores, block_size : int
            As in :class:`Config`.
        **fields
            Any other :class:`Config` field (memory depths, ``clock_mhz``, ``name``).
        """
        fields.setdefault("name", f"ip_core_c{num_cores}b{block_size}")
        return cls(num_cores=num_cores, block_size=block_size, **fields)

    @classmethod
    def preset(cls, name: str) -> Config:
        """Return the preset called ``name`` (``ia_420f_c6b32``, ``c2b8``, ...).

        ``c<N>b<B>`` names an :meth:`ip_core` with N cores of block size B.

        Raises
        ------
        ConfigError
            If there is no such preset; the message lists the known names.
        """
        presets = {
            "ia_420f_c6b32": cls.ia_420f_c6b32,
            "bittware_ia420f_c6b32": cls.ia_420f_c6b32,
            "ia_840f_c3b64": cls.ia_840f_c3b64,
            "bittware_ia840f_c3b64": cls.ia_840f_c3b64,
        }
        if name in presets:
            return presets[name]()
        head, _, tail = name.partition("b")
        if head.startswith("c") and head[1:].isdigit() and tail.isdigit():
            return cls.ip_core(int(head[1:]), int(tail))
        known = ", ".join(sorted(presets)) + ", c<N>b<B>"
        raise ConfigError(f"unknown configuration {name!r}; known: {known}")

    # -- derived quantities --------------------------------------------------------------

    @property
    def tree_levels(self) -> int:
        """Return log2(B), the number of levels of a dot product's adder tree."""
        return self.block_size.bit_length() - 1

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
