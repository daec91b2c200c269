"""The seed example (``examples/seed_cnn.py``) runs unchanged but for its imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compiler import Program
from isa.config import Depths

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]


def test_seed_example_runs(tmp_path: Path) -> None:
    # In a scratch directory: the example saves cnn.vollo where it runs.
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_cnn.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    cycles, micros = result.stdout.split()
    program = Program.load(tmp_path / "cnn.vollo")
    # The latency target (<= 40 cycles) is the one-stage machine's: tests/test_compiler.py.
    assert int(cycles) == program.cycle_count_per_inference()
    assert program.config.depths == Depths.realistic()
    assert float(micros) == pytest.approx(int(cycles) / 320.0)
    assert program.meta["streaming"] and program.meta["output_axis"] == 2
