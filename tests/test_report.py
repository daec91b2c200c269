"""Latency reports (``tidal_cli.report``): figures, formats and the timeline plot.

The figures are checked exactly on a hand-written program whose schedule is known cycle by
cycle, so that a mistake in the report cannot hide behind a mistake in the compiler.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import isa
from isa import Config, CoreImage, Dest, End, Mac, TensorLayout, Vec, VecOp, Wait
from isa.config import Depths
from isa.instructions import encode_program
from tidal_cli import report as rep

pytestmark = pytest.mark.timeout(60)


def tiny_program() -> isa.Program:
    """A c2b8 program: each core multiplies the 2-beat input by 2 tiles and outputs a beat.

    Core c: WAIT 3 (t=0, until both input beats are written), MAC (t=3), MAC (t=4), WAIT
    6 + c (t=5), VEC → output (t=11 + c, beat presented at t=16 + c), END (t=12 + c).
    The MAC at t=4 writes its accumulator at 4 + 3 + log2(8) = 10, so the VEC reads after it
    (one-stage pipelines: the cycles are counted by hand).
    """
    cfg = Config.preset("c2b8-ideal")
    b = cfg.block_size
    rng = np.random.default_rng(0)
    cores = []
    for c in range(2):
        instrs = [Wait(cycles=3),
                  Mac(acc=0, tram=0, weight=0, accumulate=0),
                  Mac(acc=0, tram=1, weight=1, accumulate=1),
                  Wait(cycles=6 + c),
                  Vec(op=VecOp.PASS_A, clamp=0, acc=0, tram=0, dest=Dest.OUTPUT, addr=0,
                      cores=0),
                  End()]
        weights = rng.standard_normal((2, b, b)).astype(np.float32)
        cores.append(CoreImage(
            instructions=encode_program(instrs),
            weights=(weights.view(np.uint32) >> 16).astype(np.uint16),
            tram_init=np.zeros((0, b), np.uint16),
            clamps=np.array([[-np.inf, np.inf]], np.float32),
            tram_used=2,
        ))
    program = isa.Program(
        config=cfg, cores=cores, inputs=[TensorLayout((16,), b)],
        outputs=[TensorLayout((16,), b)],
        input_dests=np.array([[0b11, 0], [0b11, 1]], np.uint32),
        meta={"name": "tiny", "layers": [
            {"name": "fc", "op": "linear", "tiles": 4, "macs": 256, "cores": [0, 1],
             "start": 3, "end": 17}]},
    )
    program.validate()
    return program


@pytest.fixture(scope="module")
def report() -> dict:
    return rep.build_report(tiny_program(), reference_cycles=36, reference_source="test")


def test_latency_figures(report: dict) -> None:
    lat = report["latency"]
    assert lat["spaced_cycles"] == 18  # last output beat at cycle 17
    assert lat["contiguous_cycles"] == 18
    assert (lat["first_output_cycle"], lat["last_output_cycle"]) == (16, 17)
    assert lat["spaced_us"] == pytest.approx(18 / 320)
    assert lat["ideal_compute_cycles"] == 2  # ceil(4 tiles / 2 cores)
    assert lat["utilisation"] == pytest.approx(2 / 18)
    assert (lat["total_weight_tiles"], lat["total_macs"]) == (4, 256)


def test_reference(report: dict) -> None:
    ref = report["reference"]
    assert ref == {"name": "tiny", "cycles": 36, "us": pytest.approx(36 / 320),
                   "ratio": pytest.approx(0.5), "source": "test"}
    assert rep.build_report(tiny_program())["reference"] is None


@pytest.mark.parametrize("cycles", [0, -5, 1.5, True])
def test_reference_must_be_a_positive_integer(cycles: object) -> None:
    # Zero once divided by zero; a negative or fractional count is meaningless.
    with pytest.raises(ValueError, match="reference_cycles must be an integer of at least 1"):
        rep.build_report(tiny_program(), reference_cycles=cycles)  # type: ignore[arg-type]


def test_per_core_breakdown(report: dict) -> None:
    for c, core in enumerate(report["cores"]):
        assert core["mac_cycles"] == 2
        assert core["vec_cycles"] == 1
        assert core["wait_cycles"] == 3 + 6 + c
        assert core["end_cycle"] == 12 + c
        # Every cycle up to END is accounted for by exactly one kind.
        assert core["mac_cycles"] + core["vec_cycles"] + core["wait_cycles"] \
            == core["end_cycle"]
        assert (core["instructions"], core["weight_tiles"], core["output_beats"]) == (6, 2, 1)
        assert core["utilisation"] == pytest.approx(2 / 18)
    mem = report["memory"][1]
    assert mem["weight_store"] == {"used": 2, "depth": 512, "fraction": 2 / 512}
    assert mem["accum_store"]["used"] == 1
    assert mem["clamp_store"]["used"] == 1
    assert mem["tensor_ram"]["used"] == 2


def test_accumulators_written_by_other_cores() -> None:
    # Dest.ACCS writes accumulators of the cores in its mask: they count as used there.
    program = tiny_program()
    program.cores[0].instructions = encode_program([
        Vec(op=VecOp.PASS_A, clamp=0, acc=0, tram=0, dest=Dest.ACCS, addr=9, cores=0b10),
        End()])
    memory = rep.build_report(program)["memory"]
    assert [m["accum_store"]["used"] for m in memory] == [1, 10]


def test_per_layer_breakdown(report: dict) -> None:
    (layer,) = report["layers"]
    assert layer["cycles"] == 15  # first issue (3) to last write (17), both included
    assert layer["ideal_cycles"] == 2
    assert layer["busy"] == pytest.approx(4 / (2 * 15))


def test_timeline(report: dict) -> None:
    tl = report["timeline"]
    assert tl["input_beats"] == 2
    assert tl["output_beats"] == [16, 17]
    assert tl["cores"][1] == [
        {"kind": "wait", "start": 0, "length": 3},
        {"kind": "mac", "start": 3, "length": 2},
        {"kind": "wait", "start": 5, "length": 7},
        {"kind": "vec", "start": 12, "length": 1},
    ]


def test_json_schema_keys(report: dict) -> None:
    data = json.loads(json.dumps(report))
    assert data["schema_version"] == rep.SCHEMA_VERSION == 2
    assert data["compute_only"] is True
    assert set(data) == {"schema_version", "compute_only", "notes", "program", "models",
                         "reset", "latency", "reference", "layers", "cores", "memory",
                         "timeline"}
    assert data["reset"] is None  # hand-built: no reset entry (tests/test_cli_sequences.py)
    assert {"spaced_cycles", "spaced_us", "contiguous_cycles", "contiguous_us", "clock_mhz",
            "ideal_compute_cycles", "utilisation"} <= set(data["latency"])
    assert {"name", "op", "cores", "start", "end", "tiles", "macs", "busy"} \
        <= set(data["layers"][0])
    assert {"mac_cycles", "instructions", "weight_tiles", "tensor_ram_blocks",
            "utilisation"} <= set(data["cores"][0])


def test_schema_doc_lists_every_key(report: dict) -> None:
    # The documented schema must not fall behind the code.
    doc = (Path(__file__).resolve().parents[1] / "docs" / "report-schema.md").read_text()
    keys = set(report) | set(report["latency"]) | set(report["program"]) \
        | set(report["layers"][0]) | set(report["cores"][0]) | set(report["memory"][0]) \
        | set(report["timeline"]) | set(report["reference"]) | set(report["models"][0])
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/report-schema.md does not document {missing}"


def test_text_report(report: dict) -> None:
    text = rep.render_text(report)
    assert "tiny on ip_core_c2b8" in text
    assert "Compute only (no host I/O)" in text and "320 MHz" in text
    assert "18 cycles" in text and "0.50×" in text
    assert "pipeline depths" in text and "ideal: mem_read=1 bf16_mul=1" in text
    assert "Layers" in text and "fc" in text and "Cores" in text and "Memory" in text


def test_report_states_the_depths() -> None:
    # Every rendering says which pipeline depths its cycle counts assume.
    program = tiny_program()
    assert rep.depths_kind(program.config.depths) == "ideal"
    realistic = rep.build_report(isa.Program(
        config=program.config.with_depths(Depths.realistic()), cores=program.cores,
        inputs=program.inputs, outputs=program.outputs, input_dests=program.input_dests,
        meta={"name": "tiny"}))
    assert realistic["latency"]["depths_kind"] == "realistic"
    assert realistic["latency"]["depths"]["fp32_add"] == Depths.realistic().fp32_add
    note = "Cycle counts assume the realistic pipeline depths: mem_read="
    assert any(n.startswith(note) for n in realistic["notes"])
    assert note in rep.render_text(realistic) and note in rep.render_markdown(realistic)
    custom = program.config.with_depths(Depths(fp32_add=5))
    assert rep.depths_kind(custom.depths) == "custom"


def test_markdown_report(report: dict) -> None:
    md = rep.render_markdown(report, plot="timeline.png")
    assert md.startswith("# Latency report: tiny")
    assert "![Timeline of the cores (compute only, no host I/O)](timeline.png)" in md
    assert "| # | layer | op | cores |" in md
    assert "| 0 | fc | linear | 0,1 | 3 | 17 | 15 | 4 | 256 | 2 | 13.3 % |" in md


def test_html_report(report: dict, tmp_path: Path) -> None:
    png = rep.plot_timeline(report, tmp_path / "t.png")
    page = rep.render_html(report, plot=png)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<table>" in page and "<td class=\"l\">fc</td>" in page
    assert 'src="data:image/png;base64,' in page
    assert "Compute only (no host I/O)" in page


def test_plot_from_program(tmp_path: Path) -> None:
    png = rep.plot_timeline(tiny_program(), tmp_path / "timeline.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
