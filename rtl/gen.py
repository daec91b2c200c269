"""Generate the Verilog of a configuration: ``python -m rtl.gen --config <preset> --out <dir>``.

Writes (the contract with ``sim/``, described in ``docs/rtl.md``):

- ``tidal_lane.v``, ``tidal_matrix.v``, ``tidal_vlane.v``, ``tidal_flane.v``,
  ``tidal_core.v``, ``tidal_top.v``: the matrix lane, the matrix block, the vector and
  function lanes, the core and the top, each converted once from the ``"instance"`` flavour
  (the matrix block instantiates ``tidal_lane`` B times; the core ``tidal_matrix`` once and
  ``tidal_vlane`` and ``tidal_flane`` B times each, in its vector and function units; the
  top ``tidal_core`` num_cores times);
- ``tidal_mem.v``, ``tidal_rom.v``, ``tidal_trace.v``, ``tidal.vlt``: copied from
  ``rtl/verilog/``;
- ``manifest.json``: ``top``, ``sources`` (in compilation order, top last),
  ``verilator_config`` (``.vlt`` files, to list before the sources), ``config``, ``broken``
  and ``memories`` (every ``tidal_mem`` that holds program data or is read back).

``--write-trace`` adds a ``tidal_wtrace`` instance to every core (``tidal_wtrace.v``,
simulation only), which reports every memory write to ``+TIDAL_WTRACE=<dir>``; the
co-simulation builds with it (``docs/cosim.md``).

``--broken rounding`` builds the test-only variant whose vector unit (its lanes and its
clamp bounds) truncates instead of rounding to bf16 (give it its own ``--out``).

:func:`memory_images` gives the words of every memory image of a program by manifest path,
and :func:`write_memory_images` writes them as the hex files ``tidal_mem`` loads, with the
function table ``tidal_rom`` loads.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from amaranth.back import verilog

from isa.config import Config, ConfigError
from isa.functions import table
from isa.instructions import WORD_BITS
from isa.program import (
    INDESC_ADDR_BITS,
    INDESC_MASK_BITS,
    MAX_MODELS,
    MODEL_FIELD_BITS,
    Program,
    indesc_words,
    model_table,
)
from rtl.core import Core, core_images
from rtl.function import FunctionLane
from rtl.lane import Lane
from rtl.matrix import Matrix
from rtl.top import Top
from rtl.vector import VectorLane

__all__ = ["BROKEN", "VERILOG_DIR", "FN_TABLE_FILE", "generate", "manifest_memories",
           "memory_images", "write_memory_images", "main"]

#: Deliberately broken variants ``--broken`` can build (test-only).
BROKEN = ("rounding",)
#: The hand-written Verilog copied into every output directory.
VERILOG_DIR = Path(__file__).resolve().parent / "verilog"
_HAND_WRITTEN = ("tidal_mem.v", "tidal_rom.v", "tidal_trace.v")
#: The function table's file in the memory directory (``rtl/verilog/tidal_rom.v``).
FN_TABLE_FILE = "tidal_fn_table.hex"
#: The hand-written Verilog of the write trace, copied only with ``write_trace``.
_WRITE_TRACE = "tidal_wtrace.v"
_VLT = ("tidal.vlt",)


def manifest_memories(config: Config) -> list[dict[str, Any]]:
    """Return the manifest's ``memories`` list for ``config``.

    Each entry: ``path`` (hierarchical, below the top), ``kind`` (``weights``, ``tram``,
    ``imem``, ``clamp``, ``indesc``, ``models`` or ``acc``), ``core``, ``lane`` (or None),
    ``width`` in bits and ``depth`` in words. The ``acc`` entry of a core is the copy the
    vector unit reads (the accumulate stage's copy, ``acc_mac``, always holds the same words).
    """
    b = config.block_size
    mems: list[dict[str, Any]] = [{
        "path": "indesc", "kind": "indesc", "core": None, "lane": None,
        "width": INDESC_ADDR_BITS + INDESC_MASK_BITS, "depth": config.io_depth,
    }, {
        "path": "models", "kind": "models", "core": None, "lane": None,
        "width": 3 * MODEL_FIELD_BITS, "depth": MAX_MODELS,
    }]
    for c in range(config.num_cores):
        def entry(name: str, kind: str, width: int, depth: int, lane: int | None = None,
                  c: int = c) -> dict[str, Any]:
            return {"path": f"core{c}.{name}", "kind": kind, "core": c, "lane": lane,
                    "width": width, "depth": depth}
        mems += [
            entry("imem", "imem", WORD_BITS, config.instr_mem_depth),
            entry("tram", "tram", 16 * b, config.tensor_ram_depth),
            entry("clamp", "clamp", 64, config.clamp_store_depth),
            entry("acc", "acc", 32 * b, config.accum_store_depth),
        ]
        mems += [entry(f"matrix.lane{lane}.wmem", "weights", 16 * b, config.weight_store_depth,
                       lane) for lane in range(b)]
    return mems


def memory_images(program: Program) -> dict[str, list[int]]:
    """Return the initial words of every loaded memory of ``program`` by manifest path.

    Words past an image's end are zero (and not listed); memories without an image (the
    accumulator store) are absent.
    """
    program.validate()
    images = {"indesc": indesc_words(program), "models": model_table(program)}
    for c, core in enumerate(program.cores):
        for name, words in core_images(core, program.config).items():
            images[f"core{c}.{name}"] = words
    return images


def write_memory_images(program: Program, directory: str | Path,
                        prefixes: tuple[str, ...] = ("tidal_top.", "TOP.tidal_top.")) -> None:
    """Write the hex files of ``program``'s memory images into ``directory``.

    Each image is written once per prefix, as ``<prefix><path>.hex``: ``tidal_mem`` looks
    for ``<%m>.hex``, and ``%m`` is ``tidal_top.…`` under Icarus and ``TOP.tidal_top.…``
    under Verilator. Run the simulator with ``+TIDAL_MEMDIR=<directory>``. Empty images are
    not written (a missing file leaves the memory zero). A file shorter than its memory ends
    with an explicit zero last word (``@<depth - 1>``), which the memory holds anyway:
    Icarus warns about every ``$readmemh`` file that does not reach the end of the array.
    The function table (:func:`isa.functions.table`) is written as :data:`FN_TABLE_FILE`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FN_TABLE_FILE).write_text(_fn_table_text())
    shapes = {m["path"]: (m["width"], m["depth"]) for m in manifest_memories(program.config)}
    for path, words in memory_images(program).items():
        if not words:
            continue
        width, depth = shapes[path]
        digits = -(-width // 4)
        text = "".join(f"{w:0{digits}x}\n" for w in words)
        if len(words) < depth:
            text += f"@{depth - 1:x}\n{0:0{digits}x}\n"
        for prefix in prefixes:
            (directory / f"{prefix}{path}.hex").write_text(text)


@functools.cache
def _fn_table_text() -> str:
    return "".join(f"{int(w):08x}\n" for w in table())


def _convert(component: Any, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False)


def _check_instance_names(texts: dict[str, str], config: Config) -> None:
    """Check that every memory of the manifest is reached by instances of those names.

    Yosys renames an instance whose name collides with a wire (``\\tram$12``), which
    would silently move a memory image to a file nobody writes.
    """
    # The module each instance name (without digits) is placed in.
    owner = {"core": "tidal_top", "indesc": "tidal_top", "models": "tidal_top",
             "matrix": "tidal_core", "lane": "tidal_matrix", "wmem": "tidal_lane"}
    for mem in manifest_memories(config):
        for part in mem["path"].split("."):
            module = owner.get(part.rstrip("0123456789"), "tidal_core")
            if re.search(rf"^\s*(\) )?\S+ {re.escape(part)} \($|^\s*\) {re.escape(part)} \($",
                         texts[module], re.MULTILINE) is None:
                raise RuntimeError(f"instance {part!r} of {mem['path']} is missing or renamed "
                                   f"in {module}")


def generate(config: Config, out: str | Path, *, broken: str | None = None,
             write_trace: bool = False) -> dict[str, Any]:
    """Write the Verilog of ``config`` and its manifest into ``out``; return the manifest.

    Parameters
    ----------
    config : Config
    out : str or Path
        Output directory (created).
    broken : str, optional
        A member of :data:`BROKEN`: build that deliberately broken variant (test-only).
    write_trace : bool
        Give every core the write-trace instance (simulation only; see the module doc).

    Raises
    ------
    ValueError
        If ``broken`` is not a known variant.
    """
    if broken is not None and broken not in BROKEN:
        raise ValueError(f"--broken must be one of {', '.join(BROKEN)}, not {broken!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    flags = {"flavour": "instance"}
    modules = {
        "tidal_lane": Lane(config, **flags),
        "tidal_matrix": Matrix(config, **flags),
        "tidal_vlane": VectorLane(config, broken_rounding=broken == "rounding"),
        "tidal_flane": FunctionLane(config),
        "tidal_core": Core(config, **flags, broken_rounding=broken == "rounding",
                           write_trace=write_trace),
        "tidal_top": Top(config, **flags, broken_rounding=broken == "rounding"),
    }
    sources = []
    for name in _HAND_WRITTEN + (_WRITE_TRACE,) * write_trace:
        shutil.copyfile(VERILOG_DIR / name, out / name)
        sources.append(name)
    texts = {name: _convert(component, name) for name, component in modules.items()}
    _check_instance_names(texts, config)
    for name, text in texts.items():
        (out / f"{name}.v").write_text(text)
        sources.append(f"{name}.v")
    for name in _VLT:
        shutil.copyfile(VERILOG_DIR / name, out / name)
    manifest = {
        "top": "tidal_top",
        "sources": sources,
        "verilator_config": list(_VLT),
        "config": config.to_dict(),
        "broken": broken,
        "write_trace": write_trace,
        "memories": manifest_memories(config),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Run the command line (see the module docstring); return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m rtl.gen", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True,
                        help="preset name (ia_420f_c6b32, c2b8, ...) or a Config JSON file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--broken", choices=BROKEN,
                        help="test-only: build a deliberately broken variant")
    parser.add_argument("--write-trace", action="store_true",
                        help="simulation only: report every memory write (+TIDAL_WTRACE)")
    args = parser.parse_args(argv)
    try:
        path = Path(args.config)
        config = Config.load(path) if path.suffix == ".json" else Config.preset(args.config)
    except (ConfigError, OSError) as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    manifest = generate(config, args.out, broken=args.broken, write_trace=args.write_trace)
    print(f"rtl.gen: {config.name} -> {args.out} ({len(manifest['sources'])} sources, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
