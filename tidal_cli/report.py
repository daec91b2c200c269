"""Latency reports of compiled programs: cycles, utilisation, per-layer and per-core figures.

:func:`build_report` turns a :class:`isa.Program` into a plain, JSON-serialisable dict (its
schema is ``docs/report-schema.md``); :func:`render_text`, :func:`render_markdown` and
:func:`render_html` format that dict, and :func:`plot_timeline` draws its Gantt chart of the
cores. Everything is derived statically from the program: the machine never stalls, so the
issue cycle of every instruction, and with it every figure here, is a property of the
program alone (``docs/architecture.md`` §2 and §6). The figures are the VM's and the RTL's
cycle counts by construction.

All figures are compute-only (no host I/O), and microseconds assume the design runs at the
configuration's clock (the realism rules of the architecture brief).
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isa import Dest, Mac, Program, Vec, Wait
from isa.config import Depths
from isa.instructions import End, Fn
from isa.program import MODEL_SETUP
from isa.timing import OUT, accesses

__all__ = [
    "SCHEMA_VERSION", "COMPUTE_ONLY_NOTE", "DEPTHS_NOTE", "depths_kind", "build_report",
    "render_text", "render_markdown", "render_html", "plot_timeline",
]

#: Version of the report dict's layout; bumped on any incompatible change of a key.
SCHEMA_VERSION = 2

#: The caveat every rendering of a report carries.
COMPUTE_ONLY_NOTE = ("Compute only (no host I/O); µs assume the design runs at the "
                     "configuration's clock ({clock:g} MHz).")

#: The second caveat: which pipeline depths the cycle counts assume.
DEPTHS_NOTE = "Cycle counts assume the {kind} pipeline depths: {depths}."


def depths_kind(depths: Depths) -> str:
    """Return ``"realistic"`` or ``"ideal"`` for the preset depths, else ``"custom"``."""
    if depths == Depths.realistic():
        return "realistic"
    return "ideal" if depths == Depths.ideal() else "custom"


# -- building ----------------------------------------------------------------------------


def _runs(cycles: Sequence[int], kind: str) -> list[dict[str, Any]]:
    """Merge sorted single cycles into runs of consecutive cycles."""
    out: list[dict[str, Any]] = []
    for t in cycles:
        if out and out[-1]["start"] + out[-1]["length"] == t:
            out[-1]["length"] += 1
        else:
            out.append({"kind": kind, "start": t, "length": 1})
    return out


def _core_schedule(program: Program, c: int, acc_top: list[int], model_index: int
                   ) -> dict[str, Any]:
    """Return one core's static schedule of model ``model_index``: counts and timeline
    segments.

    ``acc_top`` (per core: highest accumulator address used + 1) is raised for every
    accumulator this core reads or writes, its own or, through ``Dest.ACCS``, another's.
    """
    instrs, issue = program.model_code(model_index)[c]
    macs: list[int] = []
    vecs: list[int] = []
    fns: list[int] = []
    waits: list[dict[str, Any]] = []
    outputs: list[int] = []
    end = 0
    for instr, t in zip(instrs, issue, strict=True):
        if isinstance(instr, Mac):
            macs.append(t)
            acc_top[c] = max(acc_top[c], instr.acc + 1)
        elif isinstance(instr, Vec):
            vecs.append(t)
            acc_top[c] = max(acc_top[c], instr.acc + 1)
            if instr.dest == Dest.ACC:
                acc_top[c] = max(acc_top[c], instr.addr + 1)
            elif instr.dest == Dest.ACCS:
                for d in range(len(acc_top)):
                    if instr.cores >> d & 1:
                        acc_top[d] = max(acc_top[d], instr.addr + 1)
            outputs += [a.cycle for a in accesses(program.config, instr, c, t)
                        if a.memory == OUT]
        elif isinstance(instr, Fn):
            fns.append(t)
            if instr.dest == Dest.ACC:
                acc_top[c] = max(acc_top[c], instr.addr + 1)
        elif isinstance(instr, Wait):
            # The WAIT's own issue slot and the gap after it: no instruction issues in them.
            waits.append({"kind": "wait", "start": t, "length": instr.cycles})
        elif isinstance(instr, End):
            end = t
    segments = _runs(macs, "mac") + _runs(vecs, "vec") + _runs(fns, "fn") + waits
    segments.sort(key=lambda s: s["start"])
    return {
        "mac_cycles": len(macs),
        "vec_cycles": len(vecs),
        "fn_cycles": len(fns),
        "wait_cycles": sum(w["length"] for w in waits),
        "end_cycle": end,
        "outputs": outputs,
        "segments": segments,
    }


def _fraction(used: int, depth: int) -> dict[str, Any]:
    return {"used": int(used), "depth": int(depth), "fraction": used / depth if depth else 0.0}


def _layer_entry(index: int, layer: dict[str, Any], num_cores: int) -> dict[str, Any]:
    """Normalise one ``meta["layers"]`` record and add the derived figures."""
    cores = layer.get("cores", [])
    cores = list(range(cores)) if isinstance(cores, int) else [int(c) for c in cores]
    tiles = int(layer.get("tiles", 0))
    start, end = layer.get("start"), layer.get("end")
    # The compiler records the first issue and the last write: both cycles belong to it.
    span = end - start + 1 if start is not None and end is not None else None
    busy = tiles / (len(cores) * span) if span and cores else None
    return {
        "index": index,
        "name": str(layer.get("name", f"layer{index}")),
        "op": str(layer.get("op", "?")),
        "cores": cores,
        "start": start,
        "end": end,
        "cycles": span,
        "tiles": tiles,
        "macs": int(layer.get("macs", 0)),
        "ideal_cycles": -(-tiles // num_cores),
        "busy": busy,
    }


def _model_summary(program: Program, k: int) -> dict[str, Any]:
    """Return the ``models`` entry of model ``k`` (its name, cores and latency)."""
    cfg, model = program.config, program.model(k)
    spaced = program.cycle_count_per_inference(spaced=True, model_index=k)
    contiguous = program.cycle_count_per_inference(spaced=False, model_index=k)
    return {
        "index": k,
        "name": model.meta.get("name"),
        "cores": model.meta.get("cores", list(range(cfg.num_cores))),
        "entry_pc": model.entry,
        "spaced_cycles": spaced,
        "spaced_us": spaced / cfg.clock_mhz,
        "contiguous_cycles": contiguous,
        "contiguous_us": contiguous / cfg.clock_mhz,
    }


def _reset_summary(program: Program) -> dict[str, Any] | None:
    """Return the ``reset`` entry: the reset entry's index, pc and cycle cost, or None."""
    if program.reset is None:
        return None
    cfg, cycles = program.config, program.reset_cycles()
    return {
        "model_index": program.reset_index,
        "entry_pc": program.reset.entry,
        "cycles": cycles,
        "us": cycles / cfg.clock_mhz,
        "model_setup_cycles": MODEL_SETUP,
    }


