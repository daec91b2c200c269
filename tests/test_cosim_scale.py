"""Co-simulation at scale: chunked comparisons and ``tidal regress`` on Dask.

A chunk starts the VM and the RTL from the VM's memories at its first step
(``sim/cosim/_chunks.py``), so a chunked comparison must give the unchunked one's result,
and a fault that only shows late must be reported at its global step. The regression SPEC
runs on a local Dask cluster of two workers; a job whose worker dies and jobs that overrun
their timeout are reported as such, the others' results kept, and the exit status is 1.
A model's build holds only its own lock, so chunks using a cached model of a configuration
never wait for another model of it being built; local workers do not re-run the caller's
script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import need
from test_cosim import hand_program, random_program

from isa.config import Config
from isa.numerics import f32_to_bf16_bits
from sim.cosim import build_rtl, compare, random_inputs
from sim.cosim import cache as _cache
from sim.cosim import toolchain as _toolchain
from sim.cosim._chunks import chunk_bounds
from sim.vm import VM
from tidal_cli import regress
from tidal_cli.main import main


def test_chunk_bounds() -> None:
    """Chunks cover every step once, in order, as equal as possible."""
    assert chunk_bounds(8, 3) == [(0, 3), (3, 3), (6, 2)]
    assert chunk_bounds(5, 5) == [(i, 1) for i in range(5)]
    assert chunk_bounds(4, 1) == [(0, 4)]
    for bad in (0, 9):
        with pytest.raises(ValueError, match="chunks must be between 1"):
            chunk_bounds(8, bad)


def test_vm_load_state_continues_a_run() -> None:
    """A VM loaded with another's state runs on exactly as that one does."""
    program = hand_program()
    xs = [f32_to_bf16_bits(np.arange(4, dtype=np.float32) + k)[None] for k in range(5)]
    whole = VM(program)
    outs = [whole.run_beats(x) for x in xs]
    first = VM(program)
    for x in xs[:3]:
        first.run_beats(x)
    second = VM(program)
    second.load_state(first.state())
    for x, want in zip(xs[3:], outs[3:], strict=True):
        np.testing.assert_array_equal(second.run_beats(x), want)
    assert all(np.array_equal(a, b) for k in ("tram", "acc")
               for a, b in zip(second.state()[k], whole.state()[k], strict=True))
    with pytest.raises(ValueError, match="state\\['acc'\\] must hold 1 arrays"):
        second.load_state({"tram": whole.state()["tram"], "acc": []})


def _same_run(a, b) -> None:  # noqa: ANN001 (two CompareReports)
    """Assert that two reports saw the same RTL behaviour and verdict."""
    assert a.ok == b.ok and a.inferences == b.inferences
    assert (a.vm_cycles, a.vm_done) == (b.vm_cycles, b.vm_done)
    assert (a.rtl_cycles, a.rtl_done) == (b.rtl_cycles, b.rtl_done)
    assert (a.output_values, a.output_mismatches) == (b.output_values, b.output_mismatches)
    assert (a.trace_records, a.write_records) == (b.trace_records, b.write_records)
    assert a.rtl is not None and b.rtl is not None
    assert all(np.array_equal(x, y) for x, y in zip(a.rtl.outputs, b.rtl.outputs, strict=True))
    assert a.rtl.output_cycles == b.rtl.output_cycles
    assert a.rtl.trace == b.rtl.trace and a.rtl.writes == b.rtl.writes
    for k in ("tram", "acc"):
        assert all(np.array_equal(x, y) for x, y in zip(a.rtl.state[k], b.rtl.state[k],
                                                         strict=True))


@pytest.mark.cosim
@pytest.mark.timeout(600)
def test_chunked_equals_unchunked_on_a_local_cluster() -> None:
    """A streaming CNN (state in tensor RAM across steps) in 3 chunks on a LocalCluster of 2
    workers, and a program accumulating across steps (state in the accumulators) in 2
    chunks in-process, give the unchunked comparison's result."""
    need("icarus")
    cnn = random_program("cnn", 2, Config.ip_core(1, 4))   # kernels 2, 2, 3
    beats = random_inputs(cnn, 6, seed=5)
    whole = compare(cnn, beats, simulator="icarus")
    chunked = compare(cnn, beats, simulator="icarus", chunks=3, workers=2)
    assert whole.ok, whole.summary()
    assert chunked.ok, chunked.summary()
    assert chunked.engine == "LocalCluster, 2 workers"
    assert [(c.first, c.count) for c in chunked.chunks] == [(0, 2), (2, 2), (4, 2)]
    assert all(c.worker.startswith("tcp://") for c in chunked.chunks)
    _same_run(whole, chunked)

    hand = hand_program()
    xs = [np.arange(4, dtype=np.float32) * (k + 1) for k in range(6)]
    whole = compare(hand, xs, simulator="icarus")
    chunked = compare(hand, xs, simulator="icarus", chunks=2, workers=1)
    assert whole.ok and chunked.ok, chunked.summary()
    assert chunked.engine == "in-process"
    _same_run(whole, chunked)
    # The accumulator each chunk started from was the VM's, not zero.
    np.testing.assert_array_equal(chunked.rtl.state["acc"][0][1],
                                  (2 * np.sum(xs, axis=0)).astype(np.float32).view(np.uint32))


