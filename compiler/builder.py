"""Multi-model programs: :class:`ProgramBuilder` (the reference's ``ProgramBuilder``).

Several models share one machine; the host selects the model of each inference by its index
on the input port (``docs/architecture.md`` §2). Each model is compiled on its own, on the
cores it is given (all by default), exactly as ``NNIR.to_program`` compiles it; the builder
then places the models side by side in the memories of the machine:

- instructions: model ``k`` starts at one pc on every core (its entry), after the longest
  code of the models before it; a core a model does not use holds just ``END`` there;
- weight store: each core's tiles of model ``k`` follow those of the models before it;
- tensor RAM: model ``k``'s buffers (constants, inputs, activations and streaming state)
  start at one address on all its cores, above everything the models before it use there,
  so that a block sent to several cores keeps one address and every model's state is its
  own;
- clamp table: each core's entries are shared between the models (equal bounds, one entry);
- accumulator store: shared. A model's accumulators hold nothing from one inference to the
  next (every chain starts with a ``MAC`` that sets its accumulator), so models need no
  separate ones;
- reset: one reset entry (``compiler/reset.py``), after the models, restores every model's
  memories at once.

Relocation only adds offsets to addresses and renames cores: every model keeps the timing of
its own single-model program, and computes bit-identical outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.lower import lower
from compiler.nnir import NNIR
from compiler.program import AllocationError, Program
from compiler.reset import add_reset
from isa.config import Config
from isa.instructions import (
    Dest,
    End,
    Fn,
    Instruction,
    Mac,
    Vec,
    Wait,
    decode_program,
    encode_program,
)
from isa.program import MAX_MODELS, CoreImage, ModelEntry

__all__ = ["ProgramBuilder"]


@dataclasses.dataclass
class _Added:
    program: Program
    cores: list[int]


@dataclasses.dataclass
class _Core:
    """One physical core's memories as the models are placed."""

    instrs: list[Instruction] = dataclasses.field(default_factory=list)
    tiles: list[np.ndarray] = dataclasses.field(default_factory=list)
    tram: list[np.ndarray] = dataclasses.field(default_factory=list)
    tram_used: int = 0
    clamps: list[tuple[float, float]] = dataclasses.field(default_factory=list)


