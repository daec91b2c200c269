"""The ``tidal`` command line: every subcommand, its error paths and exit statuses.

Most tests call :func:`tidal_cli.main.main` in-process (fast); one runs the installed
``tidal`` script to check the console entry point. Programs are compiled for the small
``c2b8`` configuration. RTL tests (``cosim``) are one ``tidal sim`` and one ``tidal
compare`` on Icarus.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import need

from tidal_cli.loader import load_factory
from tidal_cli.main import main

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
TIDAL = Path(sys.executable).parent / "tidal"

MODELS = textwrap.dedent("""\
    import torch
    from torch import nn

    import compiler.frontend as vollo_torch


    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = vollo_torch.nn.PaddedConv1d(8, 8, 3)

        def forward(self, x):
            return torch.relu(self.conv(x))


    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 8), nn.ReLU()), torch.randn(16)


    def conv():
        torch.manual_seed(0)
        return Conv(), torch.randn(1, 8, 6)


    def unsupported():
        return nn.Sequential(nn.Linear(8, 8), nn.Mish()), torch.randn(8)


    def huge():
        return nn.Linear(1024, 1024), torch.randn(1024)


    def not_a_pair():
        return nn.Linear(8, 8)


    def misfit():
        return nn.Linear(8, 4), torch.randn(5)


    def int_input():
        return nn.Linear(8, 4), torch.arange(8)


    def raises():
        raise KeyError("weights.pt")


    def needs_args(width, depth=2):
        return nn.Linear(width, width), torch.randn(width)


    def padded_conv1d():
        return nn.Conv1d(4, 4, 3, padding=1), torch.randn(1, 4, 6)


    def divide_by_zero():
        return Fn(lambda x: x / 0.0), torch.randn(8)


    class Fn(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)


    NOT_A_FUNCTION = 42
    """)


def tidal(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``tidal ARGS`` in-process; return (status, stdout, stderr)."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _factory(work: Path, name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and example input of factory ``name`` in the test models file."""
    return load_factory(f"{work / 'models.py'}:{name}")


