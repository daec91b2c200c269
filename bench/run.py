"""The benchmark suite (``make bench``): compute cycles against the reference, and tool speed.

Usage: ``.venv/bin/python bench/run.py [--no-rtl] [--fresh-build] [--models SUBSTRING ...]``

For every model of the registry (``bench/models.py``: the shapes of the architecture
brief's §5 table and the seed CNN), compiled for the IA-420F C6B32: our spaced and
contiguous cycles, the reference compiler's published cycles and the ratio, the ideal
compute cycles and utilisation, and the compile time. Models the compiler cannot compile are
listed with their error. Then the speed of the tools: VM timesteps per second of both
executors on the seed CNN against PyTorch eager, and on the MLP 3×1024; RTL simulated
cycles per second on Icarus (small configuration) and on Verilator (C6B32), and whether the
models came from the build cache or were built fresh, with the build time (``--no-rtl``
skips the RTL; ``--fresh-build`` times fresh builds). Everything is measured in one run.

Writes ``bench/results/latest.json`` and the table between the markers of
``docs/benchmarks.md``. All cycle figures are compute only (no host I/O); µs assume the
design runs at the configuration's clock.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# bench/ is not an installed package: make `bench.models` importable when run as a script.
sys.path.insert(0, str(ROOT))

import compiler.frontend as vollo_torch  # noqa: E402
from bench.models import MODELS  # noqa: E402
from isa import Config  # noqa: E402
from isa.config import Depths  # noqa: E402
from tidal_cli.loader import one_line  # noqa: E402
from tidal_cli.progress import step  # noqa: E402
from tidal_cli.report import build_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "latest.json"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RESULTS_VERSION = 3

#: The configuration every reference figure is for.
CONFIG = "ia_420f_c6b32"
#: The small configuration Icarus simulates (Icarus is ~100× slower than Verilator).
ICARUS_CONFIG = "c2b8"
REFERENCE_SOURCE = ("reference compiler's published compute cycles, IA-420F C6B32 "
                    "(vollo-model-zoo, SDK 29.0.0)")
#: The cycle targets at the realistic depths (issue 9): every ratio to the reference below
#: 1, their geometric mean at most this, and at least this utilisation on this model.
GEOMEAN_TARGET = 0.6
UTILISATION_TARGET = (0.75, "Linear 1024->1024 + ReLU")
SEED = "seed CNN 32-128-1 k3"
#: Timesteps each VM executor runs for its speed figures (also PyTorch's: the numpy one's).
VM_TIMESTEPS = {"compiled": 20000, "numpy": 2000}
#: Inferences of the MLP speed figure, and the MLP.
VM_MLP_INFERENCES = 100
MLP = "MLP 3x(1024->1024 + ReLU)"
#: Each speed figure is the best of this many runs.
REPEATS = 3
#: The VM speed targets (issue 12): seed CNN timesteps/s per step; compiled / PyTorch eager
#: per step; compiled / numpy on the MLP.
VM_TARGETS = {"per_step": 50_000, "vs_torch": 4.0, "mlp_vs_numpy": 3.0}
#: Inferences each RTL simulator runs.
RTL_INFERENCES = {"icarus": 8, "verilator": 256}
#: Chunked co-simulation (issue 14): timesteps of the seed CNN on the C6B32 under
#: Verilator, compared unchunked and in chunks on a local Dask cluster of this many
#: workers; the speed-up target. One chunk per worker: every chunk pays a simulator launch,
#: its VM reference and a state read-back (seconds), which more chunks pay again.
SCALE_STEPS, SCALE_CHUNKS, SCALE_WORKERS, SCALE_TARGET = 2000, 2, 2, 1.7


def compile_entry(name: str, factory: Callable[[], Any], config: Config
                  ) -> tuple[dict[str, Any], Any]:
    """Compile one registry model; return its results entry and the program (or None).

    The entry's figures are at ``config``'s depths; ``ideal_depth_cycles`` is the same model
    compiled for ``config`` with :meth:`Depths.ideal` pipelines, for comparison.
    """
    model, example, axis, reference = factory()
    entry: dict[str, Any] = {"name": name, "streaming_axis": axis,
                             "reference_cycles": reference, "error": None}
    try:
        start = time.perf_counter()
        graph_module, _ = vollo_torch.fx.prepare_shape(model, example)
        nnir = vollo_torch.fx.nnir.to_nnir(graph_module)
        if axis is not None:
            nnir, _ = nnir.streaming_transform(axis)
        lowered = time.perf_counter()
        program = nnir.to_program(config, name=name)
        compiled = time.perf_counter()
        ideal = nnir.to_program(config.with_depths(Depths.ideal()), name=name)
    except ValueError as exc:  # unsupported op, unstreamable, AllocationError
        entry["error"] = f"{type(exc).__name__}: {one_line(exc)}"
        return entry, None
    entry["frontend_s"] = lowered - start
    entry["compile_s"] = compiled - lowered
    report = build_report(program, reference_cycles=reference, reference_name=name,
                          reference_source=REFERENCE_SOURCE)
    lat = report["latency"]
    entry.update({
        "cycles": lat["spaced_cycles"],
        "us": lat["spaced_us"],
        "contiguous_cycles": lat["contiguous_cycles"],
        "ideal_compute_cycles": lat["ideal_compute_cycles"],
        "utilisation": lat["utilisation"],
        "weight_tiles": lat["total_weight_tiles"],
        "ratio": report["reference"]["ratio"] if report["reference"] else None,
        "ideal_depth_cycles": ideal.cycle_count_per_inference(),
    })
    return entry, program


def _rates(runs: dict[str, tuple[Callable[[], Any], int]]) -> dict[str, float]:
    """Return, by name, ``steps`` / the seconds ``run()`` takes: the best of :data:`REPEATS`.

    The repeats of all the runs are interleaved, so that the figures compared with each
    other see the same load on a shared machine.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(REPEATS):
        for name, (run, _steps) in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: steps / best[name] for name, (_run, steps) in runs.items()}


