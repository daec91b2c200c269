"""The ``tidal`` command line: compile, run, sim, compare, regress, report, cache.

Every user mistake (a missing file, an unknown configuration, a model the compiler does not
support or that does not fit, a corrupted program, an input of the wrong shape) ends the
command with one ``tidal: error: ...`` line on stderr and exit status 2 (the command line
is wrong) or 1 (the command ran and failed); see ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

import isa
from isa.program import ModelEntry
from tidal_cli import __version__
from tidal_cli.loader import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliError,
    check_shape,
    insert_axis,
    load_array,
    load_factory,
    load_program,
    load_sequences,
    one_line,
)
from tidal_cli.progress import step

__all__ = ["main", "build_parser"]

DEFAULT_CONFIG = "ia_420f_c6b32"
SIMULATORS = ("verilator", "icarus")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``tidal: error:`` line, like every other."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _latency_line(config: isa.Config, spaced: int, contiguous: int) -> str:
    return (f"{spaced} cycles per inference = {spaced / config.clock_mhz:.4f} µs at "
            f"{config.clock_mhz:g} MHz (spaced; contiguous interval {contiguous} cycles); "
            "compute only, no host I/O")


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _check_output(path: str | Path | None, option: str) -> None:
    """Refuse, before any work, an output path that is a directory or in a missing one."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{option} {str(p)!r} is a directory; name the file to write",
                       EXIT_USAGE)
    if not p.parent.is_dir():
        raise CliError(f"{option} {str(p)!r}: directory '{p.parent}' does not exist",
                       EXIT_USAGE)


def _config(name: str) -> isa.Config:
    """Return a preset by name, or a configuration saved as JSON (``Config.save``)."""
    if name.endswith(".json"):
        if not Path(name).is_file():
            raise CliError(f"configuration file {name!r} does not exist", EXIT_USAGE)
        load: Callable[[str], isa.Config] = isa.Config.load
    else:
        load = isa.Config.preset
    try:
        return load(name)
    except isa.ConfigError as exc:
        raise CliError(one_line(exc), EXIT_USAGE) from None


def _show_output(array: np.ndarray, out: str | None) -> None:
    """Write the output to ``out`` (``.npy``), or print it when there is no ``out``."""
    if out is not None:
        np.save(out, np.asarray(array, dtype=np.float32))
        print(f"output {array.shape} written to {out}")
    else:
        print(f"output {array.shape}:")
        print(np.array2string(array, precision=5, threshold=64))


def _model(program: isa.Program, index: int) -> ModelEntry:
    """Return model ``index`` of the program (``--model``), or a one-line usage error."""
    try:
        return program.model(index)
    except ValueError:
        raise CliError(f"--model {index}: the program has {program.num_models} model(s), "
                       f"0..{program.num_models - 1}", EXIT_USAGE) from None


def _check_io(model: ModelEntry, command: str) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CliError(f"tidal {command} handles models with one input and one output; "
                       f"this one has {len(model.inputs)} and {len(model.outputs)} "
                       "(use the Python API: program.to_vm().run(*inputs))")


def _stream_axes(model: ModelEntry, option: str = "--timesteps") -> tuple[int, int]:
    """Return the recorded (input, output) time axes of a streaming model."""
    meta = model.meta
    if not meta.get("streaming") or meta.get("input_axis") is None:
        raise CliError(f"{option} needs a streaming program (compile with "
                       "--streaming-axis N); this one runs whole inputs", EXIT_USAGE)
    return int(meta["input_axis"]), int(meta["output_axis"])


def _no_timesteps(args: argparse.Namespace) -> None:
    if args.timesteps:
        raise CliError("--timesteps goes with --input: every array of --sequences is a whole "
                       "sequence already", EXIT_USAGE)


