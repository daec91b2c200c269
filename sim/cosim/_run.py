"""Running a program on the RTL: inputs, one simulator launch, what it observed.

:func:`run_rtl` builds (or finds) the model of the program's configuration
(:func:`sim.cosim.build_rtl`), writes a run directory (memory images, inputs, a JSON run
specification), launches the simulator on the cocotb testbench
(:mod:`sim.cosim._testbench`) and reads back what it recorded into an :class:`RtlResult`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isa.numerics import f32_to_bf16_bits
from isa.program import MODEL_SETUP, Program
from rtl.gen import write_memory_images
from sim.cosim import toolchain
from sim.cosim._build import BuildInfo, build_rtl, prune, tail
from sim.cosim._errors import RtlError
from sim.cosim._traces import parse_rtl_trace, read_write_trace
from sim.vm import TraceRecord, WriteRecord

__all__ = ["RtlResult", "run_rtl", "input_beats", "random_inputs", "watchdog_cycles",
           "insert_resets", "split_resets"]

#: Clock period of the simulation (any value works; the machine counts cycles).
PERIOD_NS = 10
#: Run directories kept per configuration (plus any younger than ten minutes).
KEEP_RUNS = 6
#: The cocotb test module (inside the simulator).
TB_MODULE = "sim.cosim._testbench"


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
    writes : list of list of WriteRecord
        Per inference, every tensor-RAM and accumulator write of every core in (cycle,
        core, memory) order, from the write trace (``rtl/verilog/tidal_wtrace.v``; empty
        lists if ``trace=False``); ``src_core`` and ``src_pc`` are -1 (the RTL does not
        know the writer).
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
    writes: list[list[WriteRecord]]
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


def input_beats(program: Program, item: Any, model_index: int = 0) -> np.ndarray:
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
    model_index : int
        The model the inference runs (its inputs are the layouts).

    Raises
    ------
    ValueError
        If the item fits neither form (the message gives the expected shapes), or there is
        no such model.
    """
    b = program.config.block_size
    model = program.model(model_index)
    n_in = len(model.input_dests)
    if isinstance(item, np.ndarray) and item.dtype == np.uint16:
        if item.shape != (n_in, b):
            raise ValueError(f"input beats have shape {item.shape}, expected ({n_in}, {b})")
        return item
    layouts = model.inputs
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


def random_inputs(program: Program, n: int, seed: int = 0,
                  models: Sequence[int] | None = None) -> list[np.ndarray]:
    """Return ``n`` inferences of random inputs as beats (normal values rounded to bf16).

    ``models`` gives each inference's model (default: all model 0). Padding lanes are zero,
    as the layout requires.
    """
    rng = np.random.default_rng(seed)
    models = model_indices(program, n, models)
    out = []
    for k in models:
        layouts = program.model(k).inputs
        values = [rng.standard_normal(layout.shape).astype(np.float32) for layout in layouts]
        out.append(input_beats(program, values if len(values) > 1 else values[0], k))
    return out


def model_indices(program: Program, n: int, models: Sequence[int] | None) -> list[int]:
    """Return the model of each of ``n`` inferences (checked), model 0 if ``models`` is None.

    Raises
    ------
    ValueError
        If ``models`` does not have ``n`` entries or names no model of the program.
    """
    if models is None:
        return [0] * n
    models = [program.check_model_index(k) for k in models]
    if len(models) != n:
        raise ValueError(f"{len(models)} model indices for {n} inferences")
    return models


def insert_resets(program: Program, inputs: Sequence[Any], models: Sequence[int] | None,
                  resets: Sequence[int] | None) -> tuple[list[np.ndarray], list[int]]:
    """Return the run list of ``inputs`` with a reset before each position of ``resets``:
    every run's input beats and its model table index.

    A reset is an inference of the program's reset entry (``docs/architecture.md`` §2): its
    index is ``program.reset_index`` and its beats the one dummy beat (zeros, written
    nowhere). ``resets`` are positions in ``inputs``: ``i`` resets the machine before
    inference ``i`` (``len(inputs)``: after the last), so a sequence of sequences ``s0, s1,
    ...`` is ``inputs = s0 + s1 + ...`` with ``resets = [len(s0), len(s0) + len(s1), ...]``.
    :func:`split_resets` is the inverse.

    Raises
    ------
    ValueError
        If an input does not fit its model, ``models`` does not fit ``inputs``, or with
        ``resets``: the program has no reset entry, or they are not increasing positions
        ``0..len(inputs)``.
    """
    n = len(inputs)
    models = model_indices(program, n, models)
    beats = [input_beats(program, item, k) for item, k in zip(inputs, models, strict=True)]
    if resets is None or len(resets) == 0:
        return beats, models
    if program.reset_index is None:
        raise ValueError("the program has no reset entry (a hand-built program; programs "
                         "compiled by tidal have one)")
    positions = list(resets)
    if (not all(isinstance(i, int | np.integer) and 0 <= i <= n for i in positions)
            or any(a >= b for a, b in zip(positions, positions[1:], strict=False))):
        raise ValueError(f"resets {positions!r} must be increasing positions 0..{n} (a reset "
                         "before inference i)")
    dummy = np.zeros((1, program.config.block_size), np.uint16)
    runs: list[np.ndarray] = []
    indices: list[int] = []
    for i in range(n + 1):
        if i in positions:
            runs.append(dummy)
            indices.append(program.reset_index)
        if i < n:
            runs.append(beats[i])
            indices.append(models[i])
    return runs, indices


