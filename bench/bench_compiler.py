"""Compile every benchmark model and print its compute cycles against the reference.

Usage: ``.venv/bin/python bench/bench_compiler.py [--config ia_420f_c6b32] [--check]
[--no-split-reduction]``

Per model: spaced latency in cycles on the configuration (compute only, no host I/O; µs
assume the design runs at the configuration's clock), the reference compiler's published
cycles on the IA-420F C6B32, their ratio, the ideal compute cycles (Σ over layers of
⌈tiles / cores⌉), and the compile time. ``--check`` also runs each program on the VM and
reports its largest difference from the PyTorch model, relative to the largest output.
``--no-split-reduction`` compiles every output block on one core (``split_reduction=False``).
Models that fail are listed with their error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compiler as vollo_compiler  # noqa: E402
import compiler.frontend as vollo_torch  # noqa: E402
from bench.models import MODELS  # noqa: E402


def _max_error(program: vollo_compiler.Program, model_input: torch.Tensor,
               expected: torch.Tensor, axis: int | None, output_axis: int | None) -> float:
    """Return max |VM - PyTorch| / max |PyTorch| over the example input (every timestep)."""
    vm = program.to_vm()
    if axis is None:
        got = torch.from_numpy(np.asarray(vm.run(model_input.numpy())))
    else:
        steps = [torch.from_numpy(np.asarray(vm.run(x.numpy())))
                 for x in model_input.unbind(axis)]
        got = torch.stack(steps, axis=output_axis)
    return float((got - expected).abs().max() / expected.abs().max().clamp(min=1e-30))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit code (1 if a supported model failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ia_420f_c6b32", help="configuration preset")
    parser.add_argument("--check", action="store_true", help="also run on the VM and compare")
    parser.add_argument("--no-split-reduction", action="store_true",
                        help="never split an output block's reduction across cores")
    args = parser.parse_args(argv)
    config = vollo_compiler.Config.preset(args.config)
    print(f"configuration {config.name}: {config.num_cores} cores, B = {config.block_size}, "
          f"{config.clock_mhz:g} MHz (compute-only cycles; µs assume that clock)")
    head = (f"{'model':42} {'cycles':>6} {'µs':>6} {'ref':>5} {'ratio':>5} {'ideal':>5} "
            f"{'compile':>8}")
    if args.check:
        head += f" {'rel err':>8}"
    print(head)
    failed = []
    for name, factory in MODELS.items():
        model, model_input, axis, reference = factory()
        try:
            graph_module, expected = vollo_torch.fx.prepare_shape(model, model_input)
            nnir = vollo_torch.fx.nnir.to_nnir(graph_module)
            output_axis = None
            if axis is not None:
                nnir, output_axis = nnir.streaming_transform(axis)
            start = time.perf_counter()
            program = nnir.to_program(config, name=name,
                                      split_reduction=not args.no_split_reduction)
            seconds = time.perf_counter() - start
        except ValueError as exc:  # unsupported op, unstreamable, does not fit
            lines = [line.strip(" -") for line in str(exc).splitlines()]
            failed.append((name, f"{type(exc).__name__}: {' '.join(lines[:2])}"))
            continue
        cycles = program.cycle_count_per_inference()
        ideal = program.metrics()["ideal_compute_cycles"]
        ratio = f"{cycles / reference:5.2f}" if reference else "    -"
        line = (f"{name:42} {cycles:6d} {program.compute_duration_per_inference_us():6.3f} "
                f"{reference or '-':>5} {ratio} {ideal:5d} {seconds:7.2f}s")
        if args.check:
            line += f" {_max_error(program, model_input, expected, axis, output_axis):8.1e}"
        print(line)
    for name, error in failed:
        print(f"{name:42} not compiled: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