def assert_one_line_error(status: int, err: str, expected_status: int, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("tidal: error:")]
    assert status == expected_status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model file, two compiled programs (mlp.bin, conv.bin) and an input (x16.npy)."""
    path = tmp_path_factory.mktemp("cli")
    (path / "models.py").write_text(MODELS)
    np.save(path / "x16.npy", np.random.default_rng(0).standard_normal(16).astype(np.float32))
    for name, extra in (("mlp", []), ("conv", ["--streaming-axis", "2"])):
        status = main(["-q", "compile", f"{path / 'models.py'}:{name}", "--config", "c2b8",
                       *extra, "-o", str(path / f"{name}.bin")])
        assert status == 0
    return path


# -- help ---------------------------------------------------------------------------------


def test_help_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = tidal("--help", capsys=capsys)
    assert status == 0
    for command in ("compile", "run", "sim", "compare", "report"):
        assert command in out
    assert "examples:" in out and "compute only" in out


@pytest.mark.parametrize("command", ["compile", "run", "sim", "compare", "report"])
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = tidal(command, "--help", capsys=capsys)
    assert status == 0
    assert f"usage: tidal {command}" in out and "examples:" in out


def test_console_script(work: Path) -> None:
    # The installed entry point, as a user runs it, on this checkout's code (the editable
    # install may point at another working copy).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([TIDAL, "report", work / "mlp.bin"], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "tidal latency report" in done.stdout
    done = subprocess.run([TIDAL, "report", work / "missing.bin"], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("tidal: error:") and "Traceback" not in done.stderr


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*tidal("frobnicate", capsys=capsys)[::2], 2, "invalid choice")
    assert_one_line_error(*tidal("compile", capsys=capsys)[::2], 2, "required")


# -- compile ------------------------------------------------------------------------------


def test_compile_prints_cycles(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = tidal("compile", f"{work / 'models.py'}:conv", "--config", "c2b8",
                             "--streaming-axis", "2", "--name", "tiny_conv",
                             "-o", work / "c.bin", capsys=capsys)
    assert status == 0, err
    assert "cycles per inference" in out and "µs at 320 MHz" in out
    assert "compiling tiny_conv for ip_core_c2b8" in err  # progress, plain lines off a TTY
    from compiler import Program

    program = Program.load(work / "c.bin")
    assert program.meta["name"] == "tiny_conv"
    assert program.meta["streaming"] and program.meta["input_axis"] == 2


def test_compile_exact_sums(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A 512-wide sum is cut in two by default at the realistic depths (a bf16-rounded
    # partial); --exact-sums keeps every sum one fp32 chain, at more cycles.
    (tmp_path / "wide.py").write_text(textwrap.dedent("""\
        import torch

        def wide():
            torch.manual_seed(0)
            return (torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                        torch.nn.Linear(512, 512)), torch.randn(1, 512))
        """))
    programs = {}
    for flag in ([], ["--exact-sums"]):
        status, _, err = tidal("-q", "compile", f"{tmp_path / 'wide.py'}:wide", *flag,
                               "-o", tmp_path / "w.bin", capsys=capsys)
        assert status == 0, err
        from compiler import Program

        programs[bool(flag)] = Program.load(tmp_path / "w.bin")
    cut = [layer["partial_sums"] for layer in programs[False].meta["layers"]]
    exact = [layer["partial_sums"] for layer in programs[True].meta["layers"]]
    assert any(cut) and not any(exact)
    assert (programs[True].cycle_count_per_inference()
            > programs[False].cycle_count_per_inference())


def test_compile_bad_config(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("compile", f"{work / 'models.py'}:mlp", "--config", "c7b3",
                           "-o", work / "x.bin", capsys=capsys)
    assert_one_line_error(status, err, 2, "block_size")
    status, _, err = tidal("compile", f"{work / 'models.py'}:mlp", "--config", "nope",
                           "-o", work / "x.bin", capsys=capsys)
    assert_one_line_error(status, err, 2, "unknown configuration 'nope'", "ia_420f_c6b32")


def test_compile_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("compile", f"{tmp_path / 'nope.py'}:f", "-o", tmp_path / "x.bin",
                           capsys=capsys)
    assert_one_line_error(status, err, 2, "does not exist", "nope.py")


@pytest.mark.parametrize("spec, words", [
    ("models.py", ["FILE.py:FUNCTION"]),
    ("models.py:absent", ["no function 'absent'"]),
    ("model.onnx", ["ONNX file", "does not exist"]),
    ("model.onnx:f", ["FILE.onnx", "without ':FUNCTION'"]),
    ("models.py:NOT_A_FUNCTION", ["'NOT_A_FUNCTION' is a int, not a function"]),
    ("models.py:needs_args", ["must take no arguments, but needs width"]),
])
def test_compile_bad_model_spec(work: Path, spec: str, words: list[str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("compile", work / spec, "-o", work / "x.bin", capsys=capsys)
    assert_one_line_error(status, err, 2, *words)


@pytest.mark.parametrize("factory, words", [
    ("unsupported", ["unsupported model", "Mish"]),
    ("huge", ["does not fit"]),
    ("not_a_pair", ["(model, example_input)"]),
    ("misfit", ["the model fails on the example input: RuntimeError: mat1 and mat2"]),
    ("int_input", ["example input 0 has dtype torch.int64", "floating-point"]),
    ("raises", ["the factory raised KeyError: 'weights.pt'"]),
    ("padded_conv1d", ["torch.nn.Conv1d", "padding=1 looks ahead 1 step(s)"]),
])
def test_compile_failures(work: Path, factory: str, words: list[str],
                          capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("compile", f"{work / 'models.py'}:{factory}", "--config", "c2b8",
                           "-o", work / "x.bin", capsys=capsys)
    assert_one_line_error(status, err, 1, *words)
    assert not (work / "x.bin").exists()


@pytest.mark.parametrize("source, words", [
    ("def f(:\n", ["SyntaxError at line 1"]),
    ("import no_such_module_xyz\n", ["fails to import", "ModuleNotFoundError",
                                      "no_such_module_xyz"]),
    ("raise SystemExit(3)\n", ["fails to import: SystemExit: 3"]),
])
def test_compile_broken_model_file(tmp_path: Path, source: str, words: list[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.py").write_text(source)
    status, _, err = tidal("-q", "compile", f"{tmp_path / 'broken.py'}:f",
                           "-o", tmp_path / "x.bin", capsys=capsys)
    assert_one_line_error(status, err, 1, "broken.py", *words)
    assert err.count("\n") == 1


def test_compile_output_checked_before_compiling(work: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for out, words in ((tmp_path, ["error: -o '", "is a directory"]),
                       (tmp_path / "no" / "x.bin", ["directory", "does not exist"])):
        status, _, err = tidal("compile", f"{work / 'models.py'}:mlp", "--config", "c2b8",
                               "-o", out, capsys=capsys)
        assert_one_line_error(status, err, 2, *words)
        assert "compiling" not in err  # refused before any work


def test_compile_division_by_zero_runs_like_pytorch(work: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("-q", "compile", f"{work / 'models.py'}:divide_by_zero",
                           "--config", "c2b8", "-o", work / "div.bin", capsys=capsys)
    assert status == 0, err
    np.save(work / "x8.npy", np.array([1, -2, 0, 3, -0.5, 0, 4, 1], np.float32))
    status, _, err = tidal("-q", "run", work / "div.bin", "--input", work / "x8.npy",
                           "-o", work / "y8.npy", capsys=capsys)
    assert status == 0, err
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.load(work / "x8.npy") / np.float32(0.0)
    np.testing.assert_array_equal(np.load(work / "y8.npy"), want)


def test_compile_unstreamable(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("compile", f"{work / 'models.py'}:mlp", "--config", "c2b8",
                           "--streaming-axis", "0", "-o", work / "x.bin", capsys=capsys)
    assert_one_line_error(status, err, 1, "cannot stream over axis 0")


# -- run ----------------------------------------------------------------------------------


def test_run_one_inference(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = tidal("run", work / "mlp.bin", "--input", work / "x16.npy",
                             "-o", work / "y.npy", capsys=capsys)
    assert status == 0, err
    from compiler import Program

    program = Program.load(work / "mlp.bin")
    vm = program.to_vm()
    x = np.load(work / "x16.npy")
    want = vm.run(x)
    assert f"VM: {vm.cycle_count()} cycles per inference" in out
    np.testing.assert_array_equal(np.load(work / "y.npy"), want)  # exactly the VM's
    model, _ = _factory(work, "mlp")
    torch_out = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(want, torch_out, rtol=0.05, atol=0.05)  # and the model's


def test_run_timesteps(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(1).standard_normal((1, 8, 5)).astype(np.float32)
    np.save(work / "seq.npy", x)
    status, out, err = tidal("run", work / "conv.bin", "--input", work / "seq.npy",
                             "--timesteps", "-o", work / "yseq.npy", capsys=capsys)
    assert status == 0, err
    assert "5 timesteps" in out
    from compiler import Program

    vm = Program.load(work / "conv.bin").to_vm()
    steps = [vm.run(x[:, :, t]) for t in range(5)]  # one inference per timestep, in order
    y = np.load(work / "yseq.npy")
    np.testing.assert_array_equal(y, np.stack(steps, axis=2))
    model, _ = _factory(work, "conv")
    want = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, want, rtol=0.05, atol=0.05)  # the model's sequence output
    # One timestep: the same model, input without the time axis; printed without -o.
    np.save(work / "step.npy", x[:, :, 0])
    status, out, err = tidal("run", work / "conv.bin", "--input", work / "step.npy",
                             capsys=capsys)
    assert status == 0, err
    assert "output (1, 8):" in out
    printed = out[out.index("output (1, 8):"):].split(":", 1)[1]
    values = [float(v) for v in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", printed)]
    np.testing.assert_allclose(values, steps[0].ravel(), rtol=1e-4, atol=1e-5)


def test_run_wrong_shape(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(work / "x7.npy", np.zeros(7, np.float32))
    status, _, err = tidal("run", work / "mlp.bin", "--input", work / "x7.npy", capsys=capsys)
    assert_one_line_error(status, err, 1, "shape (7,)", "expects (16,)")
    np.save(work / "seq.npy", np.zeros((1, 8, 5), np.float32))
    status, _, err = tidal("run", work / "conv.bin", "--input", work / "seq.npy",
                           capsys=capsys)
    assert_one_line_error(status, err, 1, "add --timesteps")
    status, _, err = tidal("run", work / "mlp.bin", "--input", work / "x7.npy",
                           "--timesteps", capsys=capsys)
    assert_one_line_error(status, err, 2, "streaming program")


def test_run_missing_and_bad_input(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("run", work / "mlp.bin", "--input", work / "none.npy",
                           capsys=capsys)
    assert_one_line_error(status, err, 2, "none.npy", "does not exist")
    (work / "text.npy").write_text("hello")
    status, _, err = tidal("run", work / "mlp.bin", "--input", work / "text.npy",
                           capsys=capsys)
    assert_one_line_error(status, err, 1, "is not a .npy file (no NumPy header)")


def test_corrupted_program(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray((work / "mlp.bin").read_bytes())
    data[-1] ^= 0xFF
    (work / "bad.bin").write_bytes(bytes(data))
    (work / "short.bin").write_bytes(bytes(data[:40]))
    (work / "junk.bin").write_bytes(b"not a program at all")
    for name, words in (("bad.bin", ["checksum"]), ("short.bin", ["truncated"]),
                        ("junk.bin", ["not a tidal program"])):
        for command in (["run", work / name, "--input", work / "x16.npy"],
                        ["report", work / name]):
            status, _, err = tidal(*command, capsys=capsys)
            assert_one_line_error(status, err, 1, name, *words)


def test_traceback_flag(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tidal_cli.loader import CliError

    with pytest.raises(CliError):
        main(["--traceback", "report", str(work / "missing.bin")])
    capsys.readouterr()


# -- report -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, marker", [
    ("text", "Layers"), ("md", "| # | layer | op |"), ("html", "<table>"),
    ("json", '"schema_version": 2'),
])
def test_report_formats(work: Path, fmt: str, marker: str,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out_file = work / f"report.{fmt}"
    status, out, err = tidal("report", work / "conv.bin", "--format", fmt, "-o", out_file,
                             "--plot", work / f"timeline-{fmt}.png", capsys=capsys)
    assert status == 0, err
    text = out_file.read_text()
    assert marker in text
    assert "no host I/O" in text
    png = (work / f"timeline-{fmt}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    if fmt == "md":
        assert f"](timeline-{fmt}.png)" in text  # linked relative to the report
    if fmt == "json":
        data = json.loads(text)
        assert data["latency"]["spaced_cycles"] > 0
        assert len(data["cores"]) == len(data["memory"]) == 2


def test_report_to_stdout_with_reference(work: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = tidal("report", work / "mlp.bin", "--reference-cycles", "84",
                           capsys=capsys)
    assert status == 0
    assert "tidal latency report: mlp on ip_core_c2b8" in out
    assert "84 cycles" in out and "ours / reference" in out


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many"])
def test_report_reference_cycles_must_be_positive(work: Path, value: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = tidal("report", work / "mlp.bin", "--reference-cycles", value,
                           capsys=capsys)
    assert_one_line_error(status, err, 2, "--reference-cycles", value)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_compare_random_must_be_positive(work: Path, value: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # A usage error before any simulator is looked for, not "nothing compared".
    status, _, err = tidal("compare", work / "mlp.bin", "--random", value, "--simulator",
                           "icarus", capsys=capsys)
    assert_one_line_error(status, err, 2, "--random", "at least 1")


@pytest.mark.parametrize("dtype", ["int64", "bool", "complex64", "uint8"])
def test_run_refuses_non_float_npy(work: Path, dtype: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    np.save(work / f"x_{dtype}.npy", np.ones(16, dtype))
    status, _, err = tidal("run", work / "mlp.bin", "--input", work / f"x_{dtype}.npy",
                           capsys=capsys)
    assert_one_line_error(status, err, 1, f"holds {dtype} values", "floating-point",
                          ".astype(np.float32)")


@pytest.mark.parametrize("dtype", ["float16", "float64", "longdouble"])
def test_run_takes_every_float_npy(work: Path, dtype: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    x = np.load(work / "x16.npy").astype(dtype)
    np.save(work / f"x_{dtype}.npy", x)
    status, _, err = tidal("-q", "run", work / "mlp.bin", "--input", work / f"x_{dtype}.npy",
                           "-o", work / f"y_{dtype}.npy", capsys=capsys)
    assert status == 0, err
    from compiler import Program

    want = Program.load(work / "mlp.bin").to_vm().run(x)
    np.testing.assert_array_equal(np.load(work / f"y_{dtype}.npy"), want)


def test_inconsistent_meta_is_one_line(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Checksum valid, meta not: refused at load, never an AttributeError in a command.
    from test_user_inputs import with_meta

    data = (work / "conv.bin").read_bytes()
    np.save(work / "seq5.npy", np.zeros((1, 8, 5), np.float32))
    for name, meta in (("layers.bin", {"layers": ["conv"]}),
                       ("end.bin", {"layers": [{"start": 0, "end": "late"}]}),
                       ("axis.bin", {"streaming": True, "input_axis": 9, "output_axis": 2})):
        (work / name).write_bytes(with_meta(data, meta))
        for command in (["report", work / name],
                        ["run", work / name, "--input", work / "seq5.npy", "--timesteps"]):
            status, _, err = tidal(*command, capsys=capsys)
            assert_one_line_error(status, err, 1, name, "corrupted program content: meta")


# -- RTL ----------------------------------------------------------------------------------


def test_compare_mismatch_exits_1(work: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The exit status logic, without a simulator: a comparison that found a divergence.
    from sim import cosim

    class Divergent:
        ok = False
        error = None
        first_divergence = cosim.Divergence("output", 0, 16, 1, 4, "output beat 1 lane 3",
                                            "0x3f80", "0x3f81")

        def summary(self) -> str:
            return "compare mlp on ip_core_c2b8 [icarus], 1 inference(s): MISMATCH"

    monkeypatch.setattr(cosim, "compare", lambda *args, **kwargs: Divergent())
    status, out, err = tidal("compare", work / "mlp.bin", "--random", "1", "--simulator",
                             "icarus", capsys=capsys)
    assert "MISMATCH" in out
    assert_one_line_error(status, err, 1, "differ", "output beat 1 lane 3", "core 1")


@pytest.mark.cosim
@pytest.mark.timeout(600)
def test_sim_icarus(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("icarus")
    status, out, err = tidal("sim", work / "mlp.bin", "--input", work / "x16.npy",
                             "--simulator", "icarus", "-o", work / "y_rtl.npy", capsys=capsys)
    assert status == 0, err
    assert "cycles/s" in out
    main(["-q", "run", str(work / "mlp.bin"), "--input", str(work / "x16.npy"),
          "-o", str(work / "y_vm.npy")])
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(work / "y_rtl.npy"), np.load(work / "y_vm.npy"))


@pytest.mark.cosim
@pytest.mark.timeout(600)
def test_compare_icarus(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("icarus")
    status, out, err = tidal("compare", work / "conv.bin", "--random", "3",
                             "--simulator", "icarus", capsys=capsys)
    assert status == 0, err + out
    lines = out.splitlines()
    assert lines[0].endswith("3 inference(s): OK"), out
    # 3 inferences of one 8-lane output beat each, every comparison made and equal.
    assert "outputs: 24 values, equal" in out
    for part in ("state:", "cycles:", "trace:"):
        line = next(line for line in lines if line.strip().startswith(part))
        assert "equal" in line and "differ" not in line, line
