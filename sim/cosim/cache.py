"""The build cache outside the clone: generated Verilog and built simulation models.

Every checkout on a machine shares one cache, so that a fresh clone (CI, ``make demo`` in a
new directory) reuses the Verilog and the simulator models an earlier one built. Its root
is ``$TIDAL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/tidal``, else ``~/.cache/tidal``.
:mod:`sim.cosim` keeps its builds under ``<root>/cosim/`` (the layout is documented there);
every entry is named by a hash of everything that decides its content, never by the
checkout's path, and is built under :func:`locked` so that concurrent builders of one entry
wait for each other instead of corrupting it (a builder of another entry of the same group
does not wait: a model's build holds its own lock, ``.lock-<model>``, and the group's only
briefly). ``tidal cache`` shows and cleans the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CACHE_ENV", "Entry", "root", "locked", "entries", "clean", "compiler_version"]

#: Environment variable overriding the cache's root directory.
CACHE_ENV = "TIDAL_CACHE_DIR"
#: The name of the lock file in a locked directory (others are ``.lock-<name>``).
LOCK = ".lock"


def root() -> Path:
    """Return the cache's root directory (not created): see the module docstring."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "tidal").resolve()


@contextlib.contextmanager
def locked(directory: Path, wait: bool = True, name: str | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``directory`` (created if missing) across processes.

    Parameters
    ----------
    directory : Path
    wait : bool
        Wait for the lock (True), or yield False at once if another process holds it.
    name : str, optional
        Lock one entry of ``directory`` instead (file ``.lock-<name>`` in it), e.g. a model
        being built, so that users of the group's other entries do not wait for it.

    Yields
    ------
    bool
        Whether the lock is held.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / (LOCK if name is None else f"{LOCK}-{name}"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One cached item: a generated Verilog, a simulation model, or a set of run directories.

    Attributes
    ----------
    group : str
        The directory grouping it (for co-simulation builds, ``<config>-<hash>``).
    name : str
        Its directory name (``rtl-<key>``, ``<simulator>[-waves]-<key>``, ``runs``, ...).
    path : Path
    size : int
        Bytes on disk.
    last_used : float
        Modification time of the directory (touched on every use), seconds since the epoch.
    """

    group: str
    name: str
    path: Path
    size: int
    last_used: float


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def entries(cache: Path | None = None) -> list[Entry]:
    """Return every entry of the cache, most recently used first (none if it is missing)."""
    base = (cache or root()) / "cosim"
    found = []
    for group in sorted(p for p in base.glob("*") if p.is_dir()):
        for item in sorted(p for p in group.glob("*") if p.is_dir()):
            found.append(Entry(group.name, item.name, item, _size(item), item.stat().st_mtime))
    return sorted(found, key=lambda e: e.last_used, reverse=True)


def clean(cache: Path | None = None, older_than_days: float | None = None
          ) -> tuple[list[Entry], list[str]]:
    """Delete cache entries; return those deleted and the groups skipped as busy.

    A group whose lock, or the lock of one of whose entries, another process holds (a
    build is running) is skipped. The group directories themselves stay (they hold the
    lock files).

    Parameters
    ----------
    cache : Path, optional
        The root (default :func:`root`).
    older_than_days : float, optional
        Only entries not used for this many days (default: every entry).
    """
    base = (cache or root()) / "cosim"
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    removed: list[Entry] = []
    busy: list[str] = []
    for group in sorted(p for p in base.glob("*") if p.is_dir()):
        with locked(group, wait=False) as held:
            if not held or any(_held(group, lock.name.removeprefix(f"{LOCK}-"))
                               for lock in group.glob(f"{LOCK}-*")):
                busy.append(group.name)
                continue
            for entry in entries(cache):
                if entry.group == group.name and (cutoff is None or entry.last_used < cutoff):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry)
    return removed, busy


def _held(group: Path, name: str) -> bool:
    """Return True if another process holds the lock of entry ``name`` of ``group``."""
    with locked(group, wait=False, name=name) as free:
        return not free


def compiler_version() -> str:
    """Return the first line of ``c++ --version`` (what builds Verilator models), or ""."""
    exe = shutil.which("c++") or shutil.which("g++")
    if exe is None:
        return ""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.splitlines()[0] if out else ""
