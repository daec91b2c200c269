"""Co-simulation: compiled programs on the RTL (Icarus and Verilator) against the VM.

The tests marked ``cosim`` launch simulators; the others check the harness itself (input
conversion, memory images, trace parsing, the lean Verilator runner, the comparison's
bookkeeping) in plain Python. Builds are kept in the build cache outside the clone
(``sim/cosim/cache.py``, keyed by the configuration and the content of ``rtl/`` and ``isa/``), so
a re-run only pays for simulation. A missing simulator fails the test in CI and under
``make test`` (``need`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import dataclasses
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import need, simulators_for
from torch import nn

import compiler.frontend as vollo_torch
from isa.config import Config, Depths
from isa.instructions import Dest, End, Mac, Vec, Wait, decode_program, encode_program
from isa.numerics import VecOp, f32_to_bf16_bits
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import latencies
from sim.cosim import (
    RtlError,
    compare,
    compare_runs,
    input_beats,
    parse_rtl_trace,
    random_inputs,
    run_rtl,
    toolchain,
    vm_reference,
    watchdog_cycles,
)

# -- programs ---------------------------------------------------------------------------------


def gap(cycles: int) -> list[Wait]:
    """Return what puts the next instruction ``cycles`` (≥ 1) after the current one."""
    return [Wait(cycles - 1)] if cycles > 1 else []


class _MLP(nn.Module):
    def __init__(self, sizes: list[int], relu: list[bool]) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, relu in zip(self.linears, self.relu, strict=True):
            x = linear(x)
            x = F.relu(x) if relu else x
        return x


class _CNN(nn.Module):
    def __init__(self, chans: list[int], kernels: list[int], relu: list[bool]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(vollo_torch.nn.PaddedConv1d(a, b, k)
                                   for (a, b), k in zip(pairwise(chans), kernels,
                                                          strict=True))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, relu in zip(self.convs, self.relu, strict=True):
            x = conv(x)
            x = F.relu(x) if relu else x
        return x


def random_program(kind: str, seed: int, config: Config) -> Program:
    """Return a compiled random streamable CNN (``"cnn"``) or MLP (``"mlp"``).

    1–3 layers of 1–3·B channels (so that layers span one to three blocks and tile
    boundaries fall inside vectors), ReLU or not per layer, kernels of 1–3 for the CNN.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    b = config.block_size
    n = int(rng.integers(1, 4))
    chans = [int(c) for c in rng.integers(1, 3 * b + 1, n + 1)]
    relu = [bool(r) for r in rng.integers(0, 2, n)]
    if kind == "mlp":
        model: nn.Module = _MLP(chans, relu)
        x, axis = torch.randn(1, chans[0]), None
    else:
        kernels = [int(k) for k in rng.integers(1, 4, n)]
        model = _CNN(chans, kernels, relu)
        x, axis = torch.randn(1, chans[0], 6), 2
    model, _ = vollo_torch.fx.prepare_shape(model.eval(), x)
    nnir = vollo_torch.fx.nnir.to_nnir(model)
    if axis is not None:
        nnir, _ = nnir.streaming_transform(axis)
    return nnir.to_program(config, name=f"random {kind} {seed} ({chans})")


def seed_cnn_program() -> Program:
    """Return the seed example's CNN compiled for the C6B32 (``examples/models.py``)."""
    from examples.models import seed_cnn

    model, x = seed_cnn()
    model, _ = vollo_torch.fx.prepare_shape(model, x)
    nnir, _ = vollo_torch.fx.nnir.to_nnir(model).streaming_transform(2)
    return nnir.to_program(Config.ia_420f_c6b32(), name="seed_cnn")


