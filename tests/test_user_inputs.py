"""What a user hands the Python API, wrong: program files and VM inputs.

A program file that loads is consistent in every field (``isa.program.check_meta``), and a
broken one says what is wrong with it; ``VM.run`` takes tensors of every floating dtype
and refuses the rest with its own message.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import compiler.frontend as vollo_torch
from isa.config import Config
from isa.program import _HEAD, FORMAT_VERSION, MAGIC, Program, ProgramError, ProgramFormatError

pytestmark = pytest.mark.timeout(120)


def compiled(model: nn.Module, x: torch.Tensor, streaming_axis: int | None = None) -> Program:
    gm, _ = vollo_torch.fx.prepare_shape(model, x)
    nnir = vollo_torch.fx.nnir.to_nnir(gm)
    if streaming_axis is not None:
        nnir, _ = nnir.streaming_transform(streaming_axis)
    return nnir.to_program(Config.preset("c2b8"), name="t")


@pytest.fixture(scope="module")
def mlp() -> Program:
    torch.manual_seed(0)
    return compiled(nn.Sequential(nn.Linear(16, 8), nn.ReLU()), torch.randn(16))


@pytest.fixture(scope="module")
def conv() -> Program:
    torch.manual_seed(0)
    return compiled(vollo_torch.nn.PaddedConv1d(8, 8, 3), torch.randn(1, 8, 4), 2)


def with_meta(data: bytes, meta: Any) -> bytes:
    """Return program file ``data`` with its meta replaced and a valid checksum."""
    (head_len,) = struct.unpack_from("<I", data, _HEAD.size)
    start = _HEAD.size + 4
    header = json.loads(data[start:start + head_len])
    header["meta"] = meta
    head = json.dumps(header, sort_keys=True).encode()
    payload = struct.pack("<I", len(head)) + head + data[start + head_len:]
    digest = hashlib.sha256(payload).digest()
    return _HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(payload), digest) + payload


# -- program files --------------------------------------------------------------------------


def test_meta_round_trips(conv: Program) -> None:
    # The helper itself: an unchanged meta loads, so the refusals below are the meta's.
    data = conv.save_bytes()
    assert Program.load_bytes(with_meta(data, conv.meta)).meta == conv.meta


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(layers=["conv"]), "meta['layers'][0] must be a dict, not 'conv'"),
    (lambda m: m["layers"][0].update(end="late"), "meta['layers'][0]['end'] must be a cycle"),
    (lambda m: m["layers"][0].update(start=10**6), "start <= end"),
    (lambda m: m["layers"][0].update(cores=[0, 7]), "list of core indices 0..1"),
    (lambda m: m["layers"][0].update(tiles=-1), "['tiles'] must be an integer >= 0"),
    (lambda m: m.update(layers={"a": 1}), "meta['layers'] must be a list"),
    (lambda m: m.update(input_axis=9), "meta['input_axis'] must be an axis of the 2-d input"),
    (lambda m: m.update(input_axis="2"), "meta['input_axis'] must be an axis"),
    (lambda m: m.pop("output_axis"), "'input_axis' without its pair"),
    (lambda m: m.update(streaming="yes"), "meta['streaming'] must be true or false"),
    (lambda m: m.update(name=3), "meta['name'] must be a string"),
    (lambda m: m.update(reference_cycles=0), "meta['reference_cycles'] must be an integer >= 1"),
])
def test_inconsistent_meta_does_not_load(conv: Program, change: Any, words: str) -> None:
    meta = json.loads(json.dumps(conv.meta))
    change(meta)
    with pytest.raises(ProgramFormatError, match="corrupted program content") as info:
        Program.load_bytes(with_meta(conv.save_bytes(), meta))
    assert info.value.reason == "content" and words in str(info.value)


def test_meta_that_is_not_a_dict_does_not_load(mlp: Program) -> None:
    with pytest.raises(ProgramFormatError, match="meta must be a dict, not list"):
        Program.load_bytes(with_meta(mlp.save_bytes(), [1, 2]))


def test_a_program_that_would_not_load_is_not_saved(mlp: Program) -> None:
    bad = Program(config=mlp.config, cores=mlp.cores, inputs=mlp.inputs, outputs=mlp.outputs,
                  input_dests=mlp.input_dests, meta={"layers": [{"end": "x", "start": 0}]})
    with pytest.raises(ProgramError, match=r"meta\['layers'\]\[0\]\['end'\]"):
        bad.save_bytes()


@pytest.mark.parametrize("data, reason, words", [
    (b"", "magic", "the file is empty"),
    (MAGIC[:5], "magic", "5 byte\\(s\\), shorter than the 8-byte magic number"),
    (b"PK\x03\x04 a zip file", "magic", "bad magic number"),
])
def test_short_files(data: bytes, reason: str, words: str) -> None:
    with pytest.raises(ProgramFormatError, match=words) as info:
        Program.load_bytes(data)
    assert info.value.reason == reason


def test_a_corrupted_length_field_is_named(mlp: Program) -> None:
    data = bytearray(mlp.save_bytes())
    good = len(data) - _HEAD.size
    data[12:20] = struct.pack("<Q", 54_043_195_528_448_187)
    with pytest.raises(ProgramFormatError, match="length is 54,043,195,528,448,187 bytes, "
                       f"but the payload \\(whose checksum matches\\) is {good:,}") as info:
        Program.load_bytes(bytes(data))
    assert info.value.reason == "truncated"  # the format's rule, by the sizes
    # A really truncated file still says so, with both sizes.
    with pytest.raises(ProgramFormatError, match=f"announces a payload of {good:,} bytes, "
                       f"the file holds {good - 10:,}"):
        Program.load_bytes(mlp.save_bytes()[:-10])


# -- VM inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32,
                                   torch.float64])
def test_vm_takes_torch_tensors_of_every_float_dtype(mlp: Program, dtype: torch.dtype) -> None:
    x = torch.randn(16, generator=torch.Generator().manual_seed(1)).to(dtype)
    want = mlp.to_vm().run(x.float().numpy())
    np.testing.assert_array_equal(mlp.to_vm().run(x), want)
    np.testing.assert_array_equal(mlp.to_vm().run(x.clone().requires_grad_()), want)


def test_vm_takes_numpy_arrays_of_every_float_dtype(mlp: Program) -> None:
    x = np.linspace(-2, 2, 16)
    want = mlp.to_vm().run(x.astype(np.float32))
    for dtype in (np.float16, np.float64, np.longdouble):
        np.testing.assert_array_equal(mlp.to_vm().run(x.astype(dtype).astype(np.float32)),
                                      mlp.to_vm().run(x.astype(dtype)))
    np.testing.assert_array_equal(mlp.to_vm().run(x), want)


@pytest.mark.parametrize("x, words", [
    (torch.arange(16), "input 0 must have a floating dtype, not torch.int64"),
    (np.arange(16), "input 0 must have a floating dtype (float16, float32, float64 or "
                    "longdouble), not int64"),
    (np.ones(16, bool), "not bool"),
    (np.ones(16, np.complex64), "not complex64"),
    (["a"] * 16, "not <U1"),
])
def test_vm_refuses_other_dtypes_with_its_own_message(mlp: Program, x: Any,
                                                      words: str) -> None:
    with pytest.raises(ValueError) as info:
        mlp.to_vm().run(x)
    assert words in str(info.value)


def test_run_timesteps_takes_a_bf16_sequence(conv: Program) -> None:
    x = torch.randn(1, 8, 5, generator=torch.Generator().manual_seed(2)).bfloat16()
    want = conv.to_vm().run_timesteps(x.float().numpy(), 2, 2)
    np.testing.assert_array_equal(conv.to_vm().run_timesteps(x.requires_grad_(), 2, 2), want)


# -- non-finite values (docs/numerics.md, "Bad and non-finite inputs") ----------------------


def test_depthwise_conv_spreads_a_nan_over_its_block_as_documented() -> None:
    torch.manual_seed(0)
    model = vollo_torch.nn.PaddedConv1d(16, 16, 3, groups=16)
    x = torch.randn(1, 16, 5)
    x[0, 3, 1] = float("nan")
    y = compiled(model, x, 2).to_vm().run_timesteps(x.numpy(), 2, 2)
    with torch.no_grad():
        want = model(x).numpy()
    # PyTorch: channel 3 only, at the kernel_size outputs that read timestep 1.
    assert np.argwhere(~np.isfinite(want)).tolist() == [[0, 3, 1], [0, 3, 2], [0, 3, 3]]
    # The machine: every channel of that 8-channel block (diagonal tiles: 0 × NaN = NaN).
    assert (~np.isfinite(y[0, :8, 1:4])).all() and np.isfinite(y[0, 8:]).all()
    assert np.isfinite(y[0, :, [0, 4]]).all()
    finite = np.isfinite(y)  # elsewhere, the values PyTorch gives (within bf16 error)
    np.testing.assert_allclose(y[finite], want[finite], rtol=0.05, atol=0.05)


def test_an_all_zero_weight_tile_stops_a_nan_as_documented() -> None:
    torch.manual_seed(0)
    model = nn.Linear(16, 16)
    with torch.no_grad():
        model.weight[:8, 8:] = 0  # one whole 8 × 8 tile of zeros
    x = torch.randn(16)
    x[10] = float("nan")
    y = compiled(model, x).to_vm().run(x.numpy())
    with torch.no_grad():
        assert np.isnan(model(x).numpy()).all()  # PyTorch: 0 × NaN reaches every output
    assert np.isfinite(y[:8]).all() and np.isnan(y[8:]).all()