def vm_speed(program: Any, model: Any, example: Any, mlp: Any | None) -> dict[str, Any]:
    """Return the VM's speed on the streaming ``program`` and its PyTorch ``model``.

    Timesteps per second of both executors (``docs/vm.md``), one ``run`` per timestep and one
    ``run_timesteps`` per sequence; of PyTorch eager on ``model``, one call per timestep on
    the window of inputs of ``example``'s length ending at the timestep; and, if ``mlp`` (a
    non-streaming program) is given, inferences per second of both executors on it. Each
    figure is the best of :data:`REPEATS` runs, interleaved (:func:`_rates`).
    """
    import torch

    from sim import _vm_fast

    axis, out_axis = program.meta["input_axis"], program.meta["output_axis"]
    vms = {ex: program.to_vm(executor=ex) for ex in ("compiled", "numpy")}
    result: dict[str, Any] = {"model": program.meta["name"], "config": program.config.name,
                              "kernel_load": _vm_fast.compile_info()}
    runs: dict[str, tuple[Callable[[], Any], int]] = {}
    for ex, vm in vms.items():
        n = VM_TIMESTEPS[ex]
        shape = list(program.inputs[0].shape)
        shape.insert(axis, n)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        steps = list(np.moveaxis(x, axis, 0))
        runs[f"{ex} step"] = (lambda vm=vm, steps=steps: [vm.run(s) for s in steps], n)
        runs[f"{ex} sequence"] = (lambda vm=vm, x=x: vm.run_timesteps(x, axis, out_axis), n)
    # PyTorch: the model on the window of the example's length (the seed CNN's receptive
    # field) ending at each timestep, without autograd: what a user without a streaming
    # runtime does to get one output timestep.
    n = VM_TIMESTEPS["numpy"]
    window = example.shape[axis]
    seq = torch.randn(*example.shape[:axis], n + window, *example.shape[axis + 1:])
    windows = [seq.narrow(axis, t, window) for t in range(n)]
    runs["torch"] = (lambda: [model(w) for w in windows], n)
    # One thread, like the VM: on a shared two-core machine torch's second thread only
    # contends (measured 100× slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            rates = _rates(runs)
    finally:
        torch.set_num_threads(threads)
    for ex in vms:
        result[ex] = {"timesteps": VM_TIMESTEPS[ex], "per_step": rates[f"{ex} step"],
                      "per_sequence": rates[f"{ex} sequence"]}
    result["interval_cycles"] = vms["compiled"].cycle_count(spaced=False)
    result["torch"] = {"timesteps": n, "threads": 1, "window": window,
                       "per_step": rates["torch"]}
    if mlp is not None:
        xs = np.random.default_rng(1).standard_normal(
            (VM_MLP_INFERENCES, *mlp.inputs[0].shape)).astype(np.float32)
        mlp_vms = {ex: mlp.to_vm(executor=ex) for ex in ("compiled", "numpy")}
        result["mlp"] = {"model": mlp.meta["name"], "inferences": len(xs), **_rates(
            {ex: (lambda vm=vm: [vm.run(x) for x in xs], len(xs)) for ex, vm in mlp_vms.items()})}
    c, t = result["compiled"], result["torch"]
    result["ratios"] = {
        "compiled_vs_numpy_per_step": c["per_step"] / result["numpy"]["per_step"],
        "compiled_per_step_vs_torch": c["per_step"] / t["per_step"],
        "compiled_per_sequence_vs_torch": c["per_sequence"] / t["per_step"],
        "mlp_compiled_vs_numpy": (result["mlp"]["compiled"] / result["mlp"]["numpy"]
                                  if mlp is not None else None),
    }
    return result