def build_report(program: Program, reference_cycles: int | None = None,
                 reference_name: str | None = None,
                 reference_source: str | None = None, model_index: int = 0) -> dict[str, Any]:
    """Return the latency report of a program as a JSON-serialisable dict.

    Parameters
    ----------
    program : isa.Program
        A compiled program (``compiler.Program`` is one).
    model_index : int
        In a multi-model program, the model the latency, layer, core and timeline figures
        are for; ``models`` summarises every model, ``memory`` is the whole program's.
    reference_cycles : int, optional
        The published cycle count of the same model shape on the reference compiler, shown
        beside ours with the ratio. Default: ``program.meta["reference_cycles"]`` if the
        compiler recorded one, else none.
    reference_name : str, optional
        What the reference figure is for (default: the program's name).
    reference_source : str, optional
        Where the reference figure comes from.

    Returns
    -------
    dict
        The report; ``docs/report-schema.md`` documents every key.

    Raises
    ------
    ValueError
        If ``reference_cycles`` is not an integer of at least 1, or there is no model
        ``model_index``.
    """
    model = program.model(model_index)
    if reference_cycles is not None and (isinstance(reference_cycles, bool) or
                                         not isinstance(reference_cycles, int) or
                                         reference_cycles < 1):
        raise ValueError(f"reference_cycles must be an integer of at least 1, not "
                         f"{reference_cycles!r}")
    cfg = program.config
    meta = model.meta
    metrics = program.metrics(model_index)
    spaced = program.cycle_count_per_inference(spaced=True, model_index=model_index)
    contiguous = program.cycle_count_per_inference(spaced=False, model_index=model_index)
    outputs = program.output_cycles(model_index)
    acc_used = [0] * cfg.num_cores
    schedules = [_core_schedule(program, c, acc_used, model_index)
                 for c in range(cfg.num_cores)]
    ideal = int(metrics["ideal_compute_cycles"])

    if reference_cycles is None and meta.get("reference_cycles") is not None:
        reference_cycles = int(meta["reference_cycles"])
    reference = None
    if reference_cycles is not None:
        reference = {
            "name": reference_name or meta.get("name"),
            "cycles": int(reference_cycles),
            "us": reference_cycles / cfg.clock_mhz,
            "ratio": spaced / reference_cycles,
            "source": reference_source or meta.get("reference_source"),
        }

    cores = []
    memory = []
    for c, (core, sched) in enumerate(zip(program.cores, schedules, strict=True)):
        cores.append({
            "core": c,
            "mac_cycles": sched["mac_cycles"],
            "vec_cycles": sched["vec_cycles"],
            "fn_cycles": sched["fn_cycles"],
            "wait_cycles": sched["wait_cycles"],
            "end_cycle": sched["end_cycle"],
            "instructions": len(core.instructions),
            "output_beats": len(sched["outputs"]),
            "weight_tiles": len(core.weights),
            "tensor_ram_blocks": int(core.tram_used),
            "utilisation": sched["mac_cycles"] / spaced if spaced else 0.0,
        })
        memory.append({
            "core": c,
            "weight_store": _fraction(len(core.weights), cfg.weight_store_depth),
            "tensor_ram": _fraction(core.tram_used, cfg.tensor_ram_depth),
            "instr_mem": _fraction(len(core.instructions), cfg.instr_mem_depth),
            "accum_store": _fraction(acc_used[c], cfg.accum_store_depth),
            "clamp_store": _fraction(len(core.clamps), cfg.clamp_store_depth),
        })

    n_in = len(model.input_dests)
    return {
        "schema_version": SCHEMA_VERSION,
        "compute_only": True,
        "notes": [COMPUTE_ONLY_NOTE.format(clock=cfg.clock_mhz),
                  DEPTHS_NOTE.format(kind=depths_kind(cfg.depths),
                                     depths=cfg.depths.describe())],
        "program": {
            "name": meta.get("name"),
            "config": cfg.to_dict(),
            "streaming": bool(meta.get("streaming", False)),
            "input_axis": meta.get("input_axis"),
            "output_axis": meta.get("output_axis"),
            "inputs": [{"shape": list(t.shape), "beats": t.beats} for t in model.inputs],
            "outputs": [{"shape": list(t.shape), "beats": t.beats} for t in model.outputs],
            "model_index": model_index,
            "num_models": program.num_models,
        },
        "models": [_model_summary(program, k) for k in range(program.num_models)],
        "reset": _reset_summary(program),
        "latency": {
            "clock_mhz": cfg.clock_mhz,
            "depths": dataclasses.asdict(cfg.depths),
            "depths_kind": depths_kind(cfg.depths),
            "spaced_cycles": spaced,
            "spaced_us": spaced / cfg.clock_mhz,
            "contiguous_cycles": contiguous,
            "contiguous_us": contiguous / cfg.clock_mhz,
            "first_output_cycle": outputs[0],
            "last_output_cycle": outputs[-1],
            "ideal_compute_cycles": ideal,
            "utilisation": ideal / spaced if spaced else 0.0,
            "total_weight_tiles": int(metrics["total_weight_tiles"]),
            "total_macs": sum(int(layer.get("macs", 0)) for layer in meta.get("layers", [])),
        },
        "reference": reference,
        "layers": [_layer_entry(i, layer, cfg.num_cores)
                   for i, layer in enumerate(meta.get("layers", []))],
        "cores": cores,
        "memory": memory,
        "timeline": {
            "input_beats": n_in,
            "output_beats": outputs,
            "cores": [s["segments"] for s in schedules],
        },
    }