class ProgramBuilder:
    """Build a program of several models (the reference's ``ProgramBuilder``).

    Parameters
    ----------
    config : Config
        The machine every model is compiled for.

    Examples
    --------
    >>> builder = ProgramBuilder(config)                       # doctest: +SKIP
    >>> builder.add_nnir(cnn_nnir)                             # model 0, all cores
    >>> builder.add_nnir(mlp_nnir, core_indices=[2, 3])        # model 1, cores 2 and 3
    >>> program = builder.to_program()
    >>> vm = program.to_vm(); vm.run(x, model_index=1)
    """

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"config must be a Config, not {type(config).__name__}")
        self.config = config
        self._models: list[_Added] = []

    def add_nnir(self, nnir: NNIR, name: str | None = None,
                 core_indices: Sequence[int] | None = None, **kwargs: Any) -> int:
        """Compile ``nnir`` as the next model and return its model index.

        Parameters
        ----------
        nnir : NNIR
            The model, as for ``NNIR.to_program`` (streaming-transformed if it is a
            sequence model).
        name : str, optional
            The model's name (default ``"model<k>"``).
        core_indices : sequence of int, optional
            The cores the model runs on (default: all). Models on separate cores share
            nothing but the input and output ports; models on shared cores share their
            memories, each in its own region.
        **kwargs
            Passed to ``NNIR.to_program`` (``split_reduction``, ``partial_sums``).

        Returns
        -------
        int
            The model index (0 for the first model added), which ``vm.run(x,
            model_index=k)`` and ``tidal run --model K`` select.

        Raises
        ------
        ValueError
            If ``core_indices`` is empty, repeats a core or names one outside the machine, or
            the program already holds ``MAX_MODELS - 1`` models (the reset entry takes the
            model table's last entry).
        AllocationError
            If the model alone does not fit its cores.
        """
        k = len(self._models)
        if k >= MAX_MODELS - 1:
            raise ValueError(f"a program holds at most {MAX_MODELS - 1} models (the model "
                             "table's last entry is the reset entry)")
        n = self.config.num_cores
        if core_indices is None:
            cores = list(range(n))
        else:
            cores = list(core_indices)
            if (not cores or len(set(cores)) != len(cores)
                    or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n
                               for c in cores)):
                raise ValueError(f"core_indices {list(core_indices)!r} must be distinct cores "
                                 f"of the {n}-core machine, 0..{n - 1}")
        config = (self.config if len(cores) == n
                  else dataclasses.replace(self.config, num_cores=len(cores)))
        program = lower(nnir, config, name=name or f"model{k}", **kwargs)
        self._models.append(_Added(program, cores))
        return k

    def to_program(self) -> Program:
        """Place every model added on the machine and return the program.

        Returns
        -------
        Program
            Model ``k`` is the ``k``-th added; one model added gives exactly the program
            ``NNIR.to_program`` gives.

        Raises
        ------
        ValueError
            If no model was added.
        AllocationError
            If the models do not fit together: the message names the memory, the core, what
            the models need and what there is.
        """
        if not self._models:
            raise ValueError("no model added: call add_nnir first")
        cfg = self.config
        machine = [_Core() for _ in range(cfg.num_cores)]
        entries = []
        for added in self._models:
            entries.append(self._place(added, machine))
        cores = []
        for c, core in enumerate(machine):
            self._check(c, core)
            b = cfg.block_size
            tram = np.concatenate(core.tram) if core.tram else np.zeros((0, b), np.uint16)
            cores.append(CoreImage(
                instructions=encode_program(core.instrs),
                weights=(np.stack(core.tiles) if core.tiles
                         else np.zeros((0, b, b), np.uint16)),
                tram_init=tram,
                clamps=np.array(core.clamps, np.float32).reshape(-1, 2),
                tram_used=core.tram_used,
            ))
        beats = sum(len(e.input_dests) for e in entries)
        if beats > cfg.io_depth:
            raise AllocationError(f"input descriptor table: the models need {beats} input "
                                  f"beats, has {cfg.io_depth} (io_depth)")
        first = entries[0]
        program = Program(config=cfg, cores=cores, inputs=first.inputs, outputs=first.outputs,
                          input_dests=first.input_dests, meta=first.meta,
                          extra_models=entries[1:])
        program.validate()
        return add_reset(program)

    def _place(self, added: _Added, machine: list[_Core]) -> ModelEntry:
        """Append one model to ``machine``; return its entry (pc, I/O, meta)."""
        prog, phys = added.program, added.cores
        entry = max(len(core.instrs) for core in machine)
        for core in machine:
            core.instrs += [End()] * (entry - len(core.instrs))
        # One tensor-RAM base on all the model's cores: a block sent to several cores (an
        # input beat, a VEC -> TRAM) has one address.
        base = max(machine[c].tram_used for c in phys)

        def mask(local: int) -> int:
            return sum(1 << phys[j] for j in range(len(phys)) if local >> j & 1)

        for j, image in enumerate(prog.cores):
            core = machine[phys[j]]
            w_base = len(core.tiles)
            clamps = [_clamp_slot(core.clamps, (float(lo), float(hi)))
                      for lo, hi in image.clamps.tolist()]
            for instr in decode_program(image.instructions):
                core.instrs.append(_relocate(instr, base, w_base, clamps, mask))
            core.tiles += list(image.weights)
            if len(image.tram_init):
                top = sum(len(t) for t in core.tram)
                core.tram.append(np.zeros((base - top, self.config.block_size), np.uint16))
                core.tram.append(image.tram_init)
            if image.tram_used:
                core.tram_used = base + image.tram_used
        for c in set(range(len(machine))) - set(phys):
            machine[c].instrs.append(End())
        dests = np.array([[mask(int(m)), int(a) + base] for m, a in prog.input_dests.tolist()],
                         np.uint32).reshape(-1, 2)
        meta = dict(prog.meta)
        meta["layers"] = [{**layer, "cores": sorted(phys[j] for j in layer.get("cores", []))}
                          for layer in prog.meta.get("layers", [])]
        if len(phys) < len(machine):
            meta["cores"] = list(phys)
        return ModelEntry(entry, prog.inputs, prog.outputs, dests, meta)

    def _check(self, c: int, core: _Core) -> None:
        """Raise :class:`AllocationError` if core ``c``'s memories overflow."""
        cfg = self.config
        for what, used, depth in (
                ("instruction memory", len(core.instrs), cfg.instr_mem_depth),
                ("weight store", len(core.tiles), cfg.weight_store_depth),
                ("tensor RAM", core.tram_used, cfg.tensor_ram_depth),
                ("clamp table", len(core.clamps), cfg.clamp_store_depth)):
            if used > depth:
                raise AllocationError(f"{what} of core {c}: the {len(self._models)} models "
                                      f"need {used} words, has {depth}")


def _clamp_slot(table: list[tuple[float, float]], bounds: tuple[float, float]) -> int:
    """Return the index of ``bounds`` in ``table``, appending it if new."""
    if bounds not in table:
        table.append(bounds)
    return table.index(bounds)


def _relocate(instr: Instruction, tram: int, weight: int, clamps: list[int],
              mask: Any) -> Instruction:
    """Return ``instr`` with its tensor-RAM and weight addresses moved up by ``tram`` and
    ``weight``, its clamp entry renamed by ``clamps`` and its core mask by ``mask``."""
    if isinstance(instr, End | Wait):
        return instr
    if isinstance(instr, Mac):
        return dataclasses.replace(instr, tram=instr.tram + tram, weight=instr.weight + weight)
    if isinstance(instr, Vec):
        addr = instr.addr + tram if instr.dest == Dest.TRAM else instr.addr
        cores = mask(instr.cores) if instr.dest in (Dest.TRAM, Dest.ACCS) else instr.cores
        return dataclasses.replace(instr, clamp=clamps[instr.clamp], tram=instr.tram + tram,
                                   addr=addr, cores=cores)
    if isinstance(instr, Fn):
        # An FN's destination is its own core (no mask); accumulators are shared.
        addr = instr.addr + tram if instr.dest == Dest.TRAM else instr.addr
        return dataclasses.replace(instr, tram=instr.tram + tram, addr=addr)
    raise TypeError(f"ProgramBuilder cannot relocate a {instr.OPCODE.name} instruction")