def _load_sequences(program: isa.Program, model: ModelEntry, path: str,
                    command: str) -> list[tuple[str, np.ndarray]]:
    """Load ``--sequences``: the archive's sequences, each checked like ``--input`` with
    ``--timesteps`` (the model's input shape with its time axis), none empty."""
    _check_io(model, command)
    axis, _ = _stream_axes(model, "--sequences")
    if program.reset is None:
        raise CliError("--sequences needs the program's reset entry, which this program "
                       "lacks (a hand-built program): compile it with tidal compile")
    shape = model.inputs[0].shape
    sequences = load_sequences(path)
    for name, x in sequences:
        what = f"{path!r}[{name!r}]"
        if x.ndim != len(shape) + 1:
            raise CliError(f"{what} has shape {x.shape}; each sequence must be the input "
                           f"shape {shape} with a time axis inserted at {axis}")
        check_shape(x, insert_axis(shape, axis, x.shape[axis]), what)
        if not x.shape[axis]:
            raise CliError(f"{what} has no timesteps (time axis {axis} is empty)")
    return sequences


def _load_input(model: ModelEntry, path: str, timesteps: bool, command: str) -> np.ndarray:
    """Load ``path`` and check it against the model's input shape.

    With ``timesteps`` the array holds a whole sequence, its time axis at the model's
    recorded input axis; otherwise it is one inference.
    """
    _check_io(model, command)
    shape = model.inputs[0].shape
    x = load_array(path)
    if timesteps:
        axis, _ = _stream_axes(model)
        if x.ndim != len(shape) + 1:
            raise CliError(f"{path!r} has shape {x.shape}; with --timesteps it must be the "
                           f"input shape {shape} with a time axis inserted at {axis}")
        check_shape(x, insert_axis(shape, axis, x.shape[axis]), repr(path))
        return x
    try:
        check_shape(x, shape, repr(path))
    except CliError as exc:
        if model.meta.get("streaming") and x.ndim == len(shape) + 1:
            raise CliError(f"{exc} (a whole sequence? add --timesteps)") from None
        raise
    return x


def _inferences(model: ModelEntry, x: np.ndarray, timesteps: bool) -> list[np.ndarray]:
    """Return the per-inference inputs: the timesteps of a sequence, or ``x`` alone."""
    if not timesteps:
        return [x]
    axis, _ = _stream_axes(model)
    return list(np.moveaxis(x, axis, 0))


def _rtl_outputs(model: ModelEntry, beats: Sequence[np.ndarray],
                 timesteps: bool) -> np.ndarray:
    """Return the RTL's output beats (one array per inference) as the model's output."""
    from isa.numerics import bf16_bits_to_f32

    layout = model.outputs[0]
    outs = [layout.from_blocks(bf16_bits_to_f32(b)) for b in beats]
    if not timesteps:
        return outs[0]
    return np.stack(outs, axis=_stream_axes(model)[1])


def _rtl_failure(exc: Exception) -> CliError:
    # RtlError and SimulatorMissing messages end with a log tail; the first line says what
    # happened and where the log is.
    return CliError(f"RTL simulation failed: {str(exc).splitlines()[0]}")


# -- commands ------------------------------------------------------------------------------


