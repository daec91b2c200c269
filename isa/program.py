"""The compiled artefact: a :class:`Program` and its versioned, checksummed binary format.

A program holds everything a machine needs to run a model: the configuration it was compiled
for, each core's instructions and initial memory images (weight tiles, tensor-RAM constants,
clamp table), the I/O layout (where each input beat is written, how many beats come out, how
tensor values map to beat lanes) and metadata for reports.

File format (all integers little-endian)::

    offset  size  field
    0       8     magic  b"TIDALPRG"
    8       2     format version (FORMAT_VERSION)
    10      2     reserved, 0
    12      8     payload length in bytes
    20      32    SHA-256 of the payload
    52      ...   payload: u32 header length, UTF-8 JSON header, then the raw arrays

The JSON header describes each array (offset into the payload, dtype, shape). Version 3
added multi-model programs (the header's ``models`` list, :class:`ModelEntry`); version 4
the reset entry (the header's ``reset``: its model index, entry pc and input descriptor, or
null; :attr:`Program.reset`). A file that is
truncated, corrupted, of another format or of another version raises
:class:`ProgramFormatError` saying which; nothing is loaded unless the checksum matches and
every field is consistent with the configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from isa.config import MAX_CORES, Config, ConfigError
from isa.instructions import EncodingError, Instruction, Mac, decode_program
from isa.timing import OUT, TimingError, accesses, issue_cycles, last_effect, latencies

__all__ = [
    "MAGIC", "FORMAT_VERSION", "INDESC_ADDR_BITS", "INDESC_MASK_BITS", "MODEL_INDEX_BITS",
    "INSTR_READ", "MAX_MODELS", "MODEL_SETUP", "MODEL_FIELD_BITS", "ProgramFormatError",
    "ProgramError",
    "TensorLayout", "CoreImage", "ModelEntry", "Program", "check_meta", "indesc_words",
    "model_table", "reset_entry",
]

#: The machine's input descriptor word (one per input beat, from ``Program.input_dests``):
#: tensor-RAM address at bits [0, INDESC_ADDR_BITS), core mask above it.
INDESC_ADDR_BITS = Mac.FIELDS[1].width
INDESC_MASK_BITS = MAX_CORES

#: The model index on the input port (``in_model``): a program holds at most MAX_MODELS
#: models, selected per inference (``docs/architecture.md`` §2).
MODEL_INDEX_BITS = 4
MAX_MODELS = 1 << MODEL_INDEX_BITS
#: Read latency of the instruction memory: the read, then a register on its data (the
#: memory spans several block RAMs, and selecting among their outputs takes a stage).
INSTR_READ = 2
#: Cycles the model index must be held on the input port before an inference's first beat:
#: the model table's read, then a core's refill from the model's entry (a cycle to load the
#: registered fetch address, the instruction memory's read, a cycle into the issue
#: register: ``rtl/sequencer.py``).
MODEL_SETUP = 1 + 1 + INSTR_READ + 1
#: The machine's model table word (one per model, from :func:`model_table`): the entry pc
#: at bits [0, 17), the model's first input descriptor at [17, 34), its input beats at
#: [34, 51) (17 bits: up to io_depth = 2**16 beats). A model with 0 input beats is no model.
MODEL_FIELD_BITS = 17

MAGIC = b"TIDALPRG"
FORMAT_VERSION = 4
_HEAD = struct.Struct("<8sHHQ32s")


class ProgramFormatError(ValueError):
    """A program file cannot be loaded.

    Attributes
    ----------
    reason : str
        One of ``"magic"``, ``"version"``, ``"truncated"``, ``"checksum"``, ``"content"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProgramError(ValueError):
    """A program is inconsistent with its configuration; the message names the culprit."""


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """How one model input or output tensor maps to I/O beats.

    The tensor (one inference's worth, i.e. without the streaming axis) is viewed as
    ``rows`` rows of ``channels`` values (its last axis is the data axis). Each row is padded
    to ``blocks`` = ceil(channels / B) blocks, one beat each; value ``c`` of row ``r`` is lane
    ``c % B`` of beat ``r * blocks + c // B``. Padding lanes are zero on input and ignored
    on output.
    """

    shape: tuple[int, ...]
    block_size: int

    @property
    def channels(self) -> int:
        """Return the length of the data (last) axis."""
        return self.shape[-1] if self.shape else 1

    @property
    def rows(self) -> int:
        """Return the number of rows (product of all but the last axis)."""
        return math.prod(self.shape[:-1]) if self.shape else 1

    @property
    def blocks(self) -> int:
        """Return the beats per row."""
        return -(-self.channels // self.block_size)

    @property
    def beats(self) -> int:
        """Return the beats of the whole tensor."""
        return self.rows * self.blocks

    def to_blocks(self, values: np.ndarray) -> np.ndarray:
        """Return ``values`` (shaped like the tensor) as a zero-padded [beats, B] array."""
        rows = np.asarray(values).reshape(self.rows, self.channels)
        out = np.zeros((self.rows, self.blocks * self.block_size), dtype=rows.dtype)
        out[:, : self.channels] = rows
        return out.reshape(self.beats, self.block_size)

    def from_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """Return the tensor from a [beats, B] array (padding dropped)."""
        rows = np.asarray(blocks).reshape(self.rows, self.blocks * self.block_size)
        return rows[:, : self.channels].reshape(self.shape)


@dataclasses.dataclass
class CoreImage:
    """One core's program and initial memory contents.

    Attributes
    ----------
    instructions : np.ndarray
        ``uint64`` instruction words, executed from pc 0.
    weights : np.ndarray
        ``uint16`` bf16 bit patterns, shape [tiles, B, B]; tile ``w`` is weight-store address
        ``w``; row ``i`` of a tile produces output lane ``i``.
    tram_init : np.ndarray
        ``uint16`` bf16 bit patterns, shape [n, B]: tensor-RAM addresses 0..n-1 at load time
        (the rest is zero). Holds constants (biases, scalars) and zeroed state.
    clamps : np.ndarray
        ``float32`` shape [n, 2]: clamp table entries (low, high).
    tram_used : int
        Tensor-RAM blocks the program uses (for metrics; ≥ len(tram_init)).
    """

    instructions: np.ndarray
    weights: np.ndarray
    tram_init: np.ndarray
    clamps: np.ndarray
    tram_used: int = 0


_ARRAYS = {
    "instructions": ("<u8", 1),
    "weights": ("<u2", 3),
    "tram_init": ("<u2", 2),
    "clamps": ("<f4", 2),
}


@dataclasses.dataclass
class ModelEntry:
    """One model of a program: where its code starts and its I/O.

    :meth:`Program.model` returns one for every model; a multi-model program stores models
    1, 2, ... as :attr:`Program.extra_models`.

    Attributes
    ----------
    entry : int
        pc of the model's first instruction, the same on every core (0 for model 0).
    inputs, outputs : list[TensorLayout]
        The model's input and output tensors, in beat order.
    input_dests : np.ndarray
        ``uint32`` [input beats, 2], as :attr:`Program.input_dests`.
    meta : dict
        As :attr:`Program.meta` (``name``, ``layers``, ...), for this model.
    """

    entry: int
    inputs: list[TensorLayout]
    outputs: list[TensorLayout]
    input_dests: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Program:
    """A compiled program for one :class:`Config` (the reference's ``Program``).

    A program holds one model or several (a multi-model program, built by the compiler's
    ``ProgramBuilder``); the host selects the model of each inference by its index on the
    input port (``docs/architecture.md`` §2). Model 0 is described by the fields below and
    starts at pc 0 on every core; models 1, 2, ... are :attr:`extra_models`. The memories
    (``cores``) hold every model's code, weights and state.

    Attributes
    ----------
    config : Config
    cores : list[CoreImage]
        One image per core of the configuration.
    inputs, outputs : list[TensorLayout]
        Model 0's inputs and outputs, in beat order.
    input_dests : np.ndarray
        ``uint32`` [input beats, 2]: for model 0's input beat ``i``, the core mask and the
        tensor-RAM address it is written to (in cycle ``i + latencies(config).input_write``).
    meta : dict
        JSON-serialisable metadata of model 0: ``name``, ``streaming``, ``input_axis``,
        ``output_axis``, ``layers`` (per-layer records for reports), and anything else the
        compiler records.
    extra_models : list[ModelEntry]
        Models 1, 2, ... of a multi-model program (empty for a single model).
    reset : ModelEntry or None
        The reset entry (``docs/architecture.md`` §2), or None for a program without one (a
        hand-built program). Not a model of the program: it is the model table's entry
        :attr:`reset_index`, after the models, and :attr:`num_models` does not count it. Its
        code restores every tensor-RAM word the models write to its load-time value and
        every accumulator word they write to zero; its one input beat (``inputs`` one
        B-value block) has an empty core mask, so it writes nothing; it has no outputs.
    """

    config: Config
    cores: list[CoreImage]
    inputs: list[TensorLayout]
    outputs: list[TensorLayout]
    input_dests: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_models: list[ModelEntry] = dataclasses.field(default_factory=list)
    reset: ModelEntry | None = None

    # -- models --------------------------------------------------------------------------

    @property
    def num_models(self) -> int:
        """Return the number of models (1 for a single-model program)."""
        return 1 + len(self.extra_models)

    def check_model_index(self, model_index: Any) -> int:
        """Return ``model_index`` if it names a model of this program.

        Raises
        ------
        ValueError
            If it is not an int from 0 to ``num_models - 1``; the message says which.
        """
        if not _is_int(model_index) or not 0 <= model_index < self.num_models:
            raise ValueError(f"model_index {model_index!r} is out of range: the program has "
                             f"{self.num_models} model(s), 0..{self.num_models - 1}")
        return int(model_index)

    def model(self, model_index: int = 0) -> ModelEntry:
        """Return model ``model_index`` (model 0 from the program's own fields).

        Raises
        ------
        ValueError
            If there is no such model.
        """
        k = self.check_model_index(model_index)
        if k:
            return self.extra_models[k - 1]
        return ModelEntry(0, self.inputs, self.outputs, self.input_dests, self.meta)

    @property
    def reset_index(self) -> int | None:
        """Return the reset entry's index in the model table (:attr:`num_models`), or None
        if the program has no reset entry."""
        return self.num_models if self.reset is not None else None

    @property
    def table_size(self) -> int:
        """Return the model table's used entries: the models, then the reset entry if any."""
        return self.num_models + (self.reset is not None)

    def table_entry(self, index: Any) -> ModelEntry:
        """Return entry ``index`` of the model table: a model, or the reset entry.

        Raises
        ------
        ValueError
            If ``index`` is not an int from 0 to ``table_size - 1``.
        """
        if _is_int(index) and index == self.reset_index:
            return self.reset  # type: ignore[return-value]
        if not _is_int(index) or not 0 <= index < self.table_size:
            raise ValueError(f"model table index {index!r} is out of range: the program has "
                             f"{self.table_size} entries, 0..{self.table_size - 1}")
        return self.model(index)

    def reset_cycles(self) -> int:
        """Return the reset's cycle cost: its done cycle + 1, the interval from its dummy
        beat to the next inference's first beat (plus the model switches' ``MODEL_SETUP``
        idle cycles before and after it, ``docs/architecture.md`` §2).

        Raises
        ------
        ValueError
            If the program has no reset entry.
        """
        if self.reset_index is None:
            raise ValueError("the program has no reset entry (a hand-built program; "
                             "programs compiled by tidal have one)")
        return self.done_cycle(self.reset_index) + 1

    def model_code(self, model_index: int = 0) -> list[tuple[list[Instruction], list[int]]]:
        """Return, per core, the instructions of model table entry ``model_index`` (a model
        or the reset entry) from its entry pc up to its ``END`` and their issue cycles.

        Raises
        ------
        ValueError
            If there is no such entry.
        TimingError
            If a core's code has no ``END`` after the entry.
        """
        entry = self.table_entry(model_index).entry
        code = []
        for core in self.cores:
            instrs = decode_program(core.instructions[entry:])
            cycles = issue_cycles(instrs)
            code.append((instrs[:len(cycles)], cycles))
        return code

    # -- consistency ---------------------------------------------------------------------

    def validate(self) -> None:
        """Check the program against its configuration.

        Raises
        ------
        ProgramError
            Naming the core (or model) and the memory or field that is inconsistent.
        """
        cfg, b = self.config, self.config.block_size
        if len(self.cores) != cfg.num_cores:
            raise ProgramError(f"program has {len(self.cores)} core images for "
                               f"{cfg.num_cores} cores")
        for c, core in enumerate(self.cores):
            checks = [
                ("instructions", core.instructions, np.uint64, 1, cfg.instr_mem_depth),
                ("weights", core.weights, np.uint16, 3, cfg.weight_store_depth),
                ("tram_init", core.tram_init, np.uint16, 2, cfg.tensor_ram_depth),
                ("clamps", core.clamps, np.float32, 2, cfg.clamp_store_depth),
            ]
            for name, arr, dtype, ndim, depth in checks:
                if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != ndim:
                    raise ProgramError(f"core {c} {name}: expected a {ndim}-D {dtype.__name__} "
                                       "array")
                if len(arr) > depth:
                    raise ProgramError(f"core {c} {name}: {len(arr)} entries exceed the "
                                       f"depth {depth}")
            if core.weights.shape[1:] != (b, b):
                raise ProgramError(f"core {c} weights: tiles are {core.weights.shape[1:]}, "
                                   f"not {(b, b)}")
            if core.tram_init.shape[1] != b or core.clamps.shape[1] != 2:
                raise ProgramError(f"core {c}: tram_init rows must have {b} values and "
                                   "clamps 2")
            try:
                decode_program(core.instructions)
            except EncodingError as exc:
                raise ProgramError(f"core {c} instructions: {exc}") from None
        if self.table_size > MAX_MODELS:
            extra = " and the reset entry" if self.reset is not None else ""
            raise ProgramError(f"{self.num_models} models{extra}: the model table holds at "
                               f"most {MAX_MODELS} entries")
        total = 0
        for k in range(self.table_size):
            total += self._validate_model(k)
        if total > cfg.io_depth:
            raise ProgramError(f"the models' {total} input beats in all exceed the input "
                               f"descriptor table (io_depth={cfg.io_depth})")

    def _validate_model(self, k: int) -> int:
        """Check model table entry ``k`` (see :meth:`validate`); return its input beats."""
        cfg = self.config
        is_reset = k == self.reset_index
        model = self.reset if is_reset else self.model(k)
        who = "the reset entry " if is_reset else f"model {k} " if self.num_models > 1 else ""
        if not isinstance(model, ModelEntry) or not _is_int(model.entry):
            raise ProgramError(f"{who}is not a ModelEntry with an int entry pc")
        if not 0 <= model.entry < min(len(core.instructions) for core in self.cores):
            raise ProgramError(f"{who}entry pc {model.entry} is outside a core's "
                               "instructions")
        for c, core in enumerate(self.cores):
            try:
                issue_cycles(decode_program(core.instructions[model.entry:]))
            except TimingError as exc:
                start = f" from its entry pc {model.entry}" if k else ""
                raise ProgramError(f"{who}core {c} instructions{start}: {exc}") from None
        if is_reset:
            if model.outputs or len(model.inputs) != 1 or model.inputs[0].beats != 1:
                raise ProgramError("the reset entry must have one input beat and no outputs")
        elif not model.outputs or not model.inputs:
            raise ProgramError(f"{who or 'a program '}needs at least one input and one "
                               "output tensor")
        beats = sum(t.beats for t in model.inputs)
        dests = model.input_dests
        if not isinstance(dests, np.ndarray) or dests.shape != (beats, 2):
            raise ProgramError(f"{who}input_dests has shape "
                               f"{getattr(dests, 'shape', None)}, expected ({beats}, 2) for "
                               f"{beats} input beats")
        if beats < 1 or beats > cfg.io_depth:
            raise ProgramError(f"{who}{beats} input beats: must be 1..io_depth={cfg.io_depth}")
        masks, addrs = dests[:, 0], dests[:, 1]
        if (masks >= (1 << cfg.num_cores)).any() or (addrs >= cfg.tensor_ram_depth).any():
            raise ProgramError(f"{who}input_dests names a core or address outside the "
                               "machine")
        return beats

    # -- static timing -------------------------------------------------------------------

    def output_cycles(self, model_index: int = 0) -> list[int]:
        """Return the cycle each output beat of model ``model_index`` (a model table index:
        the reset entry has none) is presented, in beat order."""
        cycles = []
        for c, (instrs, issue) in enumerate(self.model_code(model_index)):
            for instr, t in zip(instrs, issue, strict=True):
                cycles += [a.cycle for a in accesses(self.config, instr, c, t)
                           if a.memory == OUT]
        return sorted(cycles)

    def done_cycle(self, model_index: int = 0) -> int:
        """Return the last cycle in which anything of an inference of model ``model_index``
        (a model table index: :meth:`reset_cycles` uses the reset entry's) happens.

        That is the latest of: an ``END`` issue, a memory write, an output beat, the last
        input beat's write. The next inference's first beat can be accepted one cycle later.
        """
        last = (len(self.table_entry(model_index).input_dests) - 1
                + latencies(self.config).input_write)
        for c, (instrs, issue) in enumerate(self.model_code(model_index)):
            for instr, t in zip(instrs, issue, strict=True):
                last = max(last, last_effect(self.config, instr, c, t))
        return last

    def cycle_count_per_inference(self, spaced: bool = True, model_index: int = 0) -> int:
        """Return the cycles one inference of model ``model_index`` takes.

        Parameters
        ----------
        spaced : bool
            True: latency of an inference on an idle machine, from the cycle the first input
            beat is accepted to the cycle the last output beat is presented, inclusive.
            False: the interval between back-to-back (contiguous) inferences.
        model_index : int
            The model (0 for a single-model program); with ``spaced`` False, any model
            table index (the reset entry's gives :meth:`reset_cycles`).
        """
        if spaced:
            return max(self.output_cycles(self.check_model_index(model_index))) + 1
        return self.done_cycle(model_index) + 1

    def compute_duration_per_inference_us(self, spaced: bool = True,
                                          model_index: int = 0) -> float:
        """Return :meth:`cycle_count_per_inference` in µs at the configuration's clock.

        Compute only (no host I/O), assuming the design closes timing at ``clock_mhz``.
        """
        return self.cycle_count_per_inference(spaced, model_index) / self.config.clock_mhz

    def metrics(self, model_index: int = 0) -> dict[str, Any]:
        """Return static resource use and ideal compute figures.

        Keys: per-core lists ``weight_store_used``, ``tensor_ram_used``, ``num_instrs``; the
        depths ``weight_store_depth``, ``tensor_ram_depth``, ``instr_mem_depth``; totals
        ``total_weight_tiles``, ``total_instrs`` (all of the whole program); and of model
        ``model_index``: ``input_bytes``, ``output_bytes``, ``ideal_compute_cycles`` (Σ over
        layers of ceil(tiles / cores)), ``cycles_per_inference`` and ``utilisation`` (ideal /
        actual); and ``reset_cycles`` (:meth:`reset_cycles`, None without a reset entry).
        """
        cfg, model = self.config, self.model(model_index)
        tiles = [len(c.weights) for c in self.cores]
        instrs = [len(c.instructions) for c in self.cores]
        ideal = sum(-(-layer.get("tiles", 0) // cfg.num_cores)
                    for layer in model.meta.get("layers", []))
        cycles = self.cycle_count_per_inference(model_index=model_index)
        return {
            "weight_store_used": tiles,
            "weight_store_depth": cfg.weight_store_depth,
            "tensor_ram_used": [c.tram_used for c in self.cores],
            "tensor_ram_depth": cfg.tensor_ram_depth,
            "num_instrs": instrs,
            "instr_mem_depth": cfg.instr_mem_depth,
            "total_weight_tiles": sum(tiles),
            "total_instrs": sum(instrs),
            "input_bytes": sum(t.beats for t in model.inputs) * cfg.block_size * 2,
            "output_bytes": sum(t.beats for t in model.outputs) * cfg.block_size * 2,
            "ideal_compute_cycles": ideal,
            "cycles_per_inference": cycles,
            "utilisation": ideal / cycles if cycles else 0.0,
            "reset_cycles": self.reset_cycles() if self.reset is not None else None,
        }

    # -- serialisation -------------------------------------------------------------------

    def save_bytes(self) -> bytes:
        """Return the program in the binary file format (what :meth:`load_bytes` reads).

        Raises
        ------
        ProgramError
            If :meth:`validate` or :func:`check_meta` fails: a file that could not be
            loaded back is never written.
        """
        self.validate()
        check_meta(self)
        blobs: list[bytes] = []
        offset = 0
        cores = []
        for core in self.cores:
            entry: dict[str, Any] = {"tram_used": int(core.tram_used)}
            for name, (dtype, _) in _ARRAYS.items():
                arr = np.ascontiguousarray(getattr(core, name), dtype=dtype)
                raw = arr.tobytes()
                entry[name] = {"offset": offset, "shape": list(arr.shape)}
                blobs.append(raw)
                offset += len(raw)
            cores.append(entry)
        dests = np.ascontiguousarray(self.input_dests, dtype="<u4")
        header = {
            "config": self.config.to_dict(),
            "cores": cores,
            "inputs": [list(t.shape) for t in self.inputs],
            "outputs": [list(t.shape) for t in self.outputs],
            "input_dests": {"offset": offset, "shape": list(dests.shape)},
            "meta": self.meta,
            "models": [],
            "reset": None,
        }
        blobs.append(dests.tobytes())
        offset += len(blobs[-1])
        for model in self.extra_models:
            dests = np.ascontiguousarray(model.input_dests, dtype="<u4")
            header["models"].append({
                "entry": model.entry,
                "inputs": [list(t.shape) for t in model.inputs],
                "outputs": [list(t.shape) for t in model.outputs],
                "input_dests": {"offset": offset, "shape": list(dests.shape)},
                "meta": model.meta,
            })
            blobs.append(dests.tobytes())
            offset += len(blobs[-1])
        if self.reset is not None:
            dests = np.ascontiguousarray(self.reset.input_dests, dtype="<u4")
            header["reset"] = {"model_index": self.reset_index, "entry": self.reset.entry,
                               "input_dests": {"offset": offset, "shape": list(dests.shape)}}
            blobs.append(dests.tobytes())
            offset += len(blobs[-1])
        head = json.dumps(header, sort_keys=True).encode()
        payload = struct.pack("<I", len(head)) + head + b"".join(blobs)
        digest = hashlib.sha256(payload).digest()
        return _HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(payload), digest) + payload

    def save(self, path: str | Path) -> None:
        """Write the program to ``path``."""
        Path(path).write_bytes(self.save_bytes())

    @classmethod
    def load_bytes(cls, data: bytes) -> Program:
        """Read a program from :meth:`save_bytes` output.

        Raises
        ------
        ProgramFormatError
            If the bytes are not a program (magic), of another format version, truncated,
            corrupted (checksum or trailing bytes), or inconsistent (content).
        """
        data = bytes(data)
        if not data:
            raise ProgramFormatError("magic", "not a tidal program: the file is empty")
        if len(data) < len(MAGIC):
            raise ProgramFormatError("magic", f"not a tidal program: {len(data)} byte(s), "
                                     f"shorter than the {len(MAGIC)}-byte magic number")
        if data[: len(MAGIC)] != MAGIC:
            raise ProgramFormatError("magic", "not a tidal program: bad magic number")
        if len(data) < _HEAD.size:
            raise ProgramFormatError("truncated", f"truncated program: {len(data)} bytes, "
                                     f"shorter than the {_HEAD.size}-byte header")
        _, version, reserved, length, digest = _HEAD.unpack_from(data)
        if version != FORMAT_VERSION:
            raise ProgramFormatError("version", f"unsupported program format version "
                                     f"{version}; this tidal reads version {FORMAT_VERSION}")
        if reserved:
            raise ProgramFormatError("checksum", "corrupted program: reserved header field "
                                     f"is {reserved:#x}, not 0")
        payload = data[_HEAD.size:]
        if len(payload) != length and hashlib.sha256(payload).digest() == digest:
            # The payload is intact: only the length field is wrong. The reason stays the
            # one the sizes give (the format's rule); the message says which field is bad.
            raise ProgramFormatError("truncated" if len(payload) < length else "checksum",
                                     f"corrupted program: the header's payload length is "
                                     f"{length:,} bytes, but the payload (whose checksum "
                                     f"matches) is {len(payload):,}")
        if len(payload) < length:
            raise ProgramFormatError("truncated", f"truncated program: the header announces "
                                     f"a payload of {length:,} bytes, the file holds "
                                     f"{len(payload):,}")
        if len(payload) > length:
            raise ProgramFormatError("checksum", f"corrupted program: {len(payload) - length} "
                                     "trailing bytes after the payload")
        if hashlib.sha256(payload).digest() != digest:
            raise ProgramFormatError("checksum", "corrupted program: checksum mismatch")
        try:
            return cls._from_payload(payload)
        except ProgramFormatError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError,
                struct.error) as exc:
            raise ProgramFormatError("content", f"corrupted program content: {exc}") from None

    @classmethod
    def _from_payload(cls, payload: bytes) -> Program:
        (head_len,) = struct.unpack_from("<I", payload)
        header = json.loads(payload[4: 4 + head_len].decode())
        arrays = payload[4 + head_len:]

        def array(desc: dict[str, Any], dtype: str, ndim: int) -> np.ndarray:
            shape = tuple(int(s) for s in desc["shape"])
            if len(shape) != ndim or any(s < 0 for s in shape):
                raise ValueError(f"bad array shape {shape}")
            start = int(desc["offset"])
            size = math.prod(shape) * np.dtype(dtype).itemsize
            if start < 0 or start + size > len(arrays):
                raise ValueError("array outside the payload")
            out = np.frombuffer(arrays, dtype=dtype, count=math.prod(shape), offset=start)
            return out.reshape(shape).astype(np.dtype(dtype).newbyteorder("="))

        try:
            config = Config.from_dict(header["config"])
        except ConfigError as exc:
            raise ValueError(f"configuration: {exc}") from None
        cores = []
        for entry in header["cores"]:
            fields = {name: array(entry[name], dtype, ndim)
                      for name, (dtype, ndim) in _ARRAYS.items()}
            cores.append(CoreImage(**fields, tram_used=int(entry["tram_used"])))
        b = config.block_size

        def layouts(shapes: list[list[int]]) -> list[TensorLayout]:
            return [TensorLayout(tuple(int(s) for s in shape), b) for shape in shapes]

        program = cls(
            config=config,
            cores=cores,
            inputs=layouts(header["inputs"]),
            outputs=layouts(header["outputs"]),
            input_dests=array(header["input_dests"], "<u4", 2),
            meta=header["meta"],  # a fresh dict from JSON, or refused by check_meta
            extra_models=[ModelEntry(entry["entry"], layouts(entry["inputs"]),
                                     layouts(entry["outputs"]),
                                     array(entry["input_dests"], "<u4", 2), entry["meta"])
                          for entry in header["models"]],
        )
        reset = header["reset"]
        if reset is not None:
            if reset["model_index"] != program.num_models:
                raise ValueError(f"the reset entry's model index is {reset['model_index']!r}, "
                                 f"not {program.num_models} (the entry after the models)")
            program.reset = reset_entry(config, int(reset["entry"]))
            if not np.array_equal(array(reset["input_dests"], "<u4", 2),
                                  program.reset.input_dests):
                raise ValueError("the reset entry's input descriptor must be [[0, 0]] (one "
                                 "beat, written nowhere)")
        try:
            program.validate()
            check_meta(program)
        except ProgramError as exc:
            raise ValueError(str(exc)) from None
        return program

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read a program file written by :meth:`save` (errors as :meth:`load_bytes`)."""
        return cls.load_bytes(Path(path).read_bytes())


# -- the machine's tables -------------------------------------------------------------------


def reset_entry(config: Config, entry: int) -> ModelEntry:
    """Return a reset entry (:attr:`Program.reset`) whose code starts at pc ``entry``.

    Its one input beat (a block of B values, whatever the host sends) has core mask 0: the
    machine accepts it and writes it nowhere, since a model table word needs at least one
    beat. It has no outputs.
    """
    return ModelEntry(entry, [TensorLayout((config.block_size,), config.block_size)], [],
                      np.zeros((1, 2), np.uint32), {"name": "reset"})


def indesc_words(program: Program) -> list[int]:
    """Return the input descriptor table: every model's descriptors, model 0's first.

    Word ``i`` is ``addr | mask << INDESC_ADDR_BITS``; model ``k``'s descriptors start at
    the ``base`` of its :func:`model_table` word.
    """
    return [int(addr) | int(mask) << INDESC_ADDR_BITS
            for k in range(program.table_size)
            for mask, addr in program.table_entry(k).input_dests.tolist()]


def model_table(program: Program) -> list[int]:
    """Return the model table: per model (then the reset entry, if the program has one),
    ``entry | base << 17 | beats << 34``.

    ``entry`` is the model's entry pc, ``base`` the index of its first input descriptor in
    :func:`indesc_words` and ``beats`` its input beats (:data:`MODEL_FIELD_BITS` each). The
    machine reads the word of the index on its input port (``docs/architecture.md`` §2);
    the words of indices without a model are zero.
    """
    words, base = [], 0
    for k in range(program.table_size):
        model = program.table_entry(k)
        beats = len(model.input_dests)
        words.append(model.entry | base << MODEL_FIELD_BITS | beats << 2 * MODEL_FIELD_BITS)
        base += beats
    return words


# -- metadata ------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_meta(program: Program) -> None:
    """Check that every model's ``meta`` has the types and ranges its readers rely on.

    ``meta`` is free-form apart from these keys, each optional: ``name`` and
    ``reference_source`` (str), ``streaming`` (bool), ``input_axis`` and ``output_axis``
    (ints, both or neither: where the time axis is inserted into the input / output shape,
    so 0 .. rank), ``reference_cycles`` (int >= 1) and ``layers`` (a list of dicts whose
    ``name`` and ``op`` are str, ``tiles`` and ``macs`` ints >= 0, ``cores`` a list of core
    indices, ``start`` and ``end`` cycles with ``0 <= start <= end``). :meth:`Program.load`
    calls it, so that a loaded program is consistent in every field.

    Raises
    ------
    ProgramError
        Naming the first key (``meta["layers"][2]["end"]``) that is wrong and why (and the
        model, in a multi-model program).
    """
    for k in range(program.num_models):
        model = program.model(k)
        _check_model_meta(model.meta, model.inputs, model.outputs, program.config.num_cores,
                          f"model {k} " if program.num_models > 1 else "")


def _check_model_meta(meta: Any, inputs: list[TensorLayout], outputs: list[TensorLayout],
                      cores: int, who: str) -> None:
    """Check one model's ``meta`` (see :func:`check_meta`); ``who`` prefixes messages."""
    if not isinstance(meta, dict):
        raise ProgramError(f"{who}meta must be a dict, not {type(meta).__name__}")

    def bad(where: str, value: Any, want: str) -> ProgramError:
        return ProgramError(f"{who}meta{where} must be {want}, not {value!r}")

    for key in ("name", "reference_source"):
        if key in meta and not isinstance(meta[key], str):
            raise bad(f"[{key!r}]", meta[key], "a string")
    if "streaming" in meta and not isinstance(meta["streaming"], bool):
        raise bad("['streaming']", meta["streaming"], "true or false")
    axes = [key for key in ("input_axis", "output_axis") if meta.get(key) is not None]
    if len(axes) == 1:
        raise ProgramError(f"{who}meta has {axes[0]!r} without its pair: a streaming program "
                           "records both input_axis and output_axis")
    for key, tensors in (("input_axis", inputs), ("output_axis", outputs)):
        if key in axes:
            rank = len(tensors[0].shape)
            if not _is_int(meta[key]) or not 0 <= meta[key] <= rank:
                raise bad(f"[{key!r}]", meta[key], f"an axis of the {rank}-d "
                          f"{key.split('_')[0]} plus time, 0..{rank}")
    if meta.get("reference_cycles") is not None and (
            not _is_int(meta["reference_cycles"]) or meta["reference_cycles"] < 1):
        raise bad("['reference_cycles']", meta["reference_cycles"], "an integer >= 1")
    layers = meta.get("layers", [])
    if not isinstance(layers, list):
        raise bad("['layers']", layers, "a list")
    for i, layer in enumerate(layers):
        where = f"['layers'][{i}]"
        if not isinstance(layer, dict):
            raise bad(where, layer, "a dict")
        for key in ("name", "op"):
            if key in layer and not isinstance(layer[key], str):
                raise bad(f"{where}[{key!r}]", layer[key], "a string")
        for key in ("tiles", "macs"):
            if key in layer and (not _is_int(layer[key]) or layer[key] < 0):
                raise bad(f"{where}[{key!r}]", layer[key], "an integer >= 0")
        used = layer.get("cores", [])
        if not isinstance(used, list) or not all(_is_int(c) and 0 <= c < cores for c in used):
            raise bad(f"{where}['cores']", used, f"a list of core indices 0..{cores - 1}")
        start, end = layer.get("start"), layer.get("end")
        for key, value in (("start", start), ("end", end)):
            if value is not None and (not _is_int(value) or value < 0):
                raise bad(f"{where}[{key!r}]", value, "a cycle (an integer >= 0)")
        if (start is None) != (end is None) or (start is not None and start > end):
            raise ProgramError(f"{who}meta{where}: start {start!r} and end {end!r} must both be "
                               "cycles, start <= end")
