"""``tidal regress SPEC``: co-simulation regressions over models × configurations × simulators.

A SPEC is a TOML file (``docs/cli.md``)::

    configs = ["c1b4", "c2b8"]          # preset names, as `tidal compile --config`
    simulators = ["icarus", "verilator"]
    seeds = [0, 1]                      # random inputs from each seed ...
    steps = 4                           # ... this many inferences each
    timeout = 600                       # seconds per job

    [[models]]
    model = "examples/models.py:seed_cnn"   # as `tidal compile MODEL`
    streaming_axis = 2
    inputs = ["seq.npy"]                # optional input files
    timeout = 1200                      # optional: this model's jobs' timeout

An input file holds a sequence for a streaming model (its time axis at the streaming axis,
as ``tidal compare --input FILE --timesteps``), and one inference for any other model.

Every combination is one job: compile the model for the configuration, and compare the VM
with the RTL on the inputs (:func:`sim.cosim.compare`). Jobs run on the engine of
:mod:`sim.cosim.engine` (a local Dask cluster, a scheduler, or in-process); each runs in a
subprocess of its worker (``python -m tidal_cli.regress JOB.json RESULT.json``) that is
killed, with its simulator, when it overruns its timeout. A job that fails, errs, times out
or loses its worker is reported as such in the results table and the others are kept.

Relative paths in a SPEC are relative to the SPEC's directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidal_cli.loader import EXIT_USAGE, CliError, one_line

__all__ = ["Job", "load_spec", "run_job", "result_row", "results_markdown", "STATUSES",
           "DIE_ENV"]

#: A job's status: everything matched; a mismatch; the job could not run (a model that does
#: not compile, a missing simulator); it overran its timeout; its worker died.
STATUSES = ("pass", "fail", "error", "timeout", "died")
#: Test-only: a job of this name kills its worker (to test that a dead worker is reported).
DIE_ENV = "TIDAL_REGRESS_DIE"
_KEYS = {"configs", "simulators", "seeds", "steps", "timeout", "models"}
_MODEL_KEYS = {"model", "name", "streaming_axis", "inputs", "timeout"}
_SIMULATORS = ("verilator", "icarus")


@dataclasses.dataclass(frozen=True)
class Job:
    """One regression job (picklable: it travels to a worker).

    Attributes
    ----------
    name : str
        ``<model>/<config>/<simulator>/<seed N | input file name>``.
    model : str
        As ``tidal compile MODEL`` (absolute path).
    model_name : str
    streaming_axis : int or None
    config, simulator : str
    seed : int or None
        Random inputs from this seed (``steps`` inferences), or None with ``input``.
    input : str or None
        A sequence file (absolute path; one inference per timestep).
    steps : int
    timeout : float
        Seconds.
    """

    name: str
    model: str
    model_name: str
    streaming_axis: int | None
    config: str
    simulator: str
    seed: int | None
    input: str | None
    steps: int
    timeout: float


def _fail(spec: Path, message: str) -> CliError:
    return CliError(f"{spec}: {message}", EXIT_USAGE)


def _list(spec: Path, table: dict[str, Any], key: str, kind: type, default: Any = None
          ) -> list[Any]:
    value = table.get(key, default)
    if value is None:
        raise _fail(spec, f"'{key}' is missing")
    if not isinstance(value, list) or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise _fail(spec, f"'{key}' must be a list of {kind.__name__}s, not {value!r}")
    return value


def _path(spec: Path, text: str) -> str:
    """Resolve ``text`` (a file, optionally ``:FUNCTION``) against the SPEC's directory."""
    path, sep, func = text.rpartition(":") if ":" in text else (text, "", "")
    return str((spec.parent / path).resolve()) + sep + func