def hand_program(config: Config | None = None) -> Program:
    """Return a hand-written program exercising input, MAC, VEC and persistent state.

    Per inference: output beat 0 = the input beat (``PASS_T``); the input is also copied to
    tensor RAM 5; acc[1] += 2·x (state across inferences); output beat 1 = acc[1] + 0.5.
    """
    cfg = config or Config.ip_core(1, 4)
    b = cfg.block_size
    lat = latencies(cfg)
    instrs = [
        Wait(lat.input_write + 1),                      # the input beat has landed
        Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=0, dest=Dest.OUTPUT, addr=0, cores=0),
        Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=0, dest=Dest.TRAM, addr=5, cores=1),
        Mac(acc=1, tram=0, weight=0, accumulate=1),
        *gap(lat.mac_acc_write + 1),                    # its write has landed
        Vec(op=VecOp.ADD, clamp=0, acc=1, tram=1, dest=Dest.OUTPUT, addr=0, cores=0),
        End(),
    ]
    unbounded = np.array([[-np.inf, np.inf]], np.float32)
    core0 = CoreImage(
        instructions=encode_program(instrs),
        weights=f32_to_bf16_bits(2 * np.eye(b, dtype=np.float32))[None],
        tram_init=np.vstack([np.zeros((1, b), np.uint16),
                             f32_to_bf16_bits(np.full((1, b), 0.5, np.float32))]),
        clamps=unbounded, tram_used=6)
    idle = [CoreImage(encode_program([End()]), np.zeros((0, b, b), np.uint16),
                      np.zeros((0, b), np.uint16), unbounded) for _ in range(cfg.num_cores - 1)]
    program = Program(cfg, [core0, *idle], [TensorLayout((b,), b)],
                      [TensorLayout((2 * b,), b)], np.array([[1, 0]], np.uint32),
                      {"name": "hand"})
    program.validate()
    return program


def accs_chain_program(config: Config | None = None, seed: int = 0) -> Program:
    """Return a hand-written program that splits one MAC chain across two cores (``c2b8``).

    Per inference, with the input beat x in both cores' tensor RAM 0: core 0 accumulates
    tiles 0–2 (the first on x) into acc[1], its MACs as close as the accumulate loop allows,
    and moves the fp32 partial sum with ``Dest.ACCS`` to acc[2] of both cores (own and
    remote write); output beat 0 is that partial sum; core 1 continues the chain with tiles
    3–5 (``MAC accumulate=1``) as early as the schedule allows, and output beat 1 is the
    final sum plus a bias row. Every distance is derived from :func:`latencies`.
    """
    cfg = config or Config.ip_core(2, 8)
    b = cfg.block_size
    rng = np.random.default_rng(seed)
    tiles = 6
    weights = f32_to_bf16_bits(rng.standard_normal((tiles, b, b)).astype(np.float32) / 2)
    rows = f32_to_bf16_bits(rng.standard_normal((tiles + 1, b)).astype(np.float32))
    rows[0] = 0                                         # tensor RAM 0: the input beat
    lat = latencies(cfg)
    sp = lat.mac_spacing
    start = lat.input_write + 1                         # x has landed
    send = start + 2 * sp + lat.mac_acc_write + 1       # the last MAC's write has landed
    core0 = [
        Wait(start),
        Mac(acc=1, tram=0, weight=0, accumulate=0), *gap(sp),
        Mac(acc=1, tram=1, weight=1, accumulate=1), *gap(sp),
        Mac(acc=1, tram=2, weight=2, accumulate=1), *gap(lat.mac_acc_write + 1),
        Vec(op=VecOp.PASS_A, clamp=0, acc=1, tram=0, dest=Dest.ACCS, addr=2,
            cores=0b11),                                # in cycle `send`
        *gap(lat.vec_local_write + 1),
        Vec(op=VecOp.PASS_A, clamp=0, acc=2, tram=0, dest=Dest.OUTPUT, addr=0, cores=0),
        End(),
    ]
    # Core 1's first accumulate-read is the cycle after the partial sum's arrival.
    resume = max(send + 1, send + lat.vec_remote_write + 1 - lat.mac_acc_read)
    core1 = [
        Wait(resume),
        Mac(acc=2, tram=3, weight=3, accumulate=1), *gap(sp),
        Mac(acc=2, tram=4, weight=4, accumulate=1), *gap(sp),
        Mac(acc=2, tram=5, weight=5, accumulate=1), *gap(lat.mac_acc_write + 1),
        Vec(op=VecOp.ADD, clamp=0, acc=2, tram=tiles, dest=Dest.OUTPUT, addr=0, cores=0),
        End(),
    ]
    unbounded = np.array([[-np.inf, np.inf]], np.float32)
    images = [CoreImage(encode_program(instrs), weights, rows, unbounded)
              for instrs in (core0, core1)]
    program = Program(cfg, images, [TensorLayout((b,), b)], [TensorLayout((2 * b,), b)],
                      np.array([[0b11, 0]], np.uint32), {"name": "accs chain"})
    program.validate()
    return program


