"""The ``tidal`` command line against a crowd of bad invocations.

Missing, empty, corrupted and wrong-kind files; inputs of the wrong shape or dtype; bad
option values; broken model files. Each invocation must end with a non-zero status, exactly
one ``tidal: error:`` line on stderr (with ``--quiet``, which silences progress lines) and no
traceback; a wrong command line exits 2, a command that ran and failed exits 1
(``docs/cli.md``). Most run in-process (an exception escaping :func:`tidal_cli.main.main`
fails the test); a sample runs the installed console script, as a user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tidal_cli.main import main

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
TIDAL = Path(sys.executable).parent / "tidal"
HEAD = 52  # the program file's fixed header (isa/program.py)

MODELS = textwrap.dedent("""\
    import torch
    from torch import nn

    import compiler.frontend as vollo_torch


    class Fn(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)


    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 8), nn.ReLU()), torch.randn(16)


    def conv():
        torch.manual_seed(0)
        return vollo_torch.nn.PaddedConv1d(8, 8, 3), torch.randn(1, 8, 6)


    def returns_none():
        return None


    def returns_three():
        return nn.Linear(4, 4), torch.randn(4), 1


    def not_a_module():
        return "model", torch.randn(4)


    def list_input():
        return nn.Linear(4, 4), [1.0, 2.0, 3.0, 4.0]


    def int_input():
        return nn.Linear(4, 4), torch.arange(4)


    def misfit():
        return nn.Linear(8, 4), torch.randn(5)


    def raises():
        raise RuntimeError("cannot find weights.pt")


    def exits():
        raise SystemExit("bye")


    def needs_args(width):
        return nn.Linear(width, width), torch.randn(width)


    def mish():
        return nn.Sequential(nn.Linear(8, 8), nn.Mish()), torch.randn(8)


    def plain_conv():
        return nn.Conv1d(4, 4, 3, padding=1), torch.randn(1, 4, 6)


    def strided_conv():
        return nn.Conv1d(4, 4, 3, stride=2), torch.randn(1, 4, 6)


    def data_dependent():
        return Fn(lambda x: x if x.sum() > 0 else -x), torch.randn(4)


    def huge():
        return nn.Linear(1024, 1024), torch.randn(1024)


    def fp64_model():
        return nn.Linear(4, 4).double(), torch.randn(4)


    NUMBER = 42
    """)

#: Model files that break before their factory is reached.
BROKEN_FILES = {
    "syntax.py": "def f(:\n",
    "indent.py": "def f():\nreturn 1\n",
    "import_error.py": "import no_such_module_tidal_fuzz\n",
    "name_error.py": "undefined_name_xyz + 1\n",
    "raise_at_import.py": "raise ValueError('configuration missing')\n",
    "exit_at_import.py": "import sys\nsys.exit(2)\n",
    "zero_div.py": "x = 1 / 0\n",
}


def _repack(data: bytes, payload: bytes) -> bytes:
    """``data``'s header around a new payload, its length and checksum made valid."""
    return (data[:12] + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest()
            + payload)


def _with_meta(data: bytes, meta: object) -> bytes:
    (head_len,) = struct.unpack_from("<I", data, HEAD)
    header = json.loads(data[HEAD + 4:HEAD + 4 + head_len])
    header["meta"] = meta
    head = json.dumps(header).encode()
    return _repack(data, struct.pack("<I", len(head)) + head + data[HEAD + 4 + head_len:])


#: The names :func:`_bad_programs` writes.
BAD_PROGRAMS = [
    "empty.bin", "three.bin", "magic_only.bin", "junk.bin", "zip.bin", "header_only.bin",
    "half_header.bin", "version.bin", "reserved.bin", "huge_length.bin", "short_length.bin",
    "trailing.bin", "bad_json.bin", "header_too_long.bin", "no_meta.bin", "meta_list.bin",
    "layer_str.bin", "end_str.bin", "cores_bad.bin", "axis_bad.bin", "axis_alone.bin",
    "reference_zero.bin", *(f"cut{k}.bin" for k in range(6)),
    *(f"flip{k}.bin" for k in range(6)),
]