def rtl_speed(program: Any, simulator: str, build_dir: Path | None) -> dict[str, Any]:
    """Return the RTL simulation speed (and build time) of ``program`` on ``simulator``."""
    from sim import cosim

    inputs = cosim.random_inputs(program, RTL_INFERENCES[simulator])
    entry: dict[str, Any] = {"simulator": simulator, "model": program.meta["name"],
                             "config": program.config.name, "inferences": len(inputs)}
    try:
        build = cosim.build_rtl(program.config, simulator, build_dir=build_dir)
        entry["build_s"] = None if build.cached else build.gen_seconds + build.build_seconds
        entry["build_cached"] = build.cached
        entry["fresh_build_s"] = build.fresh_build_seconds
        result = cosim.run_rtl(program, inputs, simulator=simulator, build_dir=build_dir,
                               trace=False)
    except RuntimeError as exc:  # RtlError, or the simulator is not installed
        entry["error"] = str(exc).splitlines()[0]
        return entry
    entry.update({
        "simulated_cycles": result.simulated_cycles,
        "run_s": result.run_seconds,
        "cycles_per_s": result.cycles_per_second,
        "error": None,
    })
    return entry


def cosim_scale(program: Any, build_dir: Path | None, steps: int = SCALE_STEPS
                ) -> dict[str, Any]:
    """Return the chunked co-simulation figures: ``steps`` timesteps compared unchunked and
    in ``SCALE_CHUNKS`` chunks over ``SCALE_WORKERS`` local workers, side by side.

    Runs only if the Verilator model is already built (never builds it).
    """
    from sim import cosim

    entry: dict[str, Any] = {"model": program.meta["name"], "config": program.config.name,
                             "steps": steps, "chunks": SCALE_CHUNKS,
                             "workers": SCALE_WORKERS, "error": None}
    if not cosim.model_cached(program.config, "verilator", build_dir=build_dir):
        entry["error"] = "the Verilator model is not in the build cache (not built here)"
        return entry
    beats = cosim.random_inputs(program, steps)
    load = [os.getloadavg()[0]]
    cpu = [_cpu_seconds()]
    start = time.perf_counter()
    whole = cosim.compare(program, beats, "verilator", build_dir=build_dir)
    whole_s = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    cpu.append(_cpu_seconds())
    start = time.perf_counter()
    chunked = cosim.compare(program, beats, "verilator", build_dir=build_dir,
                            chunks=SCALE_CHUNKS, workers=SCALE_WORKERS)
    chunked_s = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    cpu.append(_cpu_seconds())
    if not (whole.ok and chunked.ok):
        bad = whole if not whole.ok else chunked
        first = bad.first_divergence
        entry["error"] = "mismatch: " + (first.describe() if first else bad.error or "?")
    speedup = whole_s / chunked_s
    entry.update({
        "cycles": sum(whole.rtl_cycles), "unchunked_s": whole_s, "chunked_s": chunked_s,
        "speedup": speedup, "efficiency": speedup / SCALE_WORKERS,
        "first_chunk_s": min(c.finished_after for c in chunked.chunks),
        "simulated_cycles": whole.rtl.simulated_cycles if whole.rtl else 0,
        "engine": chunked.engine,
        # The 1-minute load average before, between and after: other work on the machine.
        "load": load,
        # CPU seconds of this process and its children (simulators; the local workers
        # and theirs, which have ended): what each comparison costs whatever the load.
        "unchunked_cpu_s": cpu[1] - cpu[0], "chunked_cpu_s": cpu[2] - cpu[1],
    })
    return entry