def compile_model(model_spec: str, config: isa.Config, streaming_axis: int | None,
                  name: str | None, exact_sums: bool = False) -> isa.Program:
    """Compile ``model_spec`` (``FILE.py:FUNCTION`` or ``FILE.onnx``) for ``config``;
    ``exact_sums`` keeps every sum one fp32 chain (``partial_sums=False``,
    ``docs/compiler.md``).

    Raises
    ------
    CliError
        Naming the model and what is wrong (missing file, unsupported, does not fit).
    """
    from compiler import AllocationError
    from compiler.frontend import fx
    from compiler.frontend import onnx as onnx_frontend

    onnx_file = Path(model_spec) if model_spec.lower().endswith(".onnx") else None
    if onnx_file is not None:
        if not onnx_file.is_file():
            raise CliError(f"ONNX file {model_spec!r} does not exist", EXIT_USAGE)
        name = name or onnx_file.stem
    else:
        model, example = load_factory(model_spec)
        name = name or model_spec.rpartition(":")[2]
        try:
            graph_module, _ = fx.prepare_shape(model, example)
        except ValueError as exc:
            raise CliError(f"{model_spec}: {one_line(exc)}") from None
    try:
        if onnx_file is not None:
            nnir = onnx_frontend.to_nnir(onnx_file)
        else:
            nnir = fx.nnir.to_nnir(graph_module)
    except onnx_frontend.ModelFileError as exc:
        raise CliError(one_line(exc)) from None
    except ValueError as exc:
        raise CliError(f"{model_spec}: unsupported model: {one_line(exc)}") from None
    if streaming_axis is not None:
        try:
            nnir, _ = nnir.streaming_transform(streaming_axis)
        except ValueError as exc:
            raise CliError(f"{model_spec}: cannot stream over axis "
                           f"{streaming_axis}: {one_line(exc)}") from None
    try:
        return nnir.to_program(config, name=name, partial_sums=not exact_sums)
    except AllocationError as exc:
        raise CliError(f"{model_spec} does not fit {config.name}: {one_line(exc)}") \
            from None
    except ValueError as exc:
        raise CliError(f"{model_spec}: cannot compile: {one_line(exc)}") from None


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile a PyTorch model factory or an ONNX file to a program file."""
    config = _config(args.config)
    _check_output(args.output, "-o")
    onnx_file = Path(args.model) if args.model.lower().endswith(".onnx") else None
    name = args.name or (onnx_file.stem if onnx_file is not None
                         else args.model.rpartition(":")[2])
    started = time.perf_counter()
    with step(f"compiling {name} for {config.name}", quiet=args.quiet):
        program = compile_model(args.model, config, args.streaming_axis, name,
                                args.exact_sums)
    program.save(args.output)
    print(f"compiled {name} for {config.name} in {time.perf_counter() - started:.2f} s "
          f"-> {args.output}")
    print(_latency_line(config, program.cycle_count_per_inference(),
                        program.cycle_count_per_inference(spaced=False)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a program on the VM."""
    from sim import ScheduleError, format_trace

    _check_output(args.output, "-o")
    _check_output(args.trace, "--trace")
    program = load_program(args.program)
    model = _model(program, args.model)
    if args.sequences is not None:
        _no_timesteps(args)
        sequences = _load_sequences(program, model, args.sequences, "run")
        if args.output is not None and not str(args.output).endswith(".npz"):
            raise CliError(f"-o {args.output!r}: with --sequences the outputs are one "
                           "sequence each, written as a .npz archive: name it OUT.npz",
                           EXIT_USAGE)
    else:
        x = _load_input(model, args.input, args.timesteps, "run")
    try:
        vm = program.to_vm(trace=args.trace is not None)
    except ScheduleError as exc:
        raise CliError(f"the VM refuses {args.program!r}: {one_line(exc)}") from None
    if args.sequences is not None:
        in_axis, out_axis = _stream_axes(model)
        steps = sum(x.shape[in_axis] for _, x in sequences)
        outputs = []
        with step(f"running {len(sequences)} sequences ({steps} timesteps) on the VM",
                  quiet=args.quiet or steps < 256):
            for i, (name, x) in enumerate(sequences):
                if i:
                    vm.reset()
                outputs.append((name, vm.run_timesteps(x, in_axis, out_axis,
                                                       model_index=args.model)))
        print(f"VM: {len(sequences)} sequence(s), {steps} timesteps, one inference each; a "
              f"reset between sequences ({vm.reset_cycle_count()} cycles each)")
    elif args.timesteps:
        in_axis, out_axis = _stream_axes(model)
        steps = x.shape[in_axis]
        # A progress line only when the run is long enough for a user to wonder.
        with step(f"running {steps} timesteps on the VM", quiet=args.quiet or steps < 256):
            y = vm.run_timesteps(x, in_axis, out_axis, model_index=args.model)
        print(f"VM: {steps} timesteps, one inference each")
    else:
        y = vm.run(x, model_index=args.model)
    if program.num_models > 1:
        print(f"VM: model {args.model} ({model.meta.get('name', '?')}) of "
              f"{program.num_models}")
    print("VM: " + _latency_line(program.config, vm.cycle_count(), vm.cycle_count(False)))
    if args.trace is not None:
        Path(args.trace).write_text(format_trace(vm.trace))
        print(f"trace of the last inference written to {args.trace}")
    if args.sequences is None:
        _show_output(y, args.output)
    elif args.output is not None:
        np.savez(args.output, **{name: np.asarray(y, np.float32) for name, y in outputs})
        print(f"outputs of {len(outputs)} sequence(s) written to {args.output} (named as "
              "the inputs)")
    else:
        for name, y in outputs:
            print(f"sequence {name}: ", end="")
            _show_output(y, None)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    """Run a program on the RTL (co-simulation)."""
    from sim import cosim

    _check_output(args.output, "-o")
    _check_output(args.waves, "--waves")
    program = load_program(args.program)
    model = _model(program, args.model)
    x = _load_input(model, args.input, args.timesteps, "sim")
    items = _inferences(model, x, args.timesteps)
    with step(f"simulating {len(items)} inference(s) on {args.simulator} (the first run of "
              f"a configuration builds its model)", quiet=args.quiet):
        try:
            result = cosim.run_rtl(program, items, simulator=args.simulator,
                                   waves=args.waves is not None,
                                   models=[args.model] * len(items))
        except RuntimeError as exc:  # cosim.RtlError, or the simulator is missing
            raise _rtl_failure(exc) from None
    build = result.build
    built = ("cached" if build.cached else
             f"built in {build.gen_seconds + build.build_seconds:.1f} s")
    print(f"RTL on {args.simulator}: {result.simulated_cycles:,} cycles simulated in "
          f"{result.run_seconds:.2f} s ({result.cycles_per_second:,.0f} cycles/s); "
          f"model {built}; run directory {result.run_dir}")
    print("RTL: " + _latency_line(program.config, max(result.cycles),
                                  max(result.done_cycles) + 1))
    if args.waves is not None and result.waves is not None:
        shutil.copyfile(result.waves, args.waves)
        print(f"waves written to {args.waves}")
    _show_output(_rtl_outputs(model, result.outputs, args.timesteps), args.output)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare the VM and the RTL on the same inputs."""
    from sim import ScheduleError, cosim

    program = load_program(args.program)
    model = _model(program, args.model)
    inputs = None
    resets: list[int] | None = None
    if args.input is not None:
        x = _load_input(model, args.input, args.timesteps, "compare")
        inputs = _inferences(model, x, args.timesteps)
    elif args.sequences is not None:
        _no_timesteps(args)
        sequences = _load_sequences(program, model, args.sequences, "compare")
        inputs, resets = [], []
        for _, x in sequences:
            if inputs:
                resets.append(len(inputs))  # a reset before each sequence but the first
            inputs += _inferences(model, x, True)
    elif args.timesteps:
        raise CliError("--timesteps goes with --input", EXIT_USAGE)
    runs = len(inputs) if inputs is not None else args.random
    count = runs + len(resets or [])
    if args.chunks > count:
        raise CliError(f"--chunks {args.chunks} exceeds the {count} inference(s) to compare"
                       + (" (a whole sequence? add --timesteps)"
                          if inputs is not None and not args.timesteps else ""), EXIT_USAGE)
    where = ""
    if args.chunks > 1 or args.workers is not None or args.scheduler is not None:
        where = (f" in {args.chunks} chunk(s) on "
                 + (args.scheduler or (f"{args.workers} worker(s)" if args.workers
                                       else "one worker per core")))
    with_resets = f" and {len(resets)} reset(s)" if resets else ""
    with step(f"comparing {runs} inference(s){with_resets} on the VM and on "
              f"{args.simulator}{where}", quiet=args.quiet):
        try:
            report = cosim.compare(program, inputs=inputs, random=args.random,
                                   simulator=args.simulator, models=[args.model] * runs,
                                   chunks=args.chunks, workers=args.workers,
                                   scheduler=args.scheduler, resets=resets)
        except ScheduleError as exc:
            raise CliError(f"the VM refuses {args.program!r}: {one_line(exc)}") from None
        except RuntimeError as exc:  # the simulator is missing, the scheduler unreachable
            raise _rtl_failure(exc) from None
    print(report.summary())
    if not report.ok:
        first = report.first_divergence
        where = first.describe() if first is not None else report.error or "nothing compared"
        raise CliError(f"the VM and the RTL differ: {where}")
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    """Run a regression SPEC on a Dask cluster (or in-process); write the results table."""
    from sim.cosim.engine import default_workers, open_engine
    from tidal_cli import regress
    from tidal_cli.progress import Bar

    jobs = regress.load_spec(args.spec)
    prefix = (Path(args.output) if args.output is not None
              else Path(args.spec).with_name(Path(args.spec).stem + "-results"))
    paths = [Path(f"{prefix}.json"), Path(f"{prefix}.md")]
    for path in paths:
        _check_output(path, "-o")
    workers = args.workers
    if workers is None and args.scheduler is None:
        workers = min(len(jobs), default_workers())
    started = time.perf_counter()
    rows: list[dict[str, object] | None] = [None] * len(jobs)
    try:
        with open_engine(workers, args.scheduler) as engine:
            bar = Bar(len(jobs), f"regress: {len(jobs)} jobs on {engine.description}",
                      quiet=args.quiet)
            for out in engine.run(regress.run_job, [(job,) for job in jobs]):
                job = jobs[out.index]
                if out.result is not None:
                    row = out.result
                elif out.died:
                    row = regress.result_row(job, "died", out.finished_after,
                                             "the worker running it died")
                else:
                    row = regress.result_row(job, "error", out.finished_after,
                                             out.error or "")
                row["worker"] = out.worker
                rows[out.index] = row
                bar.advance(f"{job.name}: {str(row['status']).upper()} "
                            f"({float(row['wall_seconds']):.1f} s)")
            description = engine.description
    except RuntimeError as exc:  # the scheduler is unreachable
        raise CliError(one_line(exc)) from None
    done = [r for r in rows if r is not None]
    title = f"tidal regress {args.spec}"
    paths[0].write_text(json.dumps({"spec": str(args.spec), "engine": description,
                                    "wall_seconds": time.perf_counter() - started,
                                    "jobs": done}, indent=1))
    table = regress.results_markdown(done, title)
    paths[1].write_text(table)
    print(table, end="")
    print(f"results written to {paths[0]} and {paths[1]}")
    bad = [r for r in done if r["status"] != "pass"]
    if bad:
        raise CliError(f"{len(bad)} of {len(done)} jobs did not pass: "
                       + ", ".join(f"{r['job']} ({r['status']})" for r in bad[:5])
                       + (" ..." if len(bad) > 5 else ""))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """Show or clean the build cache outside the clone (``sim/cosim/cache.py``)."""
    from sim.cosim import cache

    root = cache.root()
    if args.action == "clean":
        removed, busy = cache.clean(root, args.older_than)
        freed = sum(e.size for e in removed) / 1e6
        print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
              f"({freed:,.1f} MB) from {root}")
        if busy:
            print(f"kept {', '.join(busy)}: a build is running there")
        return 0
    if args.older_than is not None:
        raise CliError("option --older-than goes with 'clean', not 'show'", EXIT_USAGE)
    items = cache.entries(root)
    print(f"build cache {root} (set {cache.CACHE_ENV} to move it): {len(items)} "
          f"entr{'y' if len(items) == 1 else 'ies'}, "
          f"{sum(e.size for e in items) / 1e6:,.1f} MB")
    for e in items:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(f"  {e.size / 1e6:9,.1f} MB  {used}  {e.group}/{e.name}")
    return 0


#: The configuration the benchmark registry's reference cycles are for.
_REFERENCE_CONFIG = "ia_420f_c6b32"


def _registry_reference(program: isa.Program) -> tuple[int | None, str | None]:
    """Return the benchmark registry's reference cycles for this program, if it has some.

    A program matches when it was compiled for the reference's configuration under the
    name of a registry model (as ``make bench`` names them, or ``tidal compile --name``).
    """
    name = program.meta.get("name")
    registry = Path(__file__).resolve().parents[1] / "bench" / "models.py"
    # The registry imports torch (seconds); read it as text first to skip that when the
    # name is not there, which is the common case.
    if (program.config.name != _REFERENCE_CONFIG or not name or not registry.is_file()
            or f'"{name}"' not in registry.read_text()):
        return None, None
    spec = importlib.util.spec_from_file_location("_tidal_bench_models", registry)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = module.MODELS.get(name)
    return (factory()[3], "bench/models.py") if factory is not None else (None, None)


def cmd_report(args: argparse.Namespace) -> int:
    """Write the latency report of a program."""
    from tidal_cli import report as rep

    _check_output(args.output, "-o")
    _check_output(args.plot, "--plot")
    program = load_program(args.program)
    _model(program, args.model)
    reference, source = args.reference_cycles, None
    if reference is None and program.num_models == 1:
        reference, source = _registry_reference(program)
    data = rep.build_report(program, reference_cycles=reference, reference_source=source,
                            model_index=args.model)
    out = Path(args.output) if args.output else None
    plot = rep.plot_timeline(data, args.plot) if args.plot is not None else None
    if args.format == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "md":
        # The link is relative to the Markdown file, so that the pair can be moved together.
        base = out.parent if out is not None else Path.cwd()
        link = None if plot is None else \
            Path(os.path.relpath(plot.resolve(), base.resolve())).as_posix()
        text = rep.render_markdown(data, plot=link)
    elif args.format == "html":
        text = rep.render_html(data, plot=plot)
    else:
        text = rep.render_text(data)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"{args.format} report written to {out}")
    if plot is not None:
        # Off stdout when stdout is the report itself.
        print(f"timeline written to {plot}", file=sys.stdout if out else sys.stderr)
    return 0


# -- the parser ---------------------------------------------------------------------------

_EPILOG = """\
examples:
  tidal compile examples/models.py:seed_cnn --streaming-axis 2 -o seed_cnn.bin
  tidal run seed_cnn.bin --input x.npy --timesteps -o y.npy
  tidal run lstm.bin --sequences days.npz -o outputs.npz
  tidal sim seed_cnn.bin --input x0.npy --simulator verilator
  tidal compare seed_cnn.bin --random 16 --simulator verilator
  tidal report seed_cnn.bin --format md --plot timeline.png -o report.md
  tidal cache clean --older-than 30