def _bad_programs(good: bytes) -> dict[str, bytes]:
    """Corrupted, truncated and wrong-kind program files, by name."""
    rng = np.random.default_rng(13)
    files = {
        "empty.bin": b"",
        "three.bin": b"TID",
        "magic_only.bin": b"TIDALPRG",
        "junk.bin": b"not a program at all, just text\n",
        "zip.bin": b"PK\x03\x04" + bytes(60),
        "header_only.bin": good[:HEAD],
        "half_header.bin": good[:30],
        "version.bin": good[:8] + struct.pack("<H", 99) + good[10:],
        "reserved.bin": good[:10] + struct.pack("<H", 7) + good[12:],
        "huge_length.bin": good[:12] + struct.pack("<Q", 54_043_195_528_448_187) + good[20:],
        "short_length.bin": good[:12] + struct.pack("<Q", 10) + good[20:],
        "trailing.bin": good + b"\0" * 16,
        "bad_json.bin": _repack(good, struct.pack("<I", 5) + b"{nope" + good[HEAD + 4:]),
        "header_too_long.bin": _repack(good, struct.pack("<I", 10**6) + good[HEAD + 4:]),
        "no_meta.bin": _with_meta(good, None),
        "meta_list.bin": _with_meta(good, [1, 2]),
        "layer_str.bin": _with_meta(good, {"layers": ["conv"]}),
        "end_str.bin": _with_meta(good, {"layers": [{"start": 0, "end": "late"}]}),
        "cores_bad.bin": _with_meta(good, {"layers": [{"cores": [0, 99]}]}),
        "axis_bad.bin": _with_meta(good, {"streaming": True, "input_axis": 7,
                                          "output_axis": 0}),
        "axis_alone.bin": _with_meta(good, {"streaming": True, "input_axis": 1}),
        "reference_zero.bin": _with_meta(good, {"reference_cycles": 0}),
    }
    for k, cut in enumerate(sorted(rng.choice(np.arange(HEAD + 1, len(good)), 6,
                                              replace=False))):
        files[f"cut{k}.bin"] = good[:cut]
    for k, pos in enumerate(rng.choice(np.arange(HEAD, len(good)), 6, replace=False)):
        flipped = bytearray(good)
        flipped[pos] ^= 1 << int(rng.integers(8))
        files[f"flip{k}.bin"] = bytes(flipped)
    return files


#: The names :func:`_bad_inputs` writes.
BAD_INPUTS = ["x7.npy", "x2d.npy", "x0d.npy", "x_empty_array.npy", "x_int.npy", "x_uint8.npy",
              "x_bool.npy", "x_complex.npy", "x_str.npy", "x_struct.npy", "x_seq.npy",
              "x_object.npy", "x_text.npy", "x_emptyfile.npy", "x_truncated.npy",
              "x_header_only.npy", "x_pickle.npy", "x_npz.npy"]