# -- rendering: shared helpers -----------------------------------------------------------


def _pct(x: float | None) -> str:
    if x is None:
        return "–"
    # A sliver of a large memory is not nothing: say so rather than print 0.0 %.
    return "<0.1 %" if 0 < x < 0.0005 else f"{100 * x:.1f} %"


def _numeric(cell: str) -> bool:
    """Whether a table cell holds a figure (right-aligned, as a reader scans numbers)."""
    return cell[:1].isdigit() or cell[:1] in "–<"


def _cores_text(cores: list[int]) -> str:
    """Format a core list compactly: ``0-5``, ``0,2``."""
    if not cores:
        return "–"
    if cores == list(range(cores[0], cores[-1] + 1)) and len(cores) > 2:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(c) for c in cores)


def _use(entry: dict[str, Any]) -> str:
    return f"{entry['used']}/{entry['depth']} ({_pct(entry['fraction'])})"


def _title(report: dict[str, Any]) -> str:
    prog = report["program"]
    cfg = prog["config"]
    name = prog["name"] or "program"
    return (f"{name} on {cfg['name']} ({cfg['num_cores']} cores × B={cfg['block_size']}, "
            f"{cfg['clock_mhz']:g} MHz)")


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    lat = report["latency"]
    prog = report["program"]
    rows = [
        ("latency (spaced)", f"{lat['spaced_cycles']} cycles = {lat['spaced_us']:.4f} µs"),
        ("interval (contiguous)",
         f"{lat['contiguous_cycles']} cycles = {lat['contiguous_us']:.4f} µs"),
        ("first / last output beat", f"cycle {lat['first_output_cycle']} / "
                                     f"{lat['last_output_cycle']}"),
        ("pipeline depths", f"{lat['depths_kind']}: "
         + " ".join(f"{k}={v}" for k, v in lat["depths"].items())),
        ("ideal compute cycles", f"{lat['ideal_compute_cycles']} "
                                 f"(Σ ⌈tiles / {prog['config']['num_cores']}⌉ over layers)"),
        ("utilisation", f"{_pct(lat['utilisation'])} (ideal / spaced)"),
        ("weight tiles, MAC instructions",
         f"{lat['total_weight_tiles']:,}, {lat['total_macs']:,}"),
        ("inputs → outputs", " ".join(str(t["shape"]) for t in prog["inputs"]) + " → "
         + " ".join(str(t["shape"]) for t in prog["outputs"])
         + (f" (streaming: one timestep per inference, axis {prog['input_axis']})"
            if prog["streaming"] else "")),
    ]
    models = report.get("models", [])
    if len(models) > 1:
        # A multi-model program: the figures above are one model's; one line for each.
        for m in models:
            here = " (this report)" if m["index"] == prog["model_index"] else ""
            rows.append((f"model {m['index']}", f"{m['name'] or '?'} on cores "
                         f"{_cores_text(m['cores'])}: {m['spaced_cycles']} cycles = "
                         f"{m['spaced_us']:.4f} µs spaced, {m['contiguous_cycles']} "
                         f"contiguous{here}"))
    reset = report.get("reset")
    if reset is not None:
        rows.append(("reset (new sequence)",
                     f"{reset['cycles']} cycles = {reset['us']:.4f} µs (model table entry "
                     f"{reset['model_index']}, plus {reset['model_setup_cycles']} idle cycles "
                     "to select it and again to select a model)"))
    ref = report["reference"]
    if ref is not None:
        rows.append(("reference", f"{ref['cycles']} cycles ({ref['name'] or 'same shape'}"
                     + (f", {ref['source']}" if ref["source"] else "") + ")"))
        rows.append(("ours / reference", f"{ref['ratio']:.2f}×"))
    return rows