# -- the harness in plain Python ------------------------------------------------------------


def test_input_beats_accepts_beats_and_floats() -> None:
    program = random_program("mlp", 1, Config.ip_core(1, 4))      # 7 inputs: 2 beats
    layout = program.inputs[0]
    x = np.linspace(-2, 2, layout.channels).astype(np.float32).reshape(layout.shape)
    beats = input_beats(program, x)
    assert beats.dtype == np.uint16 and beats.shape == (layout.beats, 4)
    assert (beats.reshape(-1)[layout.channels:] == 0).all()       # padding lanes
    np.testing.assert_array_equal(beats.reshape(-1)[:layout.channels],
                                  f32_to_bf16_bits(x).reshape(-1))
    assert input_beats(program, beats) is beats
    with pytest.raises(ValueError, match="shape"):
        input_beats(program, np.zeros((3, 4), np.uint16))
    with pytest.raises(ValueError, match="does not fit"):
        input_beats(program, np.zeros(layout.channels + 1, np.float32))
    again = random_inputs(program, 3, seed=7)
    assert len(again) == 3 and all(b.shape == beats.shape for b in again)
    np.testing.assert_array_equal(again[0], random_inputs(program, 1, seed=7)[0])


def test_parse_rtl_trace_splits_inferences() -> None:
    program = hand_program()
    text = "# comment\n0 0 0\n2 0 1\n\n12 0 6\ndone 16\n0 0 0\n2 0 1\n"
    traces = parse_rtl_trace(text, program)
    assert [[(r.cycle, r.pc) for r in t] for t in traces] == [[(0, 0), (2, 1), (12, 6)],
                                                              [(0, 0), (2, 1)]]
    assert traces[0][1].word == int(program.cores[0].instructions[1])
    with pytest.raises(RtlError, match="trace line 1"):
        parse_rtl_trace("0 0 99\n", program)


def test_lean_verilator_build_command() -> None:
    """The runner hook the lean build overrides still exists and gets the flags through."""
    need("verilator")
    runner = toolchain.LeanVerilator()
    runner.build_dir = Path("/nonexistent")
    runner._set_sources([Path("tidal.vlt"), Path("top.v")])
    runner._set_verilog_sources([])
    runner._set_build_args(toolchain.verilator_build_args(waves=True))
    runner.hdl_toplevel, runner.waves, runner.timescale = "tidal_top", True, None
    runner.defines, runner.includes, runner.parameters = {}, [], {}
    verilate, make = runner._build_command()
    assert "--public-flat-rw" not in verilate and "--trace" not in verilate
    assert verilate[verilate.index("--public-depth") + 1] == "1"
    assert {"--trace-fst", "-fno-dfg", "-Wno-fatal"} <= set(verilate)
    assert "OPT_FAST=-O2" in make


