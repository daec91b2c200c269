"""The build cache outside the clone (``sim/cosim/cache.py``) as the co-simulation uses it.

On c1b4, with the cache in a temporary ``TIDAL_CACHE_DIR``: a build from another checkout
directory (a copy of ``isa/``, ``rtl/`` and ``sim/``) is a cache hit on Icarus and on
Verilator; an edit of ``rtl/`` that changes the Verilog rebuilds the model, one that does
not only regenerates the Verilog; concurrent builders of one model build it once and all
get a working model; ``tidal cache`` shows and cleans it. A missing simulator fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BOTH_ENV

from isa import Config
from sim.cosim import build_rtl, compare
from sim.cosim import cache as _cache
from sim.cosim import toolchain as _toolchain
from sim.cosim.random_programs import random_program
from tidal_cli.main import main as tidal

pytestmark = [pytest.mark.cosim, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "c1b4"
#: Builds the model of argv[1] on argv[2] from the checkout in the working directory and
#: prints what happened as JSON (``repo``: where the Verilog generator was imported from).
BUILD = ("import json, pathlib, sys; import rtl, sim.cosim as c; from isa import Config; "
         "b = c.build_rtl(Config.preset(sys.argv[1]), sys.argv[2]); "
         "print(json.dumps({'cached': b.cached, 'generated': b.gen_seconds > 0, "
         "'sim_dir': str(b.sim_dir), "
         "'repo': str(pathlib.Path(rtl.__file__).resolve().parents[1])}))")


def checkout(tmp: Path) -> Path:
    """Return a second checkout of the packages a build needs, in ``tmp``."""
    clone = tmp / "clone"
    for package in ("isa", "rtl", "sim"):
        shutil.copytree(ROOT / package, clone / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return clone


def build_in(clone: Path, cache: Path, simulator: str) -> subprocess.Popen[str]:
    """Start a build of the c1b4 model from ``clone`` with the cache at ``cache``."""
    env = {**os.environ, _cache.CACHE_ENV: str(cache)}
    env.pop("PYTHONPATH", None)
    return subprocess.Popen([sys.executable, "-c", BUILD, CONFIG, simulator], cwd=clone,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    """Wait for a build started by :func:`build_in`; return its JSON line."""
    out, err = proc.communicate(timeout=800)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(_cache.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _cache.root() == tmp_path.resolve() / ".cache" / "tidal"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.root() == tmp_path.resolve() / "xdg" / "tidal"
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert _cache.root() == tmp_path.resolve() / "mine"


# The keys do not depend on the simulator but for its version: Icarus (whose builds take
# seconds) under make test, Verilator too under make cosim-both.
@pytest.mark.parametrize("simulator", _toolchain.SIMULATORS if os.environ.get(BOTH_ENV) == "1"
                         else ["icarus"])
def test_second_checkout_hits_and_verilog_change_misses(
        simulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _toolchain.require_simulator(simulator)
    cache = tmp_path / "cache"
    monkeypatch.setenv(_cache.CACHE_ENV, str(cache))
    first = build_rtl(Config.preset(CONFIG), simulator)
    assert not first.cached and first.fresh_build_seconds > 0
    assert first.sim_dir.is_relative_to(cache) and "fresh" in first.describe()

    clone = checkout(tmp_path)
    hit = result(build_in(clone, cache, simulator))
    assert hit["repo"] == str(clone)
    assert hit == {**hit, "cached": True, "generated": False, "sim_dir": str(first.sim_dir)}

    # An edit of rtl/ that leaves the Verilog unchanged regenerates it, and reuses the model.
    with open(clone / "rtl" / "gen.py", "a") as fh:
        fh.write("\n# an edit that does not change the Verilog\n")
    same = result(build_in(clone, cache, simulator))
    assert same["generated"] and same["cached"] and same["sim_dir"] == str(first.sim_dir)

    # A change of the Verilog is a miss: a new model, built.
    with open(clone / "rtl" / "verilog" / "tidal_mem.v", "a") as fh:
        fh.write("\n// a change of the Verilog\n")
    miss = result(build_in(clone, cache, simulator))
    assert miss["generated"] and not miss["cached"] and miss["sim_dir"] != str(first.sim_dir)

    # The original sources still hit their model.
    assert build_rtl(Config.preset(CONFIG), simulator).sim_dir == first.sim_dir


def test_concurrent_builders_of_one_model(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    _toolchain.require_simulator("icarus")
    cache = tmp_path / "cache"
    clone = checkout(tmp_path)
    procs = [build_in(clone if k % 2 else ROOT, cache, "icarus") for k in range(4)]
    results = [result(p) for p in procs]
    assert sorted(r["cached"] for r in results) == [False, True, True, True]
    assert len({r["sim_dir"] for r in results}) == 1
    # ... and the model they share works.
    monkeypatch.setenv(_cache.CACHE_ENV, str(cache))
    report = compare(random_program(Config.preset(CONFIG), 1), random=2, simulator="icarus")
    assert report.ok, report.summary()
    assert report.rtl is not None and report.rtl.build.cached
    assert "model cached" in report.summary()


def test_tidal_cache_show_and_clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _toolchain.require_simulator("icarus")
    cache = tmp_path / "cache"
    monkeypatch.setenv(_cache.CACHE_ENV, str(cache))
    build = build_rtl(Config.preset(CONFIG), "icarus")
    assert tidal(["cache"]) == 0
    shown = capsys.readouterr().out
    n = len(_cache.entries(cache))
    assert f"build cache {cache}" in shown and f"{n} entries" in shown and n >= 2
    assert f"{build.sim_dir.parent.name}/{build.sim_dir.name}" in shown
    assert tidal(["cache", "clean", "--older-than", "1"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out
    # A group with a build under way is left alone.
    with _cache.locked(build.sim_dir.parent):
        assert tidal(["cache", "clean"]) == 0
        assert f"kept {build.sim_dir.parent.name}" in capsys.readouterr().out
    assert build.sim_dir.exists()
    assert tidal(["cache", "clean"]) == 0
    assert f"removed {n} entries" in capsys.readouterr().out
    assert not build.sim_dir.exists() and _cache.entries(cache) == []
    assert tidal(["cache", "show", "--older-than", "1"]) == 2
    assert "--older-than goes with 'clean'" in capsys.readouterr().err
