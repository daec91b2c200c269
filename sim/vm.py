"""The VM: the bit- and cycle-accurate executable specification of the tidal machine.

``VM(program)`` loads a :class:`isa.Program`: it decodes every core's instructions, computes
their issue cycles with :mod:`isa.timing`, checks the static-schedule rules of
``docs/architecture.md`` §5 once (raising :class:`ScheduleError`), and compiles an execution
plan. ``vm.run(x)`` then executes one inference (one timestep of a streaming program) with
the numerics of :mod:`isa.numerics`; tensor RAM and accumulators persist between inferences
until ``vm.reset()`` runs the program's reset entry.
Three executors run the plan, bit for bit alike: the compiled one (:mod:`sim._vm_fast`,
the default), the numpy one (:mod:`sim._vm_plan`, the readable specification and the
fallback) and, with tracing, the cycle-by-cycle model (:mod:`sim._vm_cycle`).
``docs/vm.md`` is the user's guide.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from isa.numerics import bf16_bits_to_f32, f32_to_bf16_bits, round_to_bf16
from isa.program import Program, TensorLayout
from sim import _vm_fast
from sim._vm_cycle import CycleModel
from sim._vm_plan import Memories, Plan
from sim._vm_schedule import Schedule, ScheduleError, analyse
from sim._vm_trace import TraceRecord, WriteRecord, format_trace, parse_trace

__all__ = ["VM", "ScheduleError", "TraceRecord", "WriteRecord", "format_trace", "parse_trace",
           "EXECUTORS", "EXECUTOR_ENV"]

#: The executors a VM can run untraced inferences with (``auto``: compiled if numba is
#: installed, else numpy).
EXECUTORS = ("auto", "compiled", "numpy")
#: Environment variable giving the default executor (one of :data:`EXECUTORS`).
EXECUTOR_ENV = "TIDAL_VM_EXECUTOR"


class VM:
    """A loaded program, ready to run inferences.

    Parameters
    ----------
    program : isa.Program
        The program; checked at load.
    trace : bool
        Record, for every inference, the issue of every instruction (:attr:`trace`) and every
        memory write and output beat (:attr:`write_trace`). Runs are then executed cycle by
        cycle, which is much slower.
    executor : str, optional
        How untraced inferences run, one of :data:`EXECUTORS`: ``"compiled"`` (numba; the
        first VM of a process loads the kernel from numba's disk cache, or compiles it in
        a few seconds the very first time), ``"numpy"`` (the numpy executor) or ``"auto"``
        (compiled if numba is installed). Default: the ``TIDAL_VM_EXECUTOR`` environment
        variable, else ``"auto"``. All give bit-identical results and cycle counts.

    Attributes
    ----------
    program : isa.Program
    tracing : bool
        Whether runs are traced (the ``trace`` parameter).
    executor : str
        What runs inferences: ``"compiled"``, ``"numpy"`` or, when tracing, ``"cycle"``.
    inferences : int
        Inferences run since load (or the last :meth:`reset`).
    resets : int
        Resets run since load.
    trace : list of TraceRecord
        After a run with tracing on: every instruction issue of the last inference (or
        reset), sorted by (cycle, core); empty otherwise.
    write_trace : list of WriteRecord
        After a run with tracing on: every write and output beat of the last inference (or
        reset), sorted by (cycle, core, memory); empty otherwise.

    Raises
    ------
    ScheduleError
        If the program breaks a static-schedule rule or an address is outside its memory.
    ProgramError
        If the program is otherwise inconsistent with its configuration.
    ValueError
        If ``executor`` (or ``TIDAL_VM_EXECUTOR``) is not one of :data:`EXECUTORS`, or is
        ``"compiled"`` without numba installed.
    """

    def __init__(self, program: Program, trace: bool = False,
                 executor: str | None = None) -> None:
        if not isinstance(program, Program):
            raise TypeError(f"'program' must be an isa.Program, not {program!r}")
        executor = _choose_executor(executor)
        self.program = program
        self.tracing = bool(trace)
        schedules = [analyse(program, k) for k in range(program.table_size)]
        cfg = program.config
        b = cfg.block_size
        tram = np.zeros((cfg.num_cores * cfg.tensor_ram_depth, b), np.float32)
        clamps = []
        for c, core in enumerate(program.cores):
            start = c * cfg.tensor_ram_depth
            tram[start:start + len(core.tram_init)] = bf16_bits_to_f32(core.tram_init)
            # Entries beyond the image are zero, like every memory the image does not cover.
            table = np.zeros((cfg.clamp_store_depth, 2), np.float32)
            table[:len(core.clamps)] = core.clamps
            clamps.append(table)
        self._mem = Memories(
            tram=tram,
            acc=np.zeros((cfg.num_cores * cfg.accum_store_depth, b), np.float32),
            weights=[bf16_bits_to_f32(core.weights) for core in program.cores],
            clamps=clamps,
            tram_depth=cfg.tensor_ram_depth,
            acc_depth=cfg.accum_store_depth,
        )
        # One set of plans per model, all on the one set of memories: a model's state lives
        # in its own tensor-RAM region (the compiler's ProgramBuilder keeps them apart).
        # The reset entry's plans, if any, come last (the model table's order).
        self._models = [_ModelPlans(program, k, schedule, self._mem, executor, self.tracing)
                        for k, schedule in enumerate(schedules)]
        self._reset = self._models[-1] if program.reset is not None else None
        self.executor = ("cycle" if self.tracing
                         else "compiled" if self._models[0].fast is not None else "numpy")
        self._last = self._models[0]
        self.inferences = 0
        self.resets = 0
        self.trace: list[TraceRecord] = []
        self.write_trace: list[WriteRecord] = []

    # -- running -------------------------------------------------------------------------

    def _model(self, model_index: Any) -> _ModelPlans:
        """Return the plans of model ``model_index`` (ValueError if there is none)."""
        return self._models[self.program.check_model_index(model_index)]

    def _execute(self, model: _ModelPlans, beats: np.ndarray, exact: bool = False
                 ) -> np.ndarray:
        """Run one inference of ``model`` on float32 beats; return the output beats.

        The beats are rounded to bf16 first, unless ``exact`` (they are bf16 values already,
        whose NaN payloads the machine must see unchanged).
        """
        if model.fast is not None:
            out = model.fast.run(self._mem, beats, round_inputs=not exact)
        else:
            beats = beats if exact else round_to_bf16(beats)
            if model.cycle_model is None:
                out = model.plan.run(self._mem, beats)
            else:
                writes: list[WriteRecord] = []
                out = model.cycle_model.run(self._mem, beats, writes)
                self.trace = list(model.issue_trace)
                self.write_trace = sorted(writes, key=lambda w: (w.cycle, w.core, w.memory))
        self.inferences += 1
        self._last = model
        return out

    def run_beats(self, in_beats: np.ndarray, model_index: int = 0) -> np.ndarray:
        """Run one inference at the beat level (what co-simulation compares).

        Parameters
        ----------
        in_beats : numpy.ndarray
            uint16 [input beats, B]: bf16 bit patterns, lane ``j`` of beat ``i`` at
            ``[i, j]``.
        model_index : int
            The model to run (0 for a single-model program).

        Returns
        -------
        numpy.ndarray
            uint16 [output beats, B].

        Raises
        ------
        ValueError
            If ``in_beats`` is not a uint16 array of that shape, or there is no such model.
        """
        model = self._model(model_index)
        b = self.program.config.block_size
        if not isinstance(in_beats, np.ndarray) or in_beats.dtype != np.uint16:
            raise ValueError(f"input beats must be a uint16 numpy array, not "
                             f"{getattr(in_beats, 'dtype', type(in_beats).__name__)}")
        if in_beats.shape != (model.n_in, b):
            raise ValueError(f"input beats must have shape {(model.n_in, b)}, not "
                             f"{in_beats.shape}")
        return f32_to_bf16_bits(self._execute(model, bf16_bits_to_f32(in_beats), exact=True))

    def run(self, x: Any, *more: Any, model_index: int = 0) -> Any:
        """Run one inference (one timestep of a streaming program).

        Parameters
        ----------
        x, *more : array_like
            One array per model input, each of exactly that input's shape (the model's
            input without the streaming axis) and of a floating dtype: any numpy floating
            dtype, or a torch tensor of any floating dtype (``torch.bfloat16`` included;
            ``requires_grad`` is fine). Values are converted to float32, then rounded to
            bf16 (to nearest, ties to even).
        model_index : int
            The model to run, in a multi-model program (its index in the order the models
            were added to the ``ProgramBuilder``); 0 for a single-model program. Each
            model's streaming state is its own.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            The output (float32, shaped like the model's first output), or a tuple of all
            outputs if the model has several.

        Raises
        ------
        ValueError
            If there is no such model, or the number of inputs, a shape or a dtype is
            wrong; the message gives the expected and the actual value.
        """
        model = self._model(model_index)
        layouts = model.entry.inputs
        xs = (x, *more)
        if len(xs) != len(layouts):
            raise ValueError(f"the program takes {len(layouts)} input(s), not {len(xs)}")
        blocks = []
        for k, (value, layout) in enumerate(zip(xs, layouts, strict=True)):
            arr = _float_array(value, f"input {k}")
            if arr.shape != layout.shape:
                raise ValueError(f"input {k} must have shape {layout.shape}, not {arr.shape}")
            blocks.append(_to_blocks(layout, arr.astype(np.float32, copy=False)))
        out = self._execute(model, blocks[0] if len(blocks) == 1 else np.concatenate(blocks))
        results = []
        start = 0
        for layout in model.entry.outputs:
            beats = _geometry(layout)[3]
            results.append(_from_blocks(layout, out[start:start + beats]))
            start += beats
        return results[0] if len(results) == 1 else tuple(results)

    def run_timesteps(self, x: Any, input_axis: int, output_axis: int,
                      model_index: int = 0) -> np.ndarray:
        """Run a streaming program over a whole sequence, one inference per timestep.

        Parameters
        ----------
        x : array_like
            The sequence: the program's input shape with the streaming axis inserted at
            ``input_axis``; a floating dtype.
        input_axis : int
            The streaming axis of ``x``.
        output_axis : int
            Where the timesteps' outputs are stacked in the result.
        model_index : int
            The model to run (see :meth:`run`).

        Returns
        -------
        numpy.ndarray
            float32: the outputs of every timestep stacked along ``output_axis``.

        Raises
        ------
        ValueError
            If there is no such model, the model has more than one input or output, or on
            a wrong shape, dtype or axis.
        """
        model = self._model(model_index)
        if len(model.entry.inputs) != 1 or len(model.entry.outputs) != 1:
            raise ValueError("run_timesteps needs a model with one input and one output")
        shape = model.entry.inputs[0].shape
        arr = _float_array(x, "the sequence")
        if arr.ndim != len(shape) + 1 or not -arr.ndim <= input_axis < arr.ndim:
            raise ValueError(f"the sequence must have {len(shape) + 1} axes (input shape "
                             f"{shape} plus the streaming axis {input_axis}), not shape "
                             f"{arr.shape}")
        steps = np.moveaxis(arr, input_axis, 0)
        if steps.shape[1:] != shape:
            raise ValueError(f"the sequence has shape {arr.shape}: without axis {input_axis} "
                             f"that is {steps.shape[1:]}, not the input shape {shape}")
        out_shape = model.entry.outputs[0].shape
        if not -len(out_shape) - 1 <= output_axis <= len(out_shape):
            raise ValueError(f"output_axis {output_axis} is out of range for outputs of "
                             f"shape {out_shape} plus a streaming axis")
        if model.fast is not None:
            # One compiled call for the whole sequence.
            layout, out_layout = model.entry.inputs[0], model.entry.outputs[0]
            out = model.fast.run(self._mem, _to_blocks(
                layout, steps.astype(np.float32, copy=False), (len(steps),)))
            self.inferences += len(steps)
            if len(steps):
                self._last = model
            return np.moveaxis(_from_blocks(out_layout, out, (len(steps),)), 0, output_axis)
        outs = [self.run(step, model_index=model_index) for step in steps]
        if not outs:
            return np.moveaxis(np.empty((0, *out_shape), np.float32), 0, output_axis)
        return np.stack(outs, axis=output_axis)

    # -- timing --------------------------------------------------------------------------

    def cycle_count(self, spaced: bool = True) -> int:
        """Return the cycles of the last inference (the same for every inference of a model).

        Parameters
        ----------
        spaced : bool
            True: latency from the first input beat's acceptance to the last output beat,
            inclusive (``docs/architecture.md`` §6). False: the interval between
            back-to-back inferences (done cycle + 1).

        Raises
        ------
        RuntimeError
            If no inference has run since load or reset.
        """
        if not self.inferences:
            raise RuntimeError("no inference has run yet: call run() first")
        return self._last.latency if spaced else self._last.interval

    def compute_duration_us(self, spaced: bool = True) -> float:
        """Return :meth:`cycle_count` in µs at the configuration's clock (compute only)."""
        return self.cycle_count(spaced) / self.program.config.clock_mhz

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, list[np.ndarray]]:
        """Return a copy of every core's tensor RAM and accumulator store.

        Returns
        -------
        dict
            ``"tram"``: per core, uint16 [tensor_ram_depth, B] bf16 bit patterns;
            ``"acc"``: per core, uint32 [accum_store_depth, B] fp32 bit patterns.
        """
        cfg = self.program.config
        tram = (self._mem.tram.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
        acc = self._mem.acc.view(np.uint32).copy()
        return {
            "tram": list(tram.reshape(cfg.num_cores, cfg.tensor_ram_depth, -1)),
            "acc": list(acc.reshape(cfg.num_cores, cfg.accum_store_depth, -1)),
        }

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        """Set every core's tensor RAM and accumulator store (the inverse of :meth:`state`).

        The next inference starts from these memories, as it would after the inferences
        that left them (chunked co-simulation starts a chunk this way).

        Parameters
        ----------
        state : dict
            As returned by :meth:`state`: ``"tram"`` and ``"acc"``, one array per core.

        Raises
        ------
        ValueError
            If a memory is missing or has the wrong shape.
        """
        cfg = self.program.config
        b = cfg.block_size
        shapes = {"tram": (cfg.tensor_ram_depth, b), "acc": (cfg.accum_store_depth, b)}
        arrays = {}
        for name, shape in shapes.items():
            cores = state.get(name)
            if cores is None or len(cores) != cfg.num_cores or any(
                    np.shape(c) != shape for c in cores):
                raise ValueError(f"state[{name!r}] must hold {cfg.num_cores} arrays of shape "
                                 f"{shape}")
            arrays[name] = np.concatenate(cores)
        self._mem.tram[...] = bf16_bits_to_f32(arrays["tram"])
        self._mem.acc[...] = arrays["acc"].astype(np.uint32).view(np.float32)

    def reset(self) -> None:
        """Run the program's reset entry: start a new sequence without reloading.

        The machine runs the reset code (``docs/architecture.md`` §2, ``compiler/reset.py``)
        like an inference, bit- and cycle-exactly through the same executor: afterwards
        every tensor-RAM and accumulator word the models write holds its load-time value
        again, so :meth:`state` equals a freshly loaded VM's and the next inferences give
        what they give after load. Its cost is :meth:`reset_cycle_count` cycles. It sets
        :attr:`inferences` to 0 and counts in :attr:`resets`; with tracing, :attr:`trace`
        and :attr:`write_trace` then hold the reset's issues and writes.

        Raises
        ------
        ValueError
            If the program has no reset entry (a hand-built program; every program the
            compiler builds has one).
        """
        plans = self._reset_plans()
        self._execute(plans, np.zeros((1, self.program.config.block_size), np.float32),
                      exact=True)
        self.inferences = 0
        self.resets += 1

    def reset_cycle_count(self) -> int:
        """Return the cycles of a reset: its done cycle + 1, as
        :meth:`isa.program.Program.reset_cycles` (ValueError without a reset entry)."""
        return self._reset_plans().interval

    def _reset_plans(self) -> _ModelPlans:
        if self._reset is None:
            raise ValueError("the program has no reset entry (a hand-built program; programs "
                             "compiled by tidal have one): load it again to start over")
        return self._reset


class _ModelPlans:
    """What runs one model of a program: its schedule's plans and static figures."""

    def __init__(self, program: Program, k: int, schedule: Schedule, mem: Memories, executor: str,
                 tracing: bool) -> None:
        self.entry = program.table_entry(k)
        dests = self.entry.input_dests
        self.n_in = len(dests)
        self.latency = schedule.latency
        self.interval = schedule.done_cycle + 1
        self.plan = Plan(schedule, mem, dests)
        self.fast = (_vm_fast.FastPlan(schedule, mem, dests)
                     if executor == "compiled" and not tracing else None)
        self.cycle_model = CycleModel(program.config, schedule, dests) if tracing else None
        self.issue_trace = [
            TraceRecord(s.cycle, s.core, s.pc, int(program.cores[s.core].instructions[s.pc]))
            for s in schedule.sources if s.core >= 0
        ]


def _float_array(value: Any, what: str) -> np.ndarray:
    """Return ``value`` as a numpy array of a floating dtype, or raise ValueError.

    A torch tensor of any floating dtype (bfloat16 included, which numpy lacks) is
    detached and converted to float32, as :meth:`VM.run` converts a numpy array (exactly
    for bfloat16 and float16). Recognised without importing torch, which sim does not need.
    """
    if type(value).__module__.startswith("torch") and hasattr(value, "is_floating_point"):
        if not value.is_floating_point():
            raise ValueError(f"{what} must have a floating dtype, not {value.dtype}")
        value = value.detach().cpu().float().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not an array of numbers: {exc}") from None
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} must have a floating dtype (float16, float32, float64 or "
                         f"longdouble), not {arr.dtype}")
    return arr