def _layer_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["#", "layer", "op", "cores", "start", "end", "cycles", "tiles", "MACs",
               "ideal", "busy"]
    rows = [[str(layer["index"]), layer["name"], layer["op"], _cores_text(layer["cores"]),
             str(layer["start"]), str(layer["end"]), str(layer["cycles"]), str(layer["tiles"]),
             f"{layer['macs']:,}", str(layer["ideal_cycles"]), _pct(layer["busy"])]
            for layer in report["layers"]]
    return headers, rows


def _core_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["core", "MAC (busy)", "VEC", "FN", "WAIT", "END at", "instrs", "out beats",
               "weight tiles", "tensor RAM", "utilisation"]
    rows = [[str(c["core"]), str(c["mac_cycles"]), str(c["vec_cycles"]), str(c["fn_cycles"]),
             str(c["wait_cycles"]),
             str(c["end_cycle"]), str(c["instructions"]), str(c["output_beats"]),
             str(c["weight_tiles"]), str(c["tensor_ram_blocks"]), _pct(c["utilisation"])]
            for c in report["cores"]]
    return headers, rows


def _memory_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["core", "weight store", "tensor RAM", "instr mem", "accumulators", "clamps"]
    rows = [[str(m["core"]), _use(m["weight_store"]), _use(m["tensor_ram"]),
             _use(m["instr_mem"]), _use(m["accum_store"]), _use(m["clamp_store"])]
            for m in report["memory"]]
    return headers, rows