def _bad_inputs(path: Path) -> None:
    """Write the bad ``.npy`` inputs :data:`BAD_INPUTS` for the 16-value mlp."""
    arrays = {
        "x7.npy": np.zeros(7, np.float32),
        "x2d.npy": np.zeros((4, 4), np.float32),
        "x0d.npy": np.float32(1.0),
        "x_empty_array.npy": np.zeros(0, np.float32),
        "x_int.npy": np.arange(16),
        "x_uint8.npy": np.arange(16, dtype=np.uint8),
        "x_bool.npy": np.ones(16, bool),
        "x_complex.npy": np.ones(16, np.complex128),
        "x_str.npy": np.array(["a"] * 16),
        "x_struct.npy": np.zeros(16, [("a", "f4"), ("b", "f4")]),
        "x_seq.npy": np.zeros((16, 3), np.float32),
    }
    for name, array in arrays.items():
        np.save(path / name, array)
    np.save(path / "x_object.npy", np.array([object()] * 16), allow_pickle=True)
    (path / "x_text.npy").write_text("1 2 3\n")
    (path / "x_emptyfile.npy").write_bytes(b"")
    good = (path / "x16.npy").read_bytes()
    (path / "x_truncated.npy").write_bytes(good[:-7])
    (path / "x_header_only.npy").write_bytes(good[:64])
    (path / "x_pickle.npy").write_bytes(pickle.dumps(list(range(16))))
    with (path / "x_npz.npy").open("wb") as f:  # a path would get ".npz" appended
        np.savez(f, x=np.zeros(16, np.float32))
    assert sorted(p.name for p in path.glob("x?*.npy") if p.name != "x16.npy") == \
        sorted(BAD_INPUTS)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Programs (good and bad), inputs (good and bad) and model files (good and broken)."""
    path = tmp_path_factory.mktemp("fuzz")
    (path / "models.py").write_text(MODELS)
    for name, text in BROKEN_FILES.items():
        (path / name).write_text(text)
    (path / "notes.txt").write_text("not python")
    (path / "dir.py").mkdir()
    (path / "bad.json").write_text("{")
    (path / "list.json").write_text("[]")
    np.save(path / "x16.npy", np.ones(16, np.float32))
    np.save(path / "seq.npy", np.ones((1, 8, 5), np.float32))
    for name, extra in (("mlp", []), ("conv", ["--streaming-axis", "2"])):
        assert main(["-q", "compile", f"{path / 'models.py'}:{name}", "--config", "c2b8",
                     *extra, "-o", str(path / f"{name}.bin")]) == 0
    bad = _bad_programs((path / "mlp.bin").read_bytes())
    assert sorted(bad) == sorted(BAD_PROGRAMS)
    for name, data in bad.items():
        (path / name).write_bytes(data)
    _bad_inputs(path)
    return path


def _cases() -> list[tuple[str, list[str], int]]:
    """Every bad invocation: (id, argv with ``{w}`` for the work directory, status)."""
    m = "{w}/models.py"
    cases: list[tuple[str, list[str], int]] = []

    def add(argv: str, status: int) -> None:
        cases.append((argv, argv.split(), status))

    # The command line itself (exit 2).
    for argv in ["", "frobnicate", "--nope report {w}/mlp.bin", "compile", "run", "sim",
                 "compare", "report", "report --format", "compile " + m + ":mlp",
                 "run {w}/mlp.bin", "sim {w}/mlp.bin",
                 "report {w}/mlp.bin --format pdf", "report {w}/mlp.bin --frobnicate",
                 "report {w}/mlp.bin extra", "run {w}/mlp.bin --input {w}/x16.npy --speed 3"]:
        add(argv, 2)
    for value in ["0", "-1", "abc", "1.5", ""]:
        add(f"report {{w}}/mlp.bin --reference-cycles {value}".rstrip(), 2)
    for value in ["0", "-4", "x", "2.0"]:
        add(f"compare {{w}}/mlp.bin --random {value} --simulator icarus", 2)
    add("compare {w}/mlp.bin --random 2 --input {w}/x16.npy --simulator icarus", 2)
    add("compare {w}/mlp.bin --timesteps --simulator icarus", 2)
    for chunks in ["--chunks 0", "--chunks 3 --random 2", "--chunks 2 --workers 0",
                   "--chunks x"]:
        add(f"compare {{w}}/mlp.bin {chunks} --simulator icarus", 2)
    for regress in ["regress", "regress {w}/absent.toml", "regress {w}", "regress {w}/x16.npy"]:
        add(regress, 2)
    for sim in ["sim {w}/mlp.bin --input {w}/x16.npy", "compare {w}/mlp.bin"]:
        add(f"{sim} --simulator modelsim", 2)
    for spec in ["models.py", "models.py:", ":mlp", "models.py:1bad", "models.py:a.b",
                 "model.onnx", "model.onnx:make", "missing.py:mlp", "dir.py:f",
                 "notes.txt:f", "models.py:NUMBER", "models.py:absent", "models.py:needs_args"]:
        add(f"compile {{w}}/{spec} -o {{w}}/out.bin", 2)
    for config in ["nope", "c9b32", "c7b3", "c0b8", "{w}/missing.json", "{w}/bad.json",
                   "{w}/list.json"]:
        add(f"compile {m}:mlp --config {config} -o {{w}}/out.bin", 2)
    add(f"compile {m}:mlp --streaming-axis two -o {{w}}/out.bin", 2)
    for out in ["{w}", "{w}/nodir/out.bin"]:
        add(f"compile {m}:mlp --config c2b8 -o {out}", 2)
        add(f"run {{w}}/mlp.bin --input {{w}}/x16.npy -o {out}", 2)
        add(f"report {{w}}/mlp.bin -o {out}", 2)
    add("run {w}/mlp.bin --input {w}/x16.npy --trace {w}/nodir/t.txt", 2)
    add("report {w}/mlp.bin --plot {w}", 2)
    for command in ["report {w}/{p}", "run {w}/{p} --input {w}/x16.npy",
                    "sim {w}/{p} --input {w}/x16.npy --simulator icarus",
                    "compare {w}/{p} --simulator icarus"]:
        add(command.format(w="{w}", p="absent.bin"), 2)
        add(command.format(w="{w}", p=""), 2)  # a directory, not a program
    add("run {w}/mlp.bin --input {w}/absent.npy", 2)
    add("run {w}/mlp.bin --input {w}", 2)
    add("run {w}/mlp.bin --input {w}/x16.npy --timesteps", 2)  # not a streaming program

    # Commands that ran and failed (exit 1): broken model files and factories.
    for name in BROKEN_FILES:
        add(f"compile {{w}}/{name}:f -o {{w}}/out.bin", 1)
    for factory in ["returns_none", "returns_three", "not_a_module", "list_input",
                    "int_input", "misfit", "raises", "exits", "mish", "plain_conv",
                    "strided_conv", "data_dependent", "huge"]:
        add(f"compile {m}:{factory} --config c2b8 -o {{w}}/out.bin", 1)
    for axis in ["5", "-5", "0", "1"]:
        add(f"compile {m}:conv --config c2b8 --streaming-axis {axis} -o {{w}}/out.bin", 1)
    # Corrupted program files, read by every command that reads one.
    for name in BAD_PROGRAMS:
        add(f"report {{w}}/{name}", 1)
        add(f"run {{w}}/{name} --input {{w}}/x16.npy", 1)
    for name in ["flip0.bin", "cut0.bin", "layer_str.bin"]:
        add(f"sim {{w}}/{name} --input {{w}}/x16.npy --simulator icarus", 1)
        add(f"compare {{w}}/{name} --simulator icarus", 1)
    add("run {w}/conv.bin --input {w}/seq.npy --timesteps --trace {w}/t.txt -o {w}/mlp.bin"
        .replace("conv.bin", "axis_alone.bin"), 1)
    # Inputs of the wrong kind, shape or dtype.
    for name in BAD_INPUTS:
        add(f"run {{w}}/mlp.bin --input {{w}}/{name}", 1)
    for name in ["x7.npy", "x_int.npy", "x_text.npy"]:
        add(f"sim {{w}}/mlp.bin --input {{w}}/{name} --simulator icarus", 1)
        add(f"compare {{w}}/mlp.bin --input {{w}}/{name} --simulator icarus", 1)
    add("run {w}/conv.bin --input {w}/x16.npy --timesteps", 1)
    add("run {w}/conv.bin --input {w}/seq.npy", 1)  # a sequence without --timesteps
    add("run {w}/conv.bin --input {w}/x_seq.npy --timesteps", 1)
    add("run {w}/mlp.bin --input {w}/mlp.bin", 1)  # a program as input
    add("report {w}/x16.npy", 1)  # an input as program
    add("report {w}/models.py", 1)
    return cases


CASES = _cases()


def test_there_are_at_least_100_cases() -> None:
    assert len(CASES) >= 100
    assert len({argv for argv, _, _ in CASES}) == len(CASES)  # no duplicates


def _argv(template: list[str], work: Path) -> list[str]:
    return ["-q", *(part.replace("{w}", str(work)) for part in template)]


def assert_one_error_line(status: int, err: str, expected: int) -> None:
    lines = err.splitlines()
    assert status == expected, err
    assert len(lines) == 1 and lines[0].startswith("tidal: error: "), err
    assert "Traceback" not in err and len(lines[0]) > len("tidal: error: ") + 10, err


@pytest.mark.parametrize("argv, status", [(argv, status) for _, argv, status in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_bad_invocation(work: Path, argv: list[str], status: int,
                        capsys: pytest.CaptureFixture[str]) -> None:
    got = main(_argv(argv, work))
    _, err = capsys.readouterr()
    written = (work / "out.bin").exists()
    (work / "out.bin").unlink(missing_ok=True)
    assert_one_error_line(got, err, status)
    assert not written


@pytest.mark.parametrize("case_id", [
    "frobnicate", "report {w}/empty.bin", "run {w}/mlp.bin --input {w}/x_int.npy",
    "compile {w}/syntax.py:f -o {w}/out.bin",
    "compile {w}/models.py:misfit --config c2b8 -o {w}/out.bin",
])
def test_bad_invocation_console_script(work: Path, case_id: str) -> None:
    # As a user runs it: a separate process, whose stderr also shows any warning or
    # traceback printed outside main(). This checkout's code (see test_cli.py).
    argv, status = next((a, s) for i, a, s in CASES if i == case_id)
    done = subprocess.run([TIDAL, *_argv(argv, work)], capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_one_error_line(done.returncode, done.stderr, status)