def _choose_executor(executor: str | None) -> str:
    """Return ``"compiled"`` or ``"numpy"`` for the ``executor`` argument."""
    source = "executor"
    if executor is None:
        executor, source = os.environ.get(EXECUTOR_ENV, "auto") or "auto", EXECUTOR_ENV
    if executor not in EXECUTORS:
        raise ValueError(f"{source} must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor == "auto":
        return "compiled" if _vm_fast.AVAILABLE else "numpy"
    if executor == "compiled" and not _vm_fast.AVAILABLE:
        raise ValueError(f"{source} 'compiled' needs numba: .venv/bin/pip install -r "
                         "requirements.txt")
    return executor


@functools.lru_cache(maxsize=1024)
def _geometry(layout: TensorLayout) -> tuple[int, int, int, int, int]:
    """Return ``(rows, channels, padded row width, beats, B)`` of ``layout`` (computed once:
    the properties cost more than the reshapes on the per-inference path)."""
    b = layout.block_size
    return layout.rows, layout.channels, layout.blocks * b, layout.beats, b


def _to_blocks(layout: TensorLayout, values: np.ndarray, lead: tuple[int, ...] = ()
               ) -> np.ndarray:
    """Return ``layout.to_blocks(values)`` (:class:`isa.TensorLayout`), for every index of
    ``lead``, the leading axes of ``values``; a view when no lane is padding."""
    rows, channels, width, beats, b = _geometry(layout)
    if channels == width:
        return values.reshape(*lead, beats, b)
    out = np.zeros((*lead, rows, width), values.dtype)
    out[..., :channels] = values.reshape(*lead, rows, channels)
    return out.reshape(*lead, beats, b)


def _from_blocks(layout: TensorLayout, blocks: np.ndarray, lead: tuple[int, ...] = ()
                 ) -> np.ndarray:
    """Return ``layout.from_blocks(blocks)`` (:class:`isa.TensorLayout`), for every index of
    ``lead``, the leading axes of ``blocks``."""
    rows, channels, width, _, _ = _geometry(layout)
    if channels == width:
        return blocks.reshape(*lead, *layout.shape)
    return blocks.reshape(*lead, rows, width)[..., :channels].reshape(*lead, *layout.shape)