_SECTIONS = (
    ("Layers", _layer_table,
     "cycles = end − start + 1 (first issue to last write); MACs = MAC instructions; "
     "ideal = ⌈tiles / num_cores⌉; busy = tiles / (cores used × cycles)."),
    ("Cores", _core_table,
     "MAC = cycles issuing a MAC (busy); utilisation = MAC cycles / spaced latency."),
    ("Memory (used / depth per core)", _memory_table, ""),
)


# -- text ---------------------------------------------------------------------------------


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                         for c, w in zip(cells, widths, strict=True)).rstrip()

    return ["  " + line(headers), "  " + "  ".join("-" * w for w in widths),
            *("  " + line(r) for r in rows)]


def render_text(report: dict[str, Any]) -> str:
    """Return the report as plain text for a terminal."""
    lines = [f"tidal latency report: {_title(report)}", *report["notes"], ""]
    width = max(len(k) for k, _ in _summary_rows(report))
    lines += [f"  {k.ljust(width)}  {v}" for k, v in _summary_rows(report)]
    for title, table, note in _SECTIONS:
        headers, rows = table(report)
        lines += ["", title, *_text_table(headers, rows)]
        if not rows:
            lines.append("  (none recorded)")
        if note:
            lines.append(f"  {note}")
    return "\n".join(lines) + "\n"


# -- markdown -----------------------------------------------------------------------------


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    # Figures right-aligned, judged by the first row (every row of a table is alike).
    align = ["---:" if rows and _numeric(c) else "---" for c in (rows[0] if rows else headers)]
    return ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)]


def render_markdown(report: dict[str, Any], plot: str | None = None) -> str:
    """Return the report as Markdown.

    Parameters
    ----------
    report : dict
        From :func:`build_report`.
    plot : str, optional
        Path or URL of the timeline image (as the Markdown file should link it, i.e. relative
        to where the Markdown is written).
    """
    lines = [f"# Latency report: {_title(report)}", "", f"*{' '.join(report['notes'])}*", ""]
    lines += _md_table(["figure", "value"], [list(r) for r in _summary_rows(report)])
    if plot is not None:
        lines += ["", f"![Timeline of the cores (compute only, no host I/O)]({plot})"]
    for title, table, note in _SECTIONS:
        headers, rows = table(report)
        lines += ["", f"## {title}", "", *_md_table(headers, rows)]
        if note:
            lines += ["", note]
    return "\n".join(lines) + "\n"


# -- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f3f7; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _html_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    def cell(tag: str, text: str) -> str:
        cls = "" if _numeric(text) else ' class="l"'
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell("th", h) for h in headers) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in rows]
    return out + ["</table>"]