def test_comparison_that_compares_nothing_fails() -> None:
    """Harness self-check: no inference, or an empty RTL run, is never OK."""
    program = hand_program()
    report = compare(program, inputs=[], simulator="icarus")   # launches nothing
    assert not report.ok and report.values_compared == 0
    assert "nothing was compared" in report.summary()
    vm = vm_reference(program, random_inputs(program, 2))
    report = compare_runs(program, vm, None, "RTL did not start", "icarus")
    assert not report.ok and report.values_compared == 0
    assert report.first_divergence is not None and report.first_divergence.kind == "error"


def test_watchdog_limit() -> None:
    program = hand_program()
    base = program.cycle_count_per_inference(spaced=False)
    assert watchdog_cycles(program) == base + 16 + base // 16
    assert watchdog_cycles(program, 100) == 100 + 16 + 6


# -- simulations ------------------------------------------------------------------------------

CORPUS = [("mlp", 0, "c1b4"), ("cnn", 1, "c1b4"), ("cnn", 3, "c1b4"),
          ("mlp", 1, "c2b8"), ("cnn", 0, "c2b8"), ("cnn", 1, "c2b8"),
          ("cnn", 2, "c2b8-ideal")]

#: Depths no preset uses: a latency written anywhere but isa/ would break these.
UNUSUAL = Depths(mem_read=3, bf16_mul=1, fp32_add=4, vec_mul=3, norm_round=3, clamp_round=1,
                 link=3, output=2)


@pytest.mark.cosim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind, seed, config, simulator",
                         [(k, s, c, sim) for k, s, c in CORPUS for sim in simulators_for(c)],
                         ids=lambda v: str(v))
def test_corpus_matches_vm(simulator: str, kind: str, seed: int, config: str) -> None:
    """Random compiled CNNs and MLPs: bit- and cycle-exact over 5 timesteps."""
    need(simulator)
    program = random_program(kind, seed, Config.preset(config))
    report = compare(program, random=5, simulator=simulator, seed=seed)
    assert report.ok, report.summary()
    assert report.output_values >= 5 and report.trace_records > 0


#: The machines at the unusual depths.
UNUSUAL_CONFIGS = {"c2b8_unusual": Config.ip_core(2, 8, depths=UNUSUAL, name="c2b8_unusual"),
                   "c1b4_unusual": Config.ip_core(1, 4, depths=UNUSUAL, name="c1b4_unusual")}