def split_resets(program: Program, runs: Sequence[np.ndarray], indices: Sequence[int]
                 ) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Return ``(inputs, models, resets)`` of a run list (the inverse of
    :func:`insert_resets`)."""
    inputs: list[np.ndarray] = []
    models: list[int] = []
    resets: list[int] = []
    for beats, k in zip(runs, indices, strict=True):
        if k == program.reset_index:
            resets.append(len(inputs))
        else:
            inputs.append(beats)
            models.append(k)
    return inputs, models, resets


def watchdog_cycles(program: Program, base: int | None = None, model_index: int = 0) -> int:
    """Return the cycle limit per inference: ``base`` plus a small margin.

    ``base`` defaults to the static contiguous interval of model ``model_index`` (a model
    table index: the reset entry's too; done cycle + 1, the VM's count). The margin (16
    cycles + 1/16) absorbs nothing a correct RTL needs; it only lets a late ``done`` be
    reported as late rather than as missing.
    """
    if base is None:
        base = program.cycle_count_per_inference(spaced=False, model_index=model_index)
    return int(base) + 16 + int(base) // 16



def _hex_words(words: np.ndarray, dtype: str) -> str:
    """Return ``$readmemh`` text of ``words`` ([depth, B], lane 0 in the lowest bits)."""
    # Big-endian lanes, last lane first: each row's bytes spell the word's hex digits.
    rows = np.ascontiguousarray(words[:, ::-1]).astype(dtype)
    return "".join(row.tobytes().hex() + "\n" for row in rows)


def _write_state_images(build: BuildInfo, state: dict[str, list[np.ndarray]],
                        mem_dir: Path) -> None:
    """Overwrite the tensor-RAM images and write every accumulator copy's image from ``state``.

    The accumulator store is held in several ``tidal_mem`` copies written together (see
    ``rtl/core.py``); every instance of ``tidal_core.v`` whose name starts with ``acc`` is
    one, and each must start with the same words.

    Raises
    ------
    RtlError
        If the generated core has no ``tram`` or ``acc`` memory instance.
    ValueError
        If ``state`` does not fit the configuration.
    """
    cfg = build.config
    text = (build.rtl_dir / "tidal_core.v").read_text()
    names = re.findall(r"tidal_mem #\(.*?\) (\w+) \(", text, re.S)
    copies = {"tram": [n for n in names if n == "tram"],
              "acc": [n for n in names if n.startswith("acc")]}
    shapes = {"tram": (cfg.tensor_ram_depth, cfg.block_size),
              "acc": (cfg.accum_store_depth, cfg.block_size)}
    for kind, dtype in (("tram", ">u2"), ("acc", ">u4")):
        if kind not in copies[kind]:
            raise RtlError(f"{build.rtl_dir / 'tidal_core.v'} has no tidal_mem instance "
                           f"{kind!r}: the state of a chunk cannot be loaded")
        cores = state.get(kind)
        if cores is None or len(cores) != cfg.num_cores or any(
                np.shape(c) != shapes[kind] for c in cores):
            raise ValueError(f"state[{kind!r}] must hold {cfg.num_cores} arrays of shape "
                             f"{shapes[kind]}")
        for core, words in enumerate(cores):
            hex_text = _hex_words(np.asarray(words), dtype)
            for name in copies[kind]:
                for prefix in ("tidal_top.", "TOP.tidal_top."):
                    (mem_dir / f"{prefix}core{core}.{name}.hex").write_text(hex_text)


def _new_run_dir(cfg_dir: Path, simulator: str) -> Path:
    runs = cfg_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    # Runs younger than ten minutes may belong to a simulation still going on elsewhere.
    prune(runs, KEEP_RUNS - 1, min_age=600)
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
            rtl_variant: str | None = None, stall_output: bool = False,
            models: Sequence[int] | None = None,
            state: dict[str, list[np.ndarray]] | None = None, first_inference: int = 0,
            resets: Sequence[int] | None = None) -> RtlResult:
    """Run inferences of ``program`` on the RTL, back to back, in one simulator launch.

    State (tensor RAM, accumulators) persists from one inference to the next, as on the
    VM; the memories start from the program's images, or from ``state``. Between
    inferences of different models the host holds the new model index for
    ``MODEL_SETUP`` idle cycles first.

    Parameters
    ----------
    program : Program
    inputs : sequence
        One item per inference: beats (``uint16`` [n_in, B]) or model-shaped float arrays
        (see :func:`input_beats`).
    models : sequence of int, optional
        Each inference's model index, sent on the input port (default: all model 0).
    simulator : {"verilator", "icarus"}
    waves : bool, optional
        Record an FST waveform (``RtlResult.waves``); builds a separate model.
    build_dir : str or Path, optional
        Root of the build cache (see :func:`build_rtl`).
    trace : bool
        Record the instruction-issue trace (``+TIDAL_TRACE``) and the write trace
        (``+TIDAL_WTRACE``).
    timeout_cycles : int or sequence of int, optional
        Per inference, the cycle count the RTL must finish within, before the margin of
        :func:`watchdog_cycles` (default: the program's static contiguous interval).
    rtl_variant : str, optional
        A deliberately broken RTL (``rtl.gen --broken``), for testing the harness.
    stall_output : bool
        Test-only: the host holds ``out_ready`` low, which the machine (it cannot stall)
        must report as an ``error`` at its first output beat.
    state : dict, optional
        Start with these tensor RAMs and accumulator stores instead of the program's images
        and zeros (as :meth:`sim.vm.VM.state` gives them: the machine's whole state between
        two inferences). Chunked co-simulation starts each chunk from the VM's state.
    first_inference : int
        The number of the first inference in messages (a chunk's first global step).
    resets : sequence of int, optional
        Reset the machine before these inferences (:func:`insert_resets`): the host selects
        the reset entry and sends its dummy beat. The result's per-inference lists then
        hold the resets too, in run order (a reset has no output beats), and so does
        ``timeout_cycles`` if it is a sequence.

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
    beats, models = insert_resets(program, inputs, models, resets)
    n = len(beats)
    if timeout_cycles is None or isinstance(timeout_cycles, int | np.integer):
        limits = [watchdog_cycles(program, timeout_cycles, k) for k in models]
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
    write_memory_images(program, run_dir / "mem")
    if state is not None:
        _write_state_images(build, state, run_dir / "mem")
    b = program.config.block_size
    # Every inference's beats one after the other; "n_in" says how many each has.
    np.save(run_dir / "inputs.npy",
            np.concatenate(beats) if beats else np.zeros((0, b), np.uint16))
    readback = [m for m in manifest["memories"] if m["kind"] in ("tram", "acc")]
    spec = {"inputs": str(run_dir / "inputs.npy"), "block": b, "period_ns": PERIOD_NS,
            "n_in": [len(x) for x in beats], "models": models, "model_setup": MODEL_SETUP,
            "limits": limits, "readback": readback,
            "result": str(run_dir / "result.json"), "arrays": str(run_dir / "result.npz"),
            "stall_output": bool(stall_output), "first_inference": int(first_inference)}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    plusargs = [f"+TIDAL_MEMDIR={run_dir / 'mem'}"]
    trace_file = run_dir / "trace.txt"
    wtrace_dir = run_dir / "writes"
    if trace:
        wtrace_dir.mkdir()
        plusargs += [f"+TIDAL_TRACE={trace_file}", f"+TIDAL_WTRACE={wtrace_dir}"]
    wave_file = run_dir / "waves.fst"
    test_args: list[str] = []
    if waves and simulator == "icarus":
        plusargs.append(f"+dumpfile_path={wave_file}")
    elif waves:
        test_args = ["--trace-file", str(wave_file)]
    runner = toolchain.make_runner(simulator)
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
        raise RtlError(f"{simulator} run failed ({exc}); {log}:\n{tail(log)}") from None
    wall = time.perf_counter() - start
    result_file = run_dir / "result.json"
    if not result_file.exists():
        raise RtlError(f"the {simulator} simulation ended before the testbench wrote its "
                       f"result; {log}:\n{tail(log)}")
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
    writes: list[list[WriteRecord]] = []
    if trace:
        # Records past the last inference are the testbench's reset check (an inference
        # aborted by a reset, see the testbench), not part of the run.
        traces = traces[:len(outputs)] + [[] for _ in range(len(outputs) - len(traces))]
        writes = read_write_trace(wtrace_dir, program.config.block_size,
                                  len(outputs))[:len(outputs)]
    state = {"tram": [arrays[f"tram{c}"].astype(np.uint16)
                      for c in range(program.config.num_cores) if f"tram{c}" in arrays],
             "acc": [arrays[f"acc{c}"].astype(np.uint32)
                     for c in range(program.config.num_cores) if f"acc{c}" in arrays]}
    result = RtlResult(
        outputs=outputs, output_cycles=out_cycles,
        cycles=[max(c) + 1 if c else 0 for c in out_cycles],
        done_cycles=[int(d) for d in res["done_cycles"]], trace=traces, writes=writes,
        state=state,
        simulator=simulator, wall_seconds=wall, run_seconds=float(res["run_s"]),
        readback_seconds=float(res["wall_s"]) - float(res["run_s"]),
        simulated_cycles=int(res["sim_cycles"]), build=build, run_dir=run_dir,
        waves=wave_file if waves and wave_file.exists() else None)
    if res.get("error"):
        raise RtlError(f"{res['error']} [{simulator}, {program.config.name}; run directory "
                       f"{run_dir}]", result)
    return result

