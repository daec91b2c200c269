"""``tidal run`` and ``tidal compare`` over several sequences, with a reset between them,
and the reset's cycles in ``tidal report``.

A streaming conv (its window is state in tensor RAM) compiled for ``c2b8``: each sequence
of an ``.npz`` must give exactly what a freshly loaded VM gives for it alone, and every
wrong ``--sequences`` input is one clear error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import need
from test_cli import MODELS, assert_one_line_error, tidal

from compiler import Program
from tidal_cli.main import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conv.bin (streaming over axis 2) and mlp.bin, compiled for c2b8, and days.npz: two
    sequences of different lengths."""
    path = tmp_path_factory.mktemp("cli_sequences")
    (path / "models.py").write_text(MODELS)
    for name, extra in (("mlp", []), ("conv", ["--streaming-axis", "2"])):
        assert main(["-q", "compile", f"{path / 'models.py'}:{name}", "--config", "c2b8",
                     *extra, "-o", str(path / f"{name}.bin")]) == 0
    rng = np.random.default_rng(3)
    np.savez(path / "days.npz", monday=rng.standard_normal((1, 8, 5)).astype(np.float32),
             tuesday=rng.standard_normal((1, 8, 3)).astype(np.float32))
    return path


def test_run_sequences_resets_between_them(work: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = tidal("run", work / "conv.bin", "--sequences", work / "days.npz",
                             "-o", work / "out.npz", capsys=capsys)
    assert status == 0, err
    program = Program.load(work / "conv.bin")
    assert "2 sequence(s), 8 timesteps" in out
    assert f"({program.reset_cycles()} cycles each)" in out
    days, got = np.load(work / "days.npz"), np.load(work / "out.npz")
    assert got.files == ["monday", "tuesday"]  # the archive's order, the inputs' names
    for name in days.files:
        # Each sequence from the program's initial state: a fresh VM's outputs, bit for bit
        # (tuesday's first steps would differ if monday's window were still there).
        want = program.to_vm().run_timesteps(days[name], 2, 2)
        np.testing.assert_array_equal(got[name], want)
    # Which a run without the reset would not give: the window holds monday's last steps.
    vm = program.to_vm()
    vm.run_timesteps(days["monday"], 2, 2)
    assert not np.array_equal(vm.run_timesteps(days["tuesday"], 2, 2), got["tuesday"])
    # Without -o every sequence's output is printed under its name.
    status, out, err = tidal("run", work / "conv.bin", "--sequences", work / "days.npz",
                             capsys=capsys)
    assert status == 0, err
    assert "sequence monday: output (1, 8, 5):" in out
    assert "sequence tuesday: output (1, 8, 3):" in out


def test_sequences_errors_are_one_line(work: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    conv, days = work / "conv.bin", work / "days.npz"

    def error(args: list, status: int, *words: str) -> None:
        code, _, err = tidal(*args, capsys=capsys)
        assert_one_line_error(code, err, status, *words)

    np.save(tmp_path / "x.npy", np.zeros((1, 8, 5), np.float32))
    error(["run", conv, "--sequences", tmp_path / "x.npy"], 1, "is not a .npz archive")
    np.savez(tmp_path / "empty.npz")
    error(["run", conv, "--sequences", tmp_path / "empty.npz"], 1, "holds no arrays")
    np.savez(tmp_path / "shape.npz", a=np.zeros((1, 8, 4), np.float32),
             b=np.zeros((1, 7, 4), np.float32))
    error(["compare", conv, "--sequences", tmp_path / "shape.npz"], 1, "['b']",
          "shape (1, 7, 4)", "expects (1, 8, 4)")
    np.savez(tmp_path / "axes.npz", np.zeros((8, 4), np.float32))
    error(["run", conv, "--sequences", tmp_path / "axes.npz"], 1, "['arr_0']",
          "time axis inserted at 2")
    np.savez(tmp_path / "ints.npz", a=np.zeros((1, 8, 4), np.int32))
    error(["run", conv, "--sequences", tmp_path / "ints.npz"], 1, "sequence 'a'", "int32")
    np.savez(tmp_path / "none.npz", a=np.zeros((1, 8, 4), np.float32),
             b=np.zeros((1, 8, 0), np.float32))
    error(["run", conv, "--sequences", tmp_path / "none.npz"], 1, "['b']", "no timesteps")
    error(["run", conv, "--sequences", tmp_path / "missing.npz"], 2, "does not exist")
    error(["run", work / "mlp.bin", "--sequences", days], 2, "--sequences needs a streaming")
    error(["run", conv, "--sequences", days, "-o", tmp_path / "y.npy"], 2, "OUT.npz")
    error(["run", conv, "--sequences", days, "--timesteps"], 2, "--timesteps goes with --input")
    error(["compare", conv, "--sequences", days, "--timesteps"], 2,
          "--timesteps goes with --input")
    error(["run", conv, "--sequences", days, "--input", tmp_path / "x.npy"], 2,
          "not allowed with argument")


def test_report_shows_the_reset(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    program = Program.load(work / "conv.bin")
    status, out, err = tidal("report", work / "conv.bin", "--format", "json", capsys=capsys)
    assert status == 0, err
    reset = json.loads(out)["reset"]
    assert set(reset) == {"model_index", "entry_pc", "cycles", "us", "model_setup_cycles"}
    assert reset["cycles"] == program.reset_cycles() > 0
    assert reset["model_index"] == program.reset_index == 1
    assert reset["entry_pc"] == program.reset.entry
    status, out, err = tidal("report", work / "conv.bin", capsys=capsys)
    assert status == 0, err
    assert "reset (new sequence)" in out and f"{program.reset_cycles()} cycles" in out


@pytest.mark.cosim
@pytest.mark.timeout(600)
def test_compare_sequences_icarus(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("icarus")
    status, out, err = tidal("compare", work / "conv.bin", "--sequences", work / "days.npz",
                             "--simulator", "icarus", capsys=capsys)
    assert status == 0, err + out
    # 5 + 3 timesteps and the reset between the sequences, all compared and equal.
    assert out.splitlines()[0].endswith("9 inference(s) (1 of them resets): OK"), out
    assert "outputs: 64 values, equal" in out