class _NormMLP(nn.Module):
    """Linear 160 -> 16, RMSNorm (no weight), ReLU Linear 16 -> 16: sums of 20 blocks on
    c2b8, long enough to be cut in two, and a Linear scaled after its norm."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(160, 16), nn.Linear(16, 16)
        self.norm = nn.RMSNorm(16, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.down(self.norm(self.up(x))))


@pytest.mark.cosim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("simulator", simulators_for("c2b8"))
def test_cut_sums_and_scaled_linear_match_vm(simulator: str) -> None:
    """The compiler's cut sums (a bf16 partial added by the finishing VEC) and a Linear
    scaled after its norm: bit- and cycle-exact."""
    need(simulator)
    torch.manual_seed(6)
    x = torch.randn(1, 160)
    model, _ = vollo_torch.fx.prepare_shape(_NormMLP().eval(), x)
    program = vollo_torch.fx.nnir.to_nnir(model).to_program(Config.preset("c2b8"))
    layers = {(layer["name"], layer["op"]): layer for layer in program.meta["layers"]}
    assert layers["up", "linear"]["partial_sums"] > 0
    # The Linear after the norm starts before the norm's rsqrt is known.
    assert layers["down", "linear"]["start"] < layers["norm", "fn"]["end"]
    report = compare(program, random=3, simulator=simulator, seed=6)
    assert report.ok, report.summary()
    assert report.output_values > 0


@pytest.mark.cosim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name, simulator", [(n, s) for n, c in UNUSUAL_CONFIGS.items()
                                             for s in simulators_for(c)])
def test_unusual_depths_match_vm(name: str, simulator: str) -> None:
    """Every latency comes from isa: a compiled CNN and the hand-built programs at depths
    no preset uses are bit- and cycle-exact."""
    need(simulator)
    cfg = UNUSUAL_CONFIGS[name]
    programs = ((random_program("cnn", 4, cfg), accs_chain_program(cfg))
                if cfg.num_cores > 1 else (hand_program(cfg),))
    for program in programs:
        report = compare(program, random=3, simulator=simulator, seed=2)
        assert report.ok, report.summary()
        assert report.output_values > 0


@pytest.mark.cosim
@pytest.mark.timeout(600)
# Icarus: the multi-core machine that simulator runs under make test (tests/conftest.py).
@pytest.mark.parametrize("simulator", ["icarus"])
def test_accs_chain_matches_vm(simulator: str) -> None:
    """A MAC chain split across two cores with ``Dest.ACCS`` (local and remote fp32
    accumulator writes, MAC accumulating on a received partial sum): bit- and cycle-exact,
    accumulators included."""
    need(simulator)
    program = accs_chain_program()
    report = compare(program, random=4, simulator=simulator, seed=3)
    assert report.ok, report.summary()
    assert report.output_values == 4 * 2 * program.config.block_size


@pytest.mark.cosim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("simulator", simulators_for("c2b8-ideal"))
def test_compiled_split_reduction_matches_vm(simulator: str) -> None:
    """A compiled MLP whose reduction the compiler splits across cores (``Dest.ACCS``
    hand-over): bit- and cycle-exact."""
    need(simulator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 24), nn.ReLU(), nn.Linear(24, 64), nn.ReLU())
    gm, _ = vollo_torch.fx.prepare_shape(model, torch.randn(1, 128))
    # At realistic depths a split no longer pays for this shape; at ideal ones it does.
    program = vollo_torch.fx.nnir.to_nnir(gm).to_program(Config.preset("c2b8-ideal"))
    dests = {i.dest for core in program.cores for i in decode_program(core.instructions)
             if isinstance(i, Vec)}
    assert Dest.ACCS in dests, "the compiler no longer splits this MLP: pick another shape"
    report = compare(program, random=4, simulator=simulator, seed=5)
    assert report.ok, report.summary()
    assert report.output_values == 4 * 64


@pytest.mark.cosim
@pytest.mark.cosim
@pytest.mark.timeout(300)
def test_hand_program_state_and_cycles() -> None:
    """A hand-written program: exact outputs, cycles, persistent state and trace."""
    need("icarus")
    program = hand_program()
    xs = [np.arange(4, dtype=np.float32) + k for k in range(3)]
    result = run_rtl(program, xs, simulator="icarus")
    acc = np.zeros(4, np.float32)
    for k, x in enumerate(xs):
        acc += 2 * x
        want = f32_to_bf16_bits(np.stack([x, acc + 0.5]))
        np.testing.assert_array_equal(result.outputs[k], want)
    outs, done = program.output_cycles(), program.done_cycle()
    cycles = program.cycle_count_per_inference()
    assert result.output_cycles == [outs] * 3 and result.cycles == [cycles] * 3
    assert result.done_cycles == [done] * 3
    np.testing.assert_array_equal(result.state["tram"][0][5], f32_to_bf16_bits(xs[-1]))
    np.testing.assert_array_equal(result.state["acc"][0][1], acc.view(np.uint32))
    n_instrs = len(decode_program(program.cores[0].instructions))
    assert [r.pc for r in result.trace[2]] == list(range(n_instrs))
    assert result.simulated_cycles >= 3 * cycles and result.cycles_per_second > 0


@pytest.mark.cosim
@pytest.mark.timeout(300)
def test_watchdog_stops_a_late_inference() -> None:
    """An inference that runs past its limit fails with a clear message; nothing hangs."""
    need("icarus")
    program = hand_program()
    first, second = program.output_cycles()
    limit = watchdog_cycles(program, 0)
    assert first < limit <= second, "the limit must fall between the two output beats"
    with pytest.raises(RtlError, match=f"RTL did not finish inference 0 within {limit} cycles"
                       ) as info:
        run_rtl(program, random_inputs(program, 2), simulator="icarus", timeout_cycles=0)
    partial = info.value.result
    assert partial is not None and partial.output_cycles == [[first]]


@pytest.mark.cosim
@pytest.mark.timeout(300)
@pytest.mark.parametrize("simulator", simulators_for(hand_program().config))
def test_output_stall_is_an_error(simulator: str) -> None:
    """The machine cannot stall: a host holding ``out_ready`` low gets ``error`` in the
    cycle of the first output beat."""
    need(simulator)
    program = hand_program()
    first = program.output_cycles()[0]
    with pytest.raises(RtlError, match=f"RTL raised error in cycle {first} of inference 0"):
        run_rtl(program, random_inputs(program, 1), simulator=simulator, stall_output=True)


@pytest.mark.cosim
@pytest.mark.timeout(300)
def test_waves() -> None:
    """``waves=True`` writes an FST waveform from a separate model (Icarus here; Verilator's
    ``--trace-fst`` model is built the same way, its command line is checked above)."""
    need("icarus")
    program = hand_program()
    result = run_rtl(program, random_inputs(program, 2), simulator="icarus", waves=True)
    assert result.waves is not None and result.waves.suffix == ".fst"
    assert result.waves.stat().st_size > 1000
    assert result.build.sim_dir.name.startswith("icarus-waves-")


@pytest.mark.cosim
@pytest.mark.timeout(600)
def test_broken_rtl_is_caught() -> None:
    """The deliberately broken RTL (truncating bf16 rounding) plants a wrong write: the
    report names it (the first wrong write, before any wrong output), with the VM's record
    of the instruction that wrote it."""
    need("icarus")
    program = random_program("mlp", 1, Config.ip_core(1, 4))
    report = compare(program, random=3, simulator="icarus", rtl_variant="rounding")
    assert not report.ok and not report.writes_equal
    div = report.first_divergence
    assert div is not None, report.summary()
    assert div.kind == "write" and div.where.startswith("core 0 tram["), report.summary()
    outputs = [d for d in report.divergences if d.kind == "output"]
    assert outputs and (div.inference, div.cycle) < (outputs[0].inference, outputs[0].cycle)
    # The named write is the VM's write of that place and cycle, by that instruction.
    vm = vm_reference(program, random_inputs(program, 3))
    core, rest = div.where.split(" tram[")
    addr = int(rest.split("]")[0])
    (rec,) = [w for w in vm.writes[div.inference] if w.cycle == div.cycle
              and w.memory == "tram" and w.addr == addr and f"core {w.core}" == core]
    assert (rec.src_core, rec.src_pc) == (div.core, div.pc)
    # Every write before it is equal on both sides.
    assert report.rtl is not None
    rtl_writes = report.rtl.writes[div.inference]
    before = [w[:5] for w in vm.writes[div.inference] if w.memory != "out"
              and (w.cycle, w.core) < (rec.cycle, rec.core)]
    assert before == [w[:5] for w in rtl_writes if (w.cycle, w.core) < (rec.cycle, rec.core)]
    assert div.inference >= 0 and div.cycle >= 0 and div.core >= 0 and div.pc >= 0
    assert div.instruction.startswith("vec"), div
    assert "lane" in div.where and "first divergence" in report.summary()
    assert report.output_mismatches + report.state_mismatches > 0


def test_report_fields_are_documented() -> None:
    """Every CompareReport field appears in its docstring (the report is an API)."""
    from sim.cosim import CompareReport

    doc = CompareReport.__doc__ or ""
    for field in dataclasses.fields(CompareReport):
        assert field.name in doc, field.name