def render_html(report: dict[str, Any], plot: str | Path | None = None) -> str:
    """Return the report as a self-contained HTML page.

    Parameters
    ----------
    report : dict
        From :func:`build_report`.
    plot : str or Path, optional
        A PNG timeline (from :func:`plot_timeline`), embedded in the page as a data URI so
        that the page can be moved or mailed on its own.
    """
    title = html.escape(_title(report))
    lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>tidal latency report: {title}</title>", f"<style>{_CSS}</style>",
             "</head><body>", f"<h1>Latency report: {title}</h1>",
             f'<p class="note">{html.escape(" ".join(report["notes"]))}</p>']
    lines += _html_table(["figure", "value"], [list(r) for r in _summary_rows(report)])
    if plot is not None:
        data = base64.b64encode(Path(plot).read_bytes()).decode()
        lines.append(f'<p><img alt="Timeline of the cores (compute only, no host I/O)" '
                     f'src="data:image/png;base64,{data}"></p>')
    for title_, table, note in _SECTIONS:
        headers, rows = table(report)
        lines += [f"<h2>{html.escape(title_)}</h2>", *_html_table(headers, rows)]
        if note:
            lines.append(f'<p class="note">{html.escape(note)}</p>')
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


# -- timeline plot ------------------------------------------------------------------------

_COLOURS = {
    "mac": "#2563eb",
    "vec": "#f59e0b",
    "fn": "#db2777",
    "wait": "#eef0f3",
    "input": "#7c3aed",
    "output": "#16a34a",
    "end": "#111827",
    "spaced": "#dc2626",
    "contiguous": "#6b7280",
}
# Vertical layout of the figure, in inches: one bar row, the title, the x axis and legend.
_ROW_IN, _TITLE_IN, _BOTTOM_IN = 0.3, 0.7, 0.85