@pytest.mark.cosim
@pytest.mark.timeout(600)
def test_late_fault_is_reported_at_its_global_step() -> None:
    """The broken RTL (truncating bf16 rounding) on the accumulating program: acc + 0.5 is
    exact in bf16 for the first six steps, and a tie that rounds up at step 6. Only the
    second of two chunks fails, and the report names step 6, as the unchunked one does."""
    need("icarus")
    program = hand_program()
    xs = [np.ones(4, np.float32)] * 6 + [np.full(4, 58.5, np.float32)] * 2
    whole = compare(program, xs, simulator="icarus", rtl_variant="rounding")
    chunked = compare(program, xs, simulator="icarus", rtl_variant="rounding", chunks=2,
                      workers=1)
    assert not whole.ok and not chunked.ok
    div = chunked.first_divergence
    assert div is not None and div == whole.first_divergence, chunked.summary()
    # acc = 12 + 2·58.5 = 129; 129.5 rounds to 130 but truncates to 129.
    assert (div.kind, div.inference, div.where) == ("output", 6, "output beat 1 lane 0")
    assert (div.vm, div.rtl) == ("0x4302", "0x4301")
    assert [c.ok for c in chunked.chunks] == [True, False]
    assert "chunk 1 (inferences 4..7" in chunked.summary()
    assert "first divergence: output at inference 6" in chunked.summary()


