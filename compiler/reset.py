"""The reset entry: code that returns a program's memories to their load-time state.

A streaming program keeps state in tensor RAM between inferences (conv windows, recurrent
hidden and cell states). To start a new sequence without reloading the program, the host
runs the program's **reset entry** (``docs/architecture.md`` §2): an entry of the model
table, after the models, selected like a model. :func:`add_reset` appends it to a program.

Per core, the reset code is one ``VEC PASS_T`` per word to restore, then ``END``:

- every tensor-RAM word any model of the program writes during an inference (input beats,
  ``VEC`` to a tensor RAM, local or remote, ``FN``; state and scratch alike) is copied from a
  word that holds its load-time value and that no inference writes: a zero word for a word
  that starts at zero, else a copy of the word's initial value placed in free tensor RAM
  above everything the program uses (one copy per distinct value);
- every accumulator word any model writes is set to zero (``VEC PASS_T`` from the zero
  word to ``dest = ACC``).

The ``VEC`` uses the clamp entry (−inf, +inf), added to a core's table if it has none: a
``PASS_T`` through it, rounded to bf16, gives back the bf16 value unchanged (checked here
for every value restored). The reset's one input beat is written nowhere (core mask 0, see
:func:`isa.program.reset_entry`). The VM runs the reset like any inference, so its cost is
a static figure: :meth:`isa.program.Program.reset_cycles`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compiler.program import AllocationError, Program
from isa.instructions import Dest, End, Instruction, Vec, VecOp, decode_program, encode_program
from isa.numerics import bf16_bits_to_f32, clamp, f32_to_bf16_bits
from isa.program import CoreImage, reset_entry
from isa.timing import ACC, TRAM, accesses

__all__ = ["add_reset"]

_NO_CLAMP = (-math.inf, math.inf)


def add_reset(program: Program) -> Program:
    """Return ``program`` with a reset entry (:attr:`isa.program.Program.reset`) appended.

    Parameters
    ----------
    program : Program
        A validated program without a reset entry.

    Returns
    -------
    Program
        The same models, code, weights and timing; each core's instructions end with the
        reset code (all cores' at one entry pc, shorter cores padded with ``END``), its
        tensor RAM image holds the initial values the reset copies from, and ``tram_used``
        counts them.

    Raises
    ------
    AllocationError
        If the reset code, its copies of initial values or its clamp entry do not fit a
        core's instruction memory, tensor RAM or clamp table (the message names which).
    ValueError
        If the program already has a reset entry.
    """
    if program.reset is not None:
        raise ValueError("the program already has a reset entry")
    cfg = program.config
    tram_writes: list[set[int]] = [set() for _ in range(cfg.num_cores)]
    acc_writes: list[set[int]] = [set() for _ in range(cfg.num_cores)]
    for k in range(program.num_models):
        for mask, addr in program.model(k).input_dests.tolist():
            for c in range(cfg.num_cores):
                if mask >> c & 1:
                    tram_writes[c].add(int(addr))
        for c, (instrs, issue) in enumerate(program.model_code(k)):
            for instr, t in zip(instrs, issue, strict=True):
                for a in accesses(cfg, instr, c, t):
                    if a.write and a.memory == TRAM:
                        tram_writes[a.core].add(a.addr)
                    elif a.write and a.memory == ACC:
                        acc_writes[a.core].add(a.addr)
    codes, cores = [], []
    for c in range(cfg.num_cores):
        code, image = _core_reset(program, c, sorted(tram_writes[c]), sorted(acc_writes[c]))
        codes.append(code)
        cores.append(image)
    entry = max(len(core.instructions) for core in program.cores)
    for c, (core, code) in enumerate(zip(cores, codes, strict=True)):
        instrs = decode_program(core.instructions)
        instrs += [End()] * (entry - len(instrs)) + code
        if len(instrs) > cfg.instr_mem_depth:
            raise AllocationError(f"instruction memory of core {c}: the program and its "
                                  f"reset code need {len(instrs)} instructions, has "
                                  f"{cfg.instr_mem_depth}")
        core.instructions = encode_program(instrs)
    out = dataclasses.replace(program, cores=cores, reset=reset_entry(cfg, entry))
    out.validate()
    return out


def _core_reset(program: Program, c: int, tram: list[int], acc: list[int]
                ) -> tuple[list[Instruction], CoreImage]:
    """Return core ``c``'s reset code and its new image (copies of initial values, clamp)."""
    cfg, image = program.config, program.cores[c]
    b = cfg.block_size
    init = image.tram_init
    written = set(tram)

    def initial(addr: int) -> bytes:
        return init[addr].tobytes() if addr < len(init) else bytes(2 * b)

    zero = bytes(2 * b)
    # tram_used of a hand-built program may be 0: stay above every word written too.
    top = max(image.tram_used, len(init), max(written, default=-1) + 1)
    # Read-only words holding each value to copy: a word no inference writes already holds
    # its load-time value in every inference; new copies go above everything used.
    sources: dict[bytes, int] = {}
    wanted = {initial(a) for a in tram} | ({zero} if acc else set())
    for addr in range(top):
        value = initial(addr)
        if addr not in written and value in wanted and value not in sources:
            sources[value] = addr
    copies = [value for value in sorted(wanted) if value not in sources]
    for i, value in enumerate(copies):
        sources[value] = top + i
    if top + len(copies) > cfg.tensor_ram_depth:
        raise AllocationError(f"tensor RAM of core {c}: the program and the reset's "
                              f"{len(copies)} copies of initial values need "
                              f"{top + len(copies)} words, has {cfg.tensor_ram_depth}")
    clamps = [tuple(float(v) for v in row) for row in image.clamps.tolist()]
    if (tram or acc) and _NO_CLAMP not in clamps:
        if len(clamps) >= cfg.clamp_store_depth:
            raise AllocationError(f"clamp table of core {c}: the reset needs an entry "
                                  f"(-inf, +inf), the table's {cfg.clamp_store_depth} are "
                                  "taken")
        clamps.append(_NO_CLAMP)
    tram_init = init
    if copies:
        tram_init = np.zeros((top + len(copies), b), np.uint16)
        tram_init[:len(init)] = init
        tram_init[top:] = np.frombuffer(b"".join(copies), np.uint16).reshape(-1, b)
    _check_identity(wanted)
    code: list[Instruction] = []
    if tram or acc:
        slot = clamps.index(_NO_CLAMP)
        code += [Vec(op=VecOp.PASS_T, clamp=slot, acc=0, tram=sources[initial(a)],
                     dest=Dest.TRAM, addr=a, cores=1 << c) for a in tram]
        code += [Vec(op=VecOp.PASS_T, clamp=slot, acc=0, tram=sources[zero], dest=Dest.ACC,
                     addr=a, cores=0) for a in acc]
    code.append(End())
    new = dataclasses.replace(image, tram_init=tram_init,
                              clamps=np.array(clamps, np.float32).reshape(-1, 2),
                              tram_used=max(image.tram_used, top + len(copies)))
    return code, new


def _check_identity(values: set[bytes]) -> None:
    """Raise ValueError unless ``PASS_T`` through (−inf, +inf) keeps every value (a bf16
    block's bytes) the reset copies."""
    if not values:
        return
    bits = np.frombuffer(b"".join(sorted(values)), np.uint16)
    if not np.array_equal(f32_to_bf16_bits(clamp(bf16_bits_to_f32(bits), -np.inf, np.inf)),
                          bits):
        raise ValueError("an initial tensor-RAM value does not survive VEC PASS_T (a "
                         "non-canonical NaN): the reset cannot restore it")