def plot_timeline(program_or_report: Program | dict[str, Any], path: str | Path) -> Path:
    """Draw the Gantt chart of an inference and write it as a PNG.

    The upper panel has one bar per layer (its span of cycles, labelled with its tiles), the
    lower one row per core (MAC runs, VEC runs, WAIT gaps, END) between the input port
    (beats accepted) and the output port (beats presented). Dashed lines mark the spaced
    latency and, if different, the contiguous interval. The title says that the figures
    are compute only and at which clock µs are quoted.

    Parameters
    ----------
    program_or_report : isa.Program or dict
        A program, or a report from :func:`build_report`.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    report = (program_or_report if isinstance(program_or_report, dict)
              else build_report(program_or_report))
    lat = report["latency"]
    tl = report["timeline"]
    layers = [layer for layer in report["layers"] if layer["start"] is not None]
    n_cores = len(tl["cores"])
    horizon = max(lat["contiguous_cycles"], lat["spaced_cycles"])
    contiguous_differs = lat["contiguous_cycles"] != lat["spaced_cycles"]

    heights = ([len(layers)] if layers else []) + [n_cores + 2]
    fig_h = _TITLE_IN + _BOTTOM_IN + _ROW_IN * sum(heights) + 0.3 * len(heights)
    fig, axes = plt.subplots(len(heights), 1, sharex=True, squeeze=False,
                             figsize=(12, fig_h),
                             gridspec_kw={"height_ratios": heights, "hspace": 0.3})
    axes = axes[:, 0]
    bar = 0.72

    if layers:
        ax = axes[0]
        palette = plt.get_cmap("tab20")
        for row, layer in enumerate(layers):
            span = max(layer["cycles"] or 0, 1)
            ax.broken_barh([(layer["start"], span)], (row - bar / 2, bar),
                           facecolor=palette(layer["index"] % 20), edgecolor="none")
            ax.text(layer["start"] + span + horizon * 0.004, row,
                    f"{layer['tiles']} tiles" if layer["tiles"] else layer["op"],
                    va="center", fontsize=7, color="#374151", clip_on=False)
        ax.set_yticks(range(len(layers)),
                      [f"{layer['name']} ({layer['op']})" for layer in layers], fontsize=8)
        ax.set_ylim(len(layers) - 0.5, -0.5)
        # The cores' panel below carries the cycle axis; repeating it here is clutter.
        ax.tick_params(axis="x", length=0)
        ax.spines["bottom"].set_visible(False)
        ax.set_title("layers: first issue to last write", fontsize=8, loc="left",
                     color="#374151")

    ax = axes[-1]
    ax.broken_barh([(0, tl["input_beats"])], (-bar / 2, bar), facecolor=_COLOURS["input"])
    for c, segments in enumerate(tl["cores"]):
        y = c + 1
        for kind in ("wait", "vec", "fn", "mac"):
            bars = [(s["start"], s["length"]) for s in segments if s["kind"] == kind]
            if bars:
                ax.broken_barh(bars, (y - bar / 2, bar), facecolor=_COLOURS[kind],
                               edgecolor="#9ca3af" if kind == "wait" else "white",
                               linewidth=0.4, hatch="////" if kind == "wait" else None)
        end = report["cores"][c]["end_cycle"]
        ax.plot([end + 0.5] * 2, [y - bar / 2, y + bar / 2], color=_COLOURS["end"],
                linewidth=1.6, solid_capstyle="butt")
    ax.broken_barh([(t, 1) for t in tl["output_beats"]], (n_cores + 1 - bar / 2, bar),
                   facecolor=_COLOURS["output"], edgecolor="white", linewidth=0.4)
    ax.set_yticks(range(n_cores + 2),
                  ["input port", *(f"core {c}" for c in range(n_cores)), "output port"],
                  fontsize=8)
    ax.set_ylim(n_cores + 1.5, -0.5)
    ax.set_xlabel("cycle (0 = first input beat accepted)", fontsize=9)
    ax.set_title("cores: instruction issue", fontsize=8, loc="left", color="#374151")

    for a in axes:
        a.set_xlim(0, horizon * 1.04 + 1)
        a.grid(axis="x", color="#e5e7eb", linewidth=0.6)
        a.set_axisbelow(True)
        a.tick_params(axis="y", length=0)
        for spine in ("top", "right", "left"):
            a.spines[spine].set_visible(False)
        a.axvline(lat["spaced_cycles"], color=_COLOURS["spaced"], linestyle="--",
                  linewidth=1.1)
        if contiguous_differs:
            a.axvline(lat["contiguous_cycles"], color=_COLOURS["contiguous"], linestyle=":",
                      linewidth=1.1)

    legend = [Patch(facecolor=_COLOURS["mac"], label="MAC (matrix busy)"),
              Patch(facecolor=_COLOURS["vec"], label="VEC"),
              Patch(facecolor=_COLOURS["fn"], label="FN"),
              Patch(facecolor=_COLOURS["wait"], edgecolor="#9ca3af", hatch="////",
                    label="WAIT"),
              Line2D([], [], color=_COLOURS["end"], linewidth=1.6, label="END"),
              Patch(facecolor=_COLOURS["input"], label="input beats"),
              Patch(facecolor=_COLOURS["output"], label="output beats"),
              Line2D([], [], color=_COLOURS["spaced"], linestyle="--",
                     label=f"spaced latency ({lat['spaced_cycles']})")]
    if contiguous_differs:
        legend.append(Line2D([], [], color=_COLOURS["contiguous"], linestyle=":",
                             label=f"contiguous interval ({lat['contiguous_cycles']})"))
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.08 / fig_h), handlelength=1.6)

    fig.suptitle(f"{_title(report)}\n{lat['spaced_cycles']} cycles spaced = "
                 f"{lat['spaced_us']:.3f} µs, contiguous {lat['contiguous_cycles']}, "
                 f"utilisation {_pct(lat['utilisation'])} — compute only (no host I/O), "
                 f"µs assume {lat['clock_mhz']:g} MHz", fontsize=10, y=1 - 0.08 / fig_h)
    fig.subplots_adjust(left=0.17, right=0.97, top=1 - _TITLE_IN / fig_h,
                        bottom=_BOTTOM_IN / fig_h)
    out = Path(path)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
