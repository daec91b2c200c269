"""Multi-model programs: ``ProgramBuilder``, the format, the VM's ``model_index`` and errors.

Every model of a multi-model program must behave exactly as its own single-model program:
the same outputs bit for bit, the same cycle counts, and its own streaming state, whatever
the other models do in between.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import compiler as vollo_compiler
import compiler.frontend as vollo_torch
from compiler import AllocationError, Config, ProgramBuilder
from isa.program import MODEL_FIELD_BITS, Program, ProgramError, indesc_words, model_table
from tidal_cli.main import main

pytestmark = pytest.mark.timeout(120)

C2B8 = Config.ip_core(2, 8)


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = vollo_torch.nn.PaddedConv1d(8, 16, 3)
        self.conv2 = vollo_torch.nn.PaddedConv1d(16, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def _cnn() -> vollo_compiler.NNIR:
    """A streaming CNN (state in tensor RAM): input [1, 8, T] streamed over T."""
    torch.manual_seed(1)
    gm, _ = vollo_torch.fx.prepare_shape(_CNN(), torch.randn(1, 8, 6))
    nnir, _ = vollo_torch.fx.nnir.to_nnir(gm).streaming_transform(2)
    return nnir


def _mlp(seed: int = 2, features: int = 12) -> vollo_compiler.NNIR:
    torch.manual_seed(seed)
    # Tanh: model 1 uses the function unit, whose addresses the builder relocates too.
    model = nn.Sequential(nn.Linear(features, 20), nn.Tanh(), nn.Linear(20, 6))
    gm, _ = vollo_torch.fx.prepare_shape(model, torch.randn(features))
    return vollo_torch.fx.nnir.to_nnir(gm)


def two_model_program(config: Config = C2B8, core_indices: tuple | None = (None, None)
                      ) -> Program:
    """The CNN as model 0 and the MLP as model 1 (shared cores by default)."""
    builder = ProgramBuilder(config)
    assert builder.add_nnir(_cnn(), name="cnn", core_indices=core_indices[0]) == 0
    assert builder.add_nnir(_mlp(), name="mlp", core_indices=core_indices[1]) == 1
    return builder.to_program()


def _singles(config: Config, core_indices: tuple = (None, None)) -> list[Program]:
    """Each model as its own single-model program, on the same cores."""
    out = []
    for nnir, cores, name in ((_cnn(), core_indices[0], "cnn"), (_mlp(), core_indices[1], "mlp")):
        builder = ProgramBuilder(config)
        builder.add_nnir(nnir, name=name, core_indices=cores)
        out.append(builder.to_program())
    return out


def test_one_model_is_the_single_model_program() -> None:
    builder = ProgramBuilder(C2B8)
    builder.add_nnir(_cnn(), name="cnn")
    assert builder.to_program().save_bytes() == _cnn().to_program(C2B8, name="cnn").save_bytes()


@pytest.mark.parametrize("placement", [(None, None), ([0], [1]), ([1], [0, 1])],
                         ids=["shared", "separate", "overlapping"])
def test_interleaved_inferences_equal_single_model_programs(placement: tuple) -> None:
    program = two_model_program(C2B8, placement)
    assert program.num_models == 2
    singles = _singles(C2B8, placement)
    vm = program.to_vm()
    refs = [p.to_vm() for p in singles]
    rng = np.random.default_rng(0)
    order = [0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0]
    compared = 0
    for k in order:
        shape = program.model(k).inputs[0].shape
        x = rng.standard_normal(shape).astype(np.float32)
        got = vm.run(x, model_index=k)
        want = refs[k].run(x)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        compared += got.size
        assert vm.cycle_count() == refs[k].cycle_count()
        assert vm.cycle_count(spaced=False) == refs[k].cycle_count(spaced=False)
        assert program.cycle_count_per_inference(model_index=k) == refs[k].cycle_count()
    assert compared > 0


@pytest.mark.parametrize("executor", ["compiled", "numpy"])
def test_run_timesteps_keeps_each_models_state(executor: str) -> None:
    program = two_model_program()
    single = _singles(C2B8)[0]
    vm = program.to_vm(executor=executor)
    ref = single.to_vm(executor=executor)
    rng = np.random.default_rng(1)
    seq = rng.standard_normal((1, 8, 7)).astype(np.float32)
    first = vm.run_timesteps(seq[..., :4], 2, 2, model_index=0)
    vm.run(rng.standard_normal(12).astype(np.float32), model_index=1)   # in between
    rest = vm.run_timesteps(seq[..., 4:], 2, 2, model_index=0)
    want = ref.run_timesteps(seq, 2, 2)
    np.testing.assert_array_equal(np.concatenate([first, rest], axis=2), want)
    assert vm.cycle_count() == ref.cycle_count()


def test_save_load_round_trip() -> None:
    program = two_model_program(C2B8, ([0], [1]))
    data = program.save_bytes()
    loaded = vollo_compiler.Program.load_bytes(data)
    assert loaded.save_bytes() == data
    assert loaded.num_models == 2
    assert loaded.model(1).meta["name"] == "mlp"
    assert loaded.model(1).meta["cores"] == [1]
    # The machine's tables: model 1's descriptors follow model 0's.
    table = model_table(loaded)
    beats0 = len(loaded.model(0).input_dests)
    f = MODEL_FIELD_BITS
    assert table[0] == beats0 << 2 * f
    assert table[1] == (loaded.model(1).entry | beats0 << f
                        | len(loaded.model(1).input_dests) << 2 * f)
    # The reset entry is the table's last word: one beat, written nowhere (mask 0).
    beats1 = len(loaded.model(1).input_dests)
    assert loaded.reset_index == 2 and len(table) == 3
    assert table[2] == loaded.reset.entry | (beats0 + beats1) << f | 1 << 2 * f
    assert indesc_words(loaded)[beats0 + beats1:] == [0]
    assert len(indesc_words(loaded)) == beats0 + beats1 + 1


def test_bad_model_index_is_one_clear_error() -> None:
    program = two_model_program()
    vm = program.to_vm()
    for bad in (2, -1, "1", 1.0):
        with pytest.raises(ValueError, match=r"^model_index .* is out of range: the program "
                                             r"has 2 model\(s\), 0\.\.1$"):
            vm.run(np.zeros((1, 8), np.float32), model_index=bad)
    with pytest.raises(ValueError, match="model_index 5 is out of range"):
        program.cycle_count_per_inference(model_index=5)
    with pytest.raises(ValueError, match="model_index 2 is out of range"):
        vm.run_timesteps(np.zeros((1, 8, 2), np.float32), 2, 2, model_index=2)


def test_builder_errors() -> None:
    builder = ProgramBuilder(C2B8)
    with pytest.raises(ValueError, match="no model added"):
        builder.to_program()
    for bad in ([], [0, 0], [2], [True]):
        with pytest.raises(ValueError, match=r"core_indices .* must be distinct cores of the "
                                             r"2-core machine, 0\.\.1"):
            builder.add_nnir(_mlp(), core_indices=bad)
    # Each model fits alone; together they overflow core 0's weight store.
    small = Config.ip_core(1, 8, weight_store_depth=12)
    builder = ProgramBuilder(small)
    builder.add_nnir(_mlp(3))
    builder.add_nnir(_mlp(4))
    with pytest.raises(AllocationError, match=r"^weight store of core 0: the 2 models need "
                                              r"18 words, has 12$"):
        builder.to_program()


def test_inconsistent_model_is_refused() -> None:
    program = two_model_program()
    model = program.extra_models[0]
    model.entry = len(program.cores[0].instructions)
    with pytest.raises(ProgramError, match="model 1 entry pc .* is outside"):
        program.validate()


def test_cli_runs_and_reports_each_model(tmp_path, capsys) -> None:
    """``tidal run --model K`` runs model K; ``tidal report`` lists every model."""
    program = two_model_program(C2B8, ([0], [1]))
    path = tmp_path / "two.bin"
    program.save(path)
    x = np.random.default_rng(2).standard_normal(12).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["-q", "run", str(path), "--input", str(tmp_path / "x.npy"), "--model", "1",
                 "-o", str(tmp_path / "y.npy")]) == 0
    out = capsys.readouterr().out
    assert "model 1 (mlp) of 2" in out
    want = _singles(C2B8, ([0], [1]))[1]
    assert f"{want.cycle_count_per_inference()} cycles" in out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want.to_vm().run(x))

    assert main(["report", str(path), "--model", "1", "--format", "json",
                 "-o", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["program"]["model_index"] == 1 and data["program"]["name"] == "mlp"
    assert data["latency"]["spaced_cycles"] == want.cycle_count_per_inference()
    assert [m["name"] for m in data["models"]] == ["cnn", "mlp"]
    assert [m["cores"] for m in data["models"]] == [[0], [1]]
    capsys.readouterr()
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "cnn on cores 0: " in text and "contiguous (this report)" in text
    assert "mlp on cores 1: " in text


@pytest.mark.parametrize("command", ["run", "report"])
def test_cli_bad_model_is_one_line(tmp_path, capsys, command: str) -> None:
    path = tmp_path / "two.bin"
    two_model_program().save(path)
    np.save(tmp_path / "x.npy", np.zeros(12, np.float32))
    args = [command, str(path), "--model", "2"]
    if command == "run":
        args += ["--input", str(tmp_path / "x.npy")]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tidal: error:")]
    assert lines == ["tidal: error: --model 2: the program has 2 model(s), 0..1"], err
    assert "Traceback" not in err