Figures are compute only (no host I/O); µs assume the design runs at the configuration's
clock. Exit status: 0 success, 1 the command failed, 2 the command line is wrong.
See docs/cli.md."""


def build_parser() -> argparse.ArgumentParser:
    """Return the ``tidal`` argument parser."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="tidal", formatter_class=raw, epilog=_EPILOG,
                     description="tidal: compile PyTorch models for a streaming bf16 "
                                 "accelerator,\nrun them on the VM and the RTL, and report "
                                 "their latency.")
    parser.add_argument("--version", action="version", version=f"tidal {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the Python traceback (for bug reports)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, func: Callable[[argparse.Namespace], int], help_: str,
                epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                           formatter_class=raw)
        p.set_defaults(func=func)
        return p

    p = command("compile", cmd_compile, "compile a PyTorch or ONNX model to a program file",
                """\
MODEL is FILE.py:FUNCTION, a function taking no arguments that returns
(torch model, example input), or an ONNX file MODEL.onnx. The example input
(or the ONNX file's input shape) fixes every shape (for a streaming model,
including a sequence length).

examples:
  tidal compile examples/models.py:seed_cnn --streaming-axis 2 -o seed_cnn.bin
  tidal compile seed_cnn.onnx --streaming-axis 2 -o seed_cnn.bin
  tidal compile my_mlp.py:make --config c2b8 --name mlp -o mlp.bin""")
    p.add_argument("model", metavar="MODEL",
                   help="FILE.py:FUNCTION returning (model, input), or FILE.onnx")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="NAME",
                   help=f"a preset (default {DEFAULT_CONFIG}; also ia_840f_c3b64, c<N>b<B> "
                        "such as c2b8) or a JSON file written by Config.save")
    p.add_argument("--streaming-axis", type=int, metavar="N",
                   help="the input's time axis: compile one timestep per inference, keeping "
                        "state (conv windows) on chip")
    p.add_argument("--name", help="program name for reports (default: the function name, or "
                                  "the ONNX file's name without .onnx)")
    p.add_argument("--exact-sums", action="store_true",
                   help="keep every sum one fp32 chain: no partial sum rounded to bf16 "
                        "(more cycles at the realistic depths; docs/compiler.md)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PROG.bin",
                   help="the program file to write")

    p = command("run", cmd_run, "run a program on the VM (bit- and cycle-accurate)", """\
INPUT.npy is shaped like the model input without the streaming axis (one
inference); with --timesteps it is a whole sequence, its time axis where the
model had it (compile --streaming-axis). SEQS.npz holds several such
sequences (np.savez(path, seq0, seq1, ...), run in the archive's order); the
machine runs the program's reset entry between them, so each sequence starts
from the program's initial state; -o then writes OUT.npz, one output sequence
per input sequence, under the same names.

examples:
  tidal run seed_cnn.bin --input x_t0.npy
  tidal run seed_cnn.bin --input x.npy --timesteps -o y.npy
  tidal run lstm.bin --sequences days.npz -o outputs.npz""")
    p.add_argument("program", metavar="PROG.bin", help="a program file (tidal compile -o)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="INPUT.npy",
                        help="the input, a .npy array (see below)")
    source.add_argument("--sequences", metavar="SEQS.npz",
                        help="several sequences, a reset of the machine between them")
    p.add_argument("--timesteps", action="store_true",
                   help="INPUT holds a sequence; run one inference per timestep")
    p.add_argument("-o", "--output", metavar="OUT.npy",
                   help="write the output here (default: print it; OUT.npz with "
                        "--sequences)")
    p.add_argument("--trace", metavar="TRACE.txt",
                   help="write the VM's per-instruction trace here")
    p.add_argument("--model", type=int, default=0, metavar="K",
                   help="in a multi-model program, the model to run (default 0)")

    p = command("sim", cmd_sim, "run a program on the RTL (Icarus or Verilator via cocotb)",
                """\
Runs the inference(s) on the RTL of the program's configuration, generated
from rtl/ and simulated under cocotb. The first run on a configuration builds
the simulator model (Verilator on the C6B32: minutes; cached afterwards).

examples:
  tidal sim seed_cnn.bin --input x_t0.npy --simulator verilator
  tidal sim seed_cnn.bin --input x.npy --timesteps --simulator verilator -o y.npy
  tidal sim mlp.bin --input x.npy --simulator icarus --waves mlp.fst""")
    p.add_argument("program", metavar="PROG.bin", help="a program file (tidal compile -o)")
    p.add_argument("--input", required=True, metavar="INPUT.npy",
                   help="the input, a .npy array shaped as for tidal run")
    p.add_argument("--timesteps", action="store_true",
                   help="INPUT holds a sequence; run one inference per timestep, back to back")
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    p.add_argument("--waves", metavar="WAVES.fst", help="write an FST waveform here")
    p.add_argument("--model", type=int, default=0, metavar="K",
                   help="in a multi-model program, the model to run (default 0)")
    p.add_argument("-o", "--output", metavar="OUT.npy",
                   help="write the output here (default: print it)")

    p = command("compare", cmd_compare, "check that the VM and the RTL agree exactly", """\
Runs the same inferences on both and compares outputs, final memory state and
cycle counts bit for bit. Exit 0 when identical, 1 at the first divergence.

examples:
  tidal compare seed_cnn.bin --random 16 --simulator verilator
  tidal compare tiny_c1b4.bin --input x.npy --timesteps --simulator icarus
  tidal compare lstm.bin --sequences days.npz --simulator verilator
  tidal compare seed_cnn.bin --input seq.npy --timesteps --chunks 8 --workers 2
  tidal compare seed_cnn.bin --input seq.npy --timesteps --chunks 64 \\
      --scheduler tcp://10.0.0.5:8786

--chunks N cuts the inferences into N chunks, each simulated from the VM's
state at its first step, on a local Dask cluster (one worker per core, or
--workers W; --workers 1 runs them one after the other in this process) or on
the cluster of --scheduler (docs/cosim.md).

--sequences SEQS.npz compares several sequences (as for tidal run) with a
reset of the machine between them: the reset's writes, cycles and the state
after it are compared too.

Icarus is for small configurations (c1b4, c2b8); use Verilator for a full C6B32.""")
    p.add_argument("program", metavar="PROG.bin", help="a program file (tidal compile -o)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="INPUT.npy",
                        help="run this input (one inference, or a sequence with --timesteps)")
    source.add_argument("--sequences", metavar="SEQS.npz",
                        help="several sequences (as for tidal run), a reset between them")
    source.add_argument("--random", type=_positive_int, default=4, metavar="N",
                        help="run N inferences on random inputs (default 4)")
    p.add_argument("--timesteps", action="store_true",
                   help="INPUT holds a sequence; one inference per timestep")
    p.add_argument("--model", type=int, default=0, metavar="K",
                   help="in a multi-model program, the model to run (default 0)")
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    p.add_argument("--chunks", type=_positive_int, default=1, metavar="N",
                   help="cut the inferences into N chunks run at once (default 1)")
    p.add_argument("--workers", type=_positive_int, metavar="W",
                   help="local Dask workers (default: one per core); with --scheduler, "
                        "wait for W workers")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the chunks on this Dask scheduler's workers")

    p = command("regress", cmd_regress, "run a co-simulation regression on a Dask cluster",
                """\
SPEC is a TOML file: models x configurations x simulators x seeds or input
files, one comparison of the VM with the RTL per combination (docs/cli.md).
Jobs run on a local Dask cluster (one worker per core, or --workers W;
--workers 1 runs them in this process) or on the cluster of --scheduler.
Writes PREFIX.json and PREFIX.md (default: SPEC's name + "-results") and
prints the table. Exit 0 if every job passed, 1 if any failed, erred, timed
out or lost its worker.

examples:
  tidal regress nightly.toml
  tidal regress nightly.toml --workers 2 -o build/nightly
  tidal regress nightly.toml --scheduler tcp://10.0.0.5:8786""")
    p.add_argument("spec", metavar="SPEC.toml", help="the regression (docs/cli.md)")
    p.add_argument("--workers", type=_positive_int, metavar="W",
                   help="local Dask workers (default: one per core); with --scheduler, "
                        "wait for W workers")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the jobs on this Dask scheduler's workers")
    p.add_argument("-o", "--output", metavar="PREFIX",
                   help="write PREFIX.json and PREFIX.md")

    p = command("report", cmd_report, "latency report: cycles, utilisation, per layer/core",
                """\
Static figures of the program (the machine never stalls, so they are the VM's
and the RTL's cycle counts): latency spaced and contiguous, ideal compute
cycles and utilisation, per-layer and per-core breakdown, memory use, and the
reference compiler's cycles for the same model shape when known.

examples:
  tidal report seed_cnn.bin
  tidal report seed_cnn.bin --format md --plot timeline.png -o report.md
  tidal report seed_cnn.bin --format json -o report.json""")
    p.add_argument("program", metavar="PROG.bin", help="a program file (tidal compile -o)")
    p.add_argument("--format", choices=("text", "md", "json", "html"), default="text")
    p.add_argument("--plot", metavar="TIMELINE.png", help="draw the Gantt chart of the cores")
    p.add_argument("--reference-cycles", type=_positive_int, metavar="N",
                   help="the reference compiler's cycle count for this model shape")
    p.add_argument("--model", type=int, default=0, metavar="K",
                   help="in a multi-model program, the model to detail (default 0; every "
                        "model's latency is listed)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")

    p = command("cache", cmd_cache, "show or clean the build cache of Verilog and RTL models",
                """\
Generated Verilog and built simulator models are cached outside the clone,
in ~/.cache/tidal (or $TIDAL_CACHE_DIR), shared by every checkout on the
machine and keyed by everything that decides them (the Verilog, build flags,
tool versions): a fresh clone does not rebuild them.

examples:
  tidal cache                       # where it is, what it holds, last use
  tidal cache clean --older-than 30
  tidal cache clean""")
    p.add_argument("action", nargs="?", choices=("show", "clean"), default="show",
                   help="show (default) or clean")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="clean only entries unused for DAYS days")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tidal`` command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).
    """
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except SystemExit as exc:
        # --help and --version end argparse with SystemExit(0); return it as the status.
        return int(exc.code or 0)
    except CliError as exc:
        error: Exception = exc
        status = exc.status
    except (isa.ConfigError, isa.ProgramError, OSError) as exc:
        error, status = exc, EXIT_FAILURE
    except KeyboardInterrupt:
        print("tidal: interrupted", file=sys.stderr)
        return 130  # the shell's status for a process ended by SIGINT
    if args is not None and args.traceback:
        raise error
    print(f"tidal: error: {one_line(error)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