def _cpu_seconds() -> float:
    """Return the user + system CPU seconds of this process and its ended children."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))


def scale_rows(s: dict[str, Any]) -> list[str]:
    """Return the table rows and the verdict line of :func:`cosim_scale`'s figures."""
    what = (f"chunked co-simulation, {s['steps']:,} steps: unchunked vs {s['chunks']} chunks "
            f"on {s['workers']} local Dask workers")
    if s.get("speedup") is None:
        return [f"| {what} | {s['model']} | {s['config']} | – | skipped: {s['error']} |"]
    verdict = "meets" if s["speedup"] >= SCALE_TARGET else "MISSES"
    note = (f"unchunked {s['unchunked_s']:.1f} s, chunked {s['chunked_s']:.1f} s "
            f"(efficiency {100 * s['efficiency']:.0f} %, {verdict} the {SCALE_TARGET}× "
            f"target), first chunk after {s['first_chunk_s']:.1f} s; "
            f"{s['simulated_cycles']:,} cycles")
    if s.get("chunked_cpu_s"):
        note += (f"; CPU {s['unchunked_cpu_s']:.0f} s unchunked, {s['chunked_cpu_s']:.0f} s "
                 "chunked")
    if s.get("load"):
        note += ("; 1-minute load average before, between, after: "
                 + ", ".join(f"{x:.1f}" for x in s["load"]))
    if s["error"]:
        note += f"; {s['error']}"
    return [f"| {what} | {s['model']} | {s['config']} | {s['speedup']:.2f}× | {note} |"]