def _timeout(spec: Path, table: dict[str, Any], where: str, default: float) -> float:
    value = table.get("timeout", default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise _fail(spec, f"{where}'timeout' must be a positive number of seconds, not "
                          f"{value!r}")
    return float(value)


def load_spec(path: str | Path) -> list[Job]:
    """Read a SPEC (module doc) and return its jobs.

    Raises
    ------
    CliError
        If the file is missing, not TOML, has an unknown or ill-typed key, an unknown
        configuration or simulator, a model with no inputs, or no job at all; the message
        names the file and the key.
    """
    from tidal_cli.main import _config

    spec = Path(path)
    if not spec.is_file():
        raise CliError(f"regression SPEC {str(spec)!r} "
                       + ("is not a file" if spec.exists() else "does not exist"), EXIT_USAGE)
    try:
        table = tomllib.loads(spec.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(spec, f"not a TOML file: {exc}") from None
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise _fail(spec, f"unknown key(s) {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(_KEYS))})")
    configs = _list(spec, table, "configs", str)
    for name in configs:
        try:
            _config(name)
        except CliError as exc:
            raise _fail(spec, f"configuration {name!r}: {exc}") from None
    simulators = _list(spec, table, "simulators", str, ["verilator"])
    for name in simulators:
        if name not in _SIMULATORS:
            raise _fail(spec, f"unknown simulator {name!r} (known: {', '.join(_SIMULATORS)})")
    seeds = _list(spec, table, "seeds", int, [])
    steps = table.get("steps", 8)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise _fail(spec, f"'steps' must be a positive integer, not {steps!r}")
    timeout = _timeout(spec, table, "", 600)
    models = table.get("models")
    if not isinstance(models, list) or not models or not all(
            isinstance(m, dict) for m in models):
        raise _fail(spec, "'models' must be one or more [[models]] tables")
    jobs = []
    for i, m in enumerate(models):
        unknown = sorted(set(m) - _MODEL_KEYS)
        if unknown:
            raise _fail(spec, f"models[{i}]: unknown key(s) {', '.join(unknown)} (known: "
                              f"{', '.join(sorted(_MODEL_KEYS))})")
        if not isinstance(m.get("model"), str):
            raise _fail(spec, f"models[{i}]: 'model' (FILE.py:FUNCTION or FILE.onnx) is "
                              "missing")
        axis = m.get("streaming_axis")
        if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
            raise _fail(spec, f"models[{i}]: 'streaming_axis' must be an integer")
        inputs = _list(spec, m, "inputs", str, [])
        for file in inputs:
            if not (spec.parent / file).is_file():
                raise _fail(spec, f"models[{i}]: input file {file!r} does not exist")
        if not inputs and not seeds:
            raise _fail(spec, f"models[{i}] has no inputs: give 'seeds' or its 'inputs'")
        model_timeout = _timeout(spec, m, f"models[{i}]: ", timeout)
        model_name = m.get("name") or m["model"].rpartition(":")[2] or Path(m["model"]).stem
        sources = [(s, None) for s in seeds] + [(None, f) for f in inputs]
        for config in configs:
            for simulator in simulators:
                for seed, file in sources:
                    what = f"seed {seed}" if file is None else Path(file).name
                    jobs.append(Job(
                        f"{model_name}/{config}/{simulator}/{what}", _path(spec, m["model"]),
                        model_name, axis, config, simulator, seed,
                        None if file is None else str((spec.parent / file).resolve()),
                        int(steps), model_timeout))
    names = [j.name for j in jobs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise _fail(spec, f"two jobs are named {duplicate!r}: give the models distinct "
                          "'name's")
    return jobs


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` in a subprocess with its timeout (on a worker); return its result row.

    The row: ``job``, ``status`` (one of :data:`STATUSES`), ``inferences``, ``cycles``
    (spaced latency of one inference), ``simulated_cycles``, ``cycles_per_second``,
    ``wall_seconds`` and ``message``.
    """
    if os.environ.get(DIE_ENV) == job.name:
        os._exit(1)  # test-only: this worker dies
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tidal-regress-") as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(dataclasses.asdict(job)))
        # Its own session: on a timeout the whole group (the simulator too) is killed.
        proc = subprocess.Popen([sys.executable, "-m", "tidal_cli.regress", str(job_file),
                                 str(result_file)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return result_row(job, "timeout", time.perf_counter() - start,
                        message=f"killed after the timeout of {job.timeout:g} s")
        if result_file.exists():
            row = json.loads(result_file.read_text())
            row["wall_seconds"] = time.perf_counter() - start
            return row
        last = output.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return result_row(job, "error", time.perf_counter() - start,
                    message=f"the job process ended without a result: {last[0]}")


def result_row(job: Job, status: str, wall: float, message: str = "", inferences: int = 0,
         cycles: int = 0, simulated: int = 0, rate: float = 0.0) -> dict[str, Any]:
    """Return a result row (:func:`run_job`) of ``job``."""
    return {"job": job.name, "model": job.model_name, "config": job.config,
            "simulator": job.simulator, "status": status, "inferences": inferences,
            "cycles": cycles, "simulated_cycles": simulated, "cycles_per_second": rate,
            "wall_seconds": wall, "message": message}


def _execute(job: Job) -> dict[str, Any]:
    """Compile and compare ``job`` in this process; return its row (no timeout here)."""
    from sim import ScheduleError, cosim
    from tidal_cli.main import _config, _inferences, _load_input, compile_model

    start = time.perf_counter()
    try:
        program = compile_model(job.model, _config(job.config), job.streaming_axis,
                                job.model_name)
        # A streaming model's file is a sequence; any other model's, one inference.
        timesteps = job.streaming_axis is not None
        inputs = (None if job.input is None else _inferences(
            program, _load_input(program, job.input, timesteps, "regress"), timesteps))
        report = cosim.compare(program, inputs=inputs, random=job.steps,
                               seed=job.seed or 0, simulator=job.simulator)
    except (CliError, ScheduleError, RuntimeError, ValueError) as exc:
        return result_row(job, "error", time.perf_counter() - start, message=one_line(exc))
    rtl = report.rtl
    first = report.first_divergence
    message = "" if report.ok else (first.describe() if first is not None
                                    else report.error or "nothing compared")
    return result_row(job, "pass" if report.ok else "fail", time.perf_counter() - start,
                message=message, inferences=report.inferences,
                cycles=report.vm_cycles[0] if report.vm_cycles else 0,
                simulated=rtl.simulated_cycles if rtl else 0,
                rate=rtl.cycles_per_second if rtl else 0.0)


def results_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Return the results table as Markdown (one row per job, then the totals)."""
    lines = [f"# {title}", "",
             "| job | result | inferences | cycles / inference | simulated cycles | "
             "cycles/s | wall s | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        note = r["message"].replace("|", "\\|")
        lines.append(f"| {r['job']} | {r['status'].upper()} | {r['inferences']} | "
                     f"{r['cycles']} | {r['simulated_cycles']:,} | "
                     f"{r['cycles_per_second']:,.0f} | {r['wall_seconds']:.1f} | {note} |")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(rows)} "
              "jobs"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """Run one job in this process: ``python -m tidal_cli.regress JOB.json RESULT.json``."""
    job_file, result_file = argv
    job = Job(**json.loads(Path(job_file).read_text()))
    Path(result_file).write_text(json.dumps(_execute(job)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