def test_a_build_holds_only_its_models_lock(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """While a model builds, its configuration's lock is free and the model's is held.

    A C6B32 build takes 10-25 minutes: under the configuration's lock, every chunk (and
    ``bench/run.py --scale-only``'s check that the model is cached) of a cached model of
    that configuration waited for it. ``tidal cache clean`` still leaves the group alone.
    """
    seen: dict[str, bool] = {}

    class Runner:
        def build(self, *, build_dir: Path, **_: object) -> None:
            with _cache.locked(build_dir.parent, wait=False) as free:
                seen["configuration lock free"] = free
            with _cache.locked(build_dir.parent, wait=False, name=build_dir.name) as free:
                seen["model lock free"] = free
            (build_dir / "sim.vvp").write_text("")

    monkeypatch.setattr(_toolchain, "make_runner", lambda *_, **__: Runner())
    build = build_rtl(Config.preset("c1b4"), "icarus", build_dir=tmp_path / "cosim")
    assert seen == {"configuration lock free": True, "model lock free": False}
    assert build.build_seconds > 0
    with _cache.locked(build.sim_dir.parent, name=build.sim_dir.name):
        assert _cache.clean(tmp_path) == ([], [build.sim_dir.parent.name])
    assert build_rtl(Config.preset("c1b4"), "icarus", build_dir=tmp_path / "cosim").cached
    removed, busy = _cache.clean(tmp_path)
    assert build.sim_dir in {e.path for e in removed} and busy == []


_SCRIPT = '''\
import os, sys
from sim.cosim.engine import open_engine
with open(sys.argv[1], "a") as log:
    print("script ran", file=log)
with open_engine(2) as engine:
    pids = {o.result for o in engine.run(os.getpid, [(), ()])}
print(len(pids) > 0 and os.getpid() not in pids)
'''


def test_local_workers_do_not_rerun_the_callers_script(tmp_path: Path) -> None:
    """A script without a ``__main__`` guard starts a local cluster once: its workers do
    not run it again (they would start clusters of their own, and fail)."""
    script, log = tmp_path / "script.py", tmp_path / "log.txt"
    script.write_text(_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(script), str(log)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr
    assert log.read_text() == "script ran\n"
    assert run.stdout.split() == ["True"], run.stdout


_MODELS = '''\
import torch
from torch import nn

import compiler.frontend as vollo_torch


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 5)), torch.randn(6)


def cnn():
    torch.manual_seed(1)
    return (nn.Sequential(vollo_torch.nn.PaddedConv1d(3, 6, 2), nn.ReLU()),
            torch.randn(1, 3, 5))
'''

_SPEC = '''\
configs = ["c1b4", "c2b8-ideal"]
simulators = ["verilator"]
seeds = [0]
steps = 3
timeout = 600

[[models]]
model = "models.py:mlp"

[[models]]
model = "models.py:cnn"
streaming_axis = 2
inputs = ["seq.npy"]

[[models]]
model = "models.py:mlp"
name = "slow"
timeout = 0.5
'''


@pytest.mark.cosim
@pytest.mark.timeout(900)
def test_regress_spec_on_a_local_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A SPEC of 8 jobs (3 models × 2 configurations × a seed, and an input file for one)
    on a LocalCluster of 2 workers: 5 pass; the one whose worker dies and the two that overrun
    their timeout are reported as such; the results are in JSON and Markdown; exit 1."""
    need("verilator")
    (tmp_path / "models.py").write_text(_MODELS)
    (tmp_path / "spec.toml").write_text(_SPEC)
    np.save(tmp_path / "seq.npy", np.random.default_rng(0).standard_normal((1, 3, 4)))
    jobs = regress.load_spec(tmp_path / "spec.toml")
    assert len(jobs) == 8
    dying = "mlp/c2b8-ideal/verilator/seed 0"
    monkeypatch.setenv(regress.DIE_ENV, dying)
    status = main(["-q", "regress", str(tmp_path / "spec.toml"), "--workers", "2",
                   "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert status == 1, err
    assert "3 of 8 jobs did not pass" in err
    rows = {r["job"]: r for r in json.loads((tmp_path / "out.json").read_text())["jobs"]}
    assert set(rows) == {j.name for j in jobs}
    want = {name: "pass" for name in rows}
    want[dying] = "died"
    want["slow/c1b4/verilator/seed 0"] = want["slow/c2b8-ideal/verilator/seed 0"] = "timeout"
    assert {n: r["status"] for n, r in rows.items()} == want, out
    for name, r in rows.items():
        if r["status"] == "pass":
            assert r["inferences"] == (4 if name.endswith("seq.npy") else 3)
            assert r["cycles"] > 0 and r["simulated_cycles"] >= 3 * r["cycles"]
            assert r["cycles_per_second"] > 0 and r["wall_seconds"] > 0
    table = (tmp_path / "out.md").read_text()
    assert table == out.split("results written")[0]
    assert f"| {dying} | DIED |" in table
    assert "| slow/c2b8-ideal/verilator/seed 0 | TIMEOUT |" in table
    assert "5 pass, 2 timeout, 1 died of 8 jobs" in table


@pytest.mark.parametrize("text, message", [
    ("configs = ['c1b4']\nseeds = [0]\n", "'models' must be one or more"),
    ("configs = ['c9b9']\nseeds = [0]\n[[models]]\nmodel = 'm.py:f'\n", "c9b9"),
    ("configs = ['c1b4']\n[[models]]\nmodel = 'm.py:f'\n", "has no inputs"),
    ("configs = ['c1b4']\nseeds = [0]\ncolour = 1\n[[models]]\nmodel = 'm.py:f'\n",
     "unknown key(s) colour"),
    ("configs = ['c1b4']\nseeds = [0]\nsimulators = ['vcs']\n[[models]]\nmodel = 'm.py:f'\n",
     "unknown simulator 'vcs'"),
    ("configs = ['c1b4']\nseeds = [0]\n[[models]]\nmodel = 'm.py:f'\ntimeout = -1\n",
     "models[0]: 'timeout' must be a positive"),
    ("configs = 'c1b4'", "'configs' must be a list of strs"),
    ("configs = [", "not a TOML file"),
])
def test_bad_spec_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    text: str, message: str) -> None:
    """A malformed SPEC ends the command with one line naming the file and the key."""
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    assert main(["regress", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(spec) in err and message in err, err


def test_compare_rejects_more_chunks_than_inferences(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--chunks`` above the number of inferences is a usage error, before any run."""
    program = hand_program()
    program.save(tmp_path / "p.bin")
    assert main(["compare", str(tmp_path / "p.bin"), "--random", "2", "--chunks", "3"]) == 2
    assert "--chunks 3 exceeds the 2 inference(s)" in capsys.readouterr().err