# -- output -------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    """Return the Markdown tables of ``results`` (what goes between the markers)."""
    cfg = results["config"]
    depths = " ".join(f"{k}={v}" for k, v in cfg["depths"].items())
    lines = [f"Measured {results['date']} on `{results['host']}`, commit `{results['commit']}`; "
             f"configuration `{cfg['name']}` ({cfg['num_cores']} cores × B = "
             f"{cfg['block_size']}, {cfg['clock_mhz']:g} MHz). Cycle counts assume the "
             f"realistic pipeline depths ({depths}; `docs/timing.md`); the "
             "ideal-depths column is the same model on one-stage pipelines, which no FPGA "
             "runs at the clock. Compute only (no host I/O); µs assume the design runs at "
             "the clock. Reference: the reference compiler's published cycles for the same "
             "shape on the IA-420F C6B32. Ratio = ours / reference (below 1 is faster).", "",
             "| model | cycles | µs | contiguous | reference | ratio | ideal depths | "
             "ideal compute | utilisation | front end (s) | compile (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    failed = []
    for m in results["models"]:
        if m["error"]:
            failed.append(m)
            continue
        lines.append(f"| {m['name']} | {m['cycles']} | {m['us']:.3f} | "
                     f"{m['contiguous_cycles']} | {_fmt(m['reference_cycles'])} | "
                     f"{_fmt(m['ratio'], '.2f')} | {m['ideal_depth_cycles']} | "
                     f"{m['ideal_compute_cycles']} | "
                     f"{100 * m['utilisation']:.1f} % | {m['frontend_s']:.2f} | "
                     f"{m['compile_s']:.2f} |")
    lines += ["", cycle_summary(results["models"])]
    if failed:
        lines += ["", "Not compiled (listed, not dropped):", "",
                  "| model | reference | error |", "|---|---:|---|"]
        for m in failed:
            error = m["error"].replace("|", "\\|")
            if len(error) > 300:
                error = error[:297] + "..."
            lines.append(f"| {m['name']} | {_fmt(m['reference_cycles'])} | {error} |")
    lines += ["", "| tool | model | configuration | speed | notes |", "|---|---|---|---:|---|"]
    vm = results["vm"]
    if vm is not None:
        lines += _vm_rows(vm)
    for r in results["rtl"]:
        build = ""
        if "build_cached" in r:
            build = (f"cached model (its fresh build took {r['fresh_build_s']:.1f} s)"
                     if r["build_cached"] else f"fresh build {r['build_s']:.1f} s")
        if r.get("error"):
            lines.append(f"| RTL, {r['simulator']} | {r['model']} | {r['config']} | – | "
                         f"{build + '; ' if build else ''}failed: {r['error']} |")
            continue
        lines.append(f"| RTL, {r['simulator']} | {r['model']} | {r['config']} | "
                     f"{r['cycles_per_s']:,.0f} cycles/s | {r['simulated_cycles']:,} cycles, "
                     f"{r['inferences']} inferences; {build} |")
    if results.get("scale") is not None:
        lines += scale_rows(results["scale"])
    if not results["rtl"]:
        lines.append("| RTL | – | – | – | skipped (`--no-rtl`) |")
    if vm is not None:
        lines += ["", vm_summary(vm)]
    return "\n".join(lines) + "\n"


def cycle_summary(models: list[dict[str, Any]]) -> str:
    """Return the line that checks the cycle targets (every ratio below 1, their geometric
    mean, the utilisation of the 1024×1024 layer) on the compiled models."""
    ratios = {m["name"]: m["ratio"] for m in models if not m["error"] and m["ratio"]}
    if not ratios:
        return "Cycle targets: no model with a reference figure was compiled."
    worst = max(ratios, key=lambda name: ratios[name])
    geomean = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
    target_util, util_model = UTILISATION_TARGET
    util = next((m["utilisation"] for m in models
                 if m["name"] == util_model and not m["error"]), None)

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    text = (f"Cycle targets at the realistic depths: every ratio below 1 "
            f"({mark(ratios[worst] < 1)}; highest {ratios[worst]:.2f}, {worst}); geometric "
            f"mean of the {len(ratios)} ratios {geomean:.2f} (target ≤ {GEOMEAN_TARGET}: "
            f"{mark(geomean <= GEOMEAN_TARGET)})")
    if util is not None:
        text += (f"; utilisation of {util_model} {100 * util:.1f} % (target ≥ "
                 f"{100 * target_util:.0f} %: {mark(util >= target_util)})")
    return text + "."


def _vm_rows(vm: dict[str, Any]) -> list[str]:
    """Return the tool-table rows of the VM speed figures."""
    name, cfg = vm["model"], vm["config"]
    rows = []
    for ex in ("compiled", "numpy"):
        r = vm[ex]
        rows += [f"| VM {ex}, per timestep | {name} | {cfg} | {r['per_step']:,.0f} timesteps/s "
                 f"| `run` per timestep; {r['per_step'] * vm['interval_cycles']:,.0f} machine "
                 f"cycles/s |",
                 f"| VM {ex}, per sequence | {name} | {cfg} | {r['per_sequence']:,.0f} "
                 f"timesteps/s | `run_timesteps` over {r['timesteps']:,} timesteps |"]
    t = vm["torch"]
    rows.append(f"| PyTorch eager | {name} | – | {t['per_step']:,.0f} timesteps/s | one call "
                f"per timestep on a {t['window']}-timestep window, {t['threads']} thread(s) |")
    mlp = vm.get("mlp")
    if mlp is not None:
        for ex in ("compiled", "numpy"):
            rows.append(f"| VM {ex} | {mlp['model']} | {cfg} | {mlp[ex]:,.0f} inferences/s | "
                        "`run` per inference |")
    return rows


def vm_summary(vm: dict[str, Any]) -> str:
    """Return the VM speed ratios against their targets (:data:`VM_TARGETS`) as a sentence."""

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗ missed"

    r, per_step = vm["ratios"], vm["compiled"]["per_step"]
    load = vm["kernel_load"]
    vs_torch = r["compiled_per_step_vs_torch"]
    text = (f"VM speed: the compiled executor runs the seed CNN at {per_step:,.0f} timesteps/s "
            f"per `run` (target ≥ {VM_TARGETS['per_step']:,} "
            f"{mark(per_step >= VM_TARGETS['per_step'])}) and "
            f"{vm['compiled']['per_sequence']:,.0f} per `run_timesteps`: "
            f"**{vs_torch:.1f}× PyTorch eager** per timestep "
            f"({r['compiled_per_sequence_vs_torch']:.1f}× per sequence; target ≥ "
            f"{VM_TARGETS['vs_torch']:g}× {mark(vs_torch >= VM_TARGETS['vs_torch'])}), "
            f"{r['compiled_vs_numpy_per_step']:.1f}× the numpy executor")
    if r["mlp_compiled_vs_numpy"] is not None:
        ok = r["mlp_compiled_vs_numpy"] >= VM_TARGETS["mlp_vs_numpy"]
        text += (f"; on the MLP 3×1024, {r['mlp_compiled_vs_numpy']:.1f}× the numpy executor "
                 f"(target ≥ {VM_TARGETS['mlp_vs_numpy']:g}× {mark(ok)})")
    if load:
        how = "loaded from numba's disk cache" if load["from_disk_cache"] else "compiled"
        text += f". Kernel {how} in {load['seconds']:.2f} s"
    return text + "."


def update_docs(table: str, path: Path = DOCS) -> None:
    """Replace the text between the markers of ``path`` with ``table``."""
    text = path.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit(f"{path}: markers {BEGIN} ... {END} not found")
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, text=True,
                               capture_output=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 if a tool speed measurement failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-rtl", action="store_true", help="skip the RTL simulations")
    parser.add_argument("--fresh-build", action="store_true",
                        help="time fresh RTL builds in a temporary directory instead of "
                             "using the build cache (sim/cosim/cache.py)")
    parser.add_argument("--scale-only", action="store_true",
                        help="only the chunked co-simulation figures (results not written)")
    parser.add_argument("--scale-steps", type=int, default=SCALE_STEPS, metavar="N",
                        help=f"timesteps of --scale-only (default {SCALE_STEPS})")
    parser.add_argument("--models", nargs="+", metavar="SUBSTRING",
                        help="only the registry models whose name contains one of these "
                             "(the results are then not written)")
    args = parser.parse_args(argv)
    config = Config.preset(CONFIG)
    if args.scale_only:
        _, program = compile_entry(SEED, MODELS[SEED], config)
        with step(f"RTL: chunked co-simulation of {args.scale_steps} steps on "
                  f"{config.name}"):
            scale = cosim_scale(program, None, args.scale_steps)
        print("\n".join(["| what | model | configuration | speed-up | notes |",
                         "|---|---|---|---:|---|", *scale_rows(scale)]))
        print(json.dumps(scale, indent=1))
        return 1 if scale["error"] else 0
    chosen = {name: f for name, f in MODELS.items()
              if not args.models or any(s in name for s in args.models)}

    models, programs = [], {}
    for name, factory in chosen.items():
        with step(f"compiling {name}"):
            entry, program = compile_entry(name, factory, config)
        models.append(entry)
        if program is not None:
            programs[name] = program
        print(f"  {name}: " + (entry["error"] or f"{entry['cycles']} cycles (reference "
                                                 f"{_fmt(entry['reference_cycles'])})"))

    vm = None
    rtl: list[dict[str, Any]] = []
    scale: dict[str, Any] | None = None
    if SEED in programs:
        with step("VM: speed of both executors on the seed CNN, PyTorch eager, the MLP"):
            model, example, _, _ = MODELS[SEED]()
            vm = vm_speed(programs[SEED], model, example, programs.get(MLP))
        if not args.no_rtl:
            with tempfile.TemporaryDirectory(prefix="tidal-bench-") as tmp:
                build_dir = Path(tmp) if args.fresh_build else None
                _, small = compile_entry(SEED, MODELS[SEED], Config.preset(ICARUS_CONFIG))
                for simulator, program in (("icarus", small), ("verilator", programs[SEED])):
                    with step(f"RTL: {simulator} on {program.config.name}"):
                        rtl.append(rtl_speed(program, simulator, build_dir))
                with step(f"RTL: chunked co-simulation of {SCALE_STEPS} steps on "
                          f"{config.name}"):
                    scale = cosim_scale(programs[SEED], build_dir)

    results = {
        "results_version": RESULTS_VERSION,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "host": f"{platform.node()} ({platform.machine()}, {platform.python_version()})",
        "config": config.to_dict(),
        "compute_only": True,
        "reference_source": REFERENCE_SOURCE,
        "models": models,
        "vm": vm,
        "rtl": rtl,
        "scale": scale,
    }
    table = markdown(results)
    print()
    print(table)
    if args.models:
        print("(a subset of the models: results not written)")
    else:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        update_docs(table)
        print(f"wrote {RESULTS.relative_to(ROOT)} and {DOCS.relative_to(ROOT)}")
    return 1 if any(r.get("error") for r in rtl) or (scale or {}).get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
