"""The machine: cores, interconnect, input and output ports, status and trace.

::

    in_data ──► input pipeline ──┐ (beat i written in cycle i + input_write to the
       indesc[i] (addr, mask) ───┤  cores of indesc[i].mask at indesc[i].addr)
                                 ▼
       core 0 … core N−1 ◄── link bus: every core's outbound link ──┐
          │  │                                                     │
          │  └── link pipelines ───────────────────────────────────┘
          └── output pipelines ──► out_valid / out_data

The interconnect (:mod:`rtl.interconnect`) is the link bus: the concatenation of the cores'
link registers, given whole to every core, each of which picks the ``TRAM`` and ``ACCS``
blocks addressed to it. The top itself only concatenates, and muxes the output beat.

Cycle 0 of an inference is the cycle the first input beat is accepted (``in_valid`` while
idle). The model index on ``in_model`` (held from ``MODEL_SETUP`` cycles before) selects a
word of the model table (``models``): the entry pc every sequencer presents while idle, and
the model's input beats and first input descriptor. The input port then accepts a beat in
each of the model's cycles ``0 .. beats − 1`` (a missing beat is an underrun: ``error``, and
its write is dropped); the machine never stalls.
The inference is done in the first cycle after which nothing more happens: every core has
issued its ``END`` and has nothing in flight, and the last input beat has been written
(``docs/architecture.md`` §2). ``done`` pulses in that cycle, and the next beat can be
accepted in the cycle after.
"""

from __future__ import annotations

from amaranth.hdl import (
    Cat,
    ClockSignal,
    Instance,
    Module,
    Mux,
    ResetSignal,
    Signal,
)
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import PC_BITS
from isa.program import (
    INDESC_ADDR_BITS,
    INDESC_MASK_BITS,
    MAX_MODELS,
    MODEL_FIELD_BITS,
    MODEL_INDEX_BITS,
    Program,
    indesc_words,
    model_table,
)
from isa.timing import latencies
from rtl.core import Core, core_signature
from rtl.interconnect import more_than_one, or_mux
from rtl.memory import add_memory, check_flavour, place

__all__ = ["top_signature", "Top"]


def top_signature(config: Config) -> wiring.Signature:
    """Return the signature of :class:`Top` for ``config`` (see its Members)."""
    b, n = config.block_size, config.num_cores
    return wiring.Signature({
        "in_valid": In(1),
        "in_ready": Out(1),
        "in_data": In(16 * b),
        "in_model": In(MODEL_INDEX_BITS),
        "out_valid": Out(1),
        "out_data": Out(16 * b),
        "out_ready": In(1),
        "busy": Out(1),
        "done": Out(1),
        "cycle": Out(32),
        "error": Out(1),
        "trace_valid": Out(n),
        "trace_pc": Out(PC_BITS * n),
    })


class Top(wiring.Component):
    """The whole machine (Verilog module ``tidal_top``).

    Parameters
    ----------
    config : Config
    flavour : str
        ``"native"`` (Amaranth submodules and memories, for Amaranth's simulator) or
        ``"instance"`` (``tidal_core`` / ``tidal_mem`` / ``tidal_trace`` instances, for
        :mod:`rtl.gen`).
    program : Program, optional
        Native flavour: the program whose memory images initialise the memories.
    broken_rounding : bool
        Test-only: every core's vector unit truncates instead of rounding to bf16.

    Raises
    ------
    ValueError
        If a program is given for the instance flavour or is for another configuration.

    Members
    -------
    in_valid : In(1)
        The host presents an input beat.
    in_ready : Out(1)
        High while idle and during the input phase of an inference.
    in_data : In(16 * B)
        Input beat, lane ``i`` at bits ``[16i, 16i + 16)``.
    in_model : In(MODEL_INDEX_BITS)
        The model of the next inference, held from ``MODEL_SETUP`` cycles before its first
        beat up to that beat (``docs/architecture.md`` §2).
    out_valid : Out(1)
        An output beat is presented this cycle.
    out_data : Out(16 * B)
    out_ready : In(1)
        Must be high whenever ``out_valid`` is (the machine cannot stall): a stall sets
        ``error``.
    busy : Out(1)
        From cycle 0 to the done cycle of an inference, inclusive.
    done : Out(1)
        High in the done cycle.
    cycle : Out(32)
        Cycles since cycle 0 of the current or last inference (0 in cycle 0).
    error : Out(1)
        Sticky until reset: input underrun, output stall, a model index that is no model of
        the program or was not held for ``MODEL_SETUP`` cycles, or a port collision (two
        writes to one memory, two output beats) that a valid schedule never causes.
    trace_valid : Out(num_cores)
        Bit ``c``: core ``c`` issues an instruction this cycle.
    trace_pc : Out(16 * num_cores)
        Its pc at bits ``[16c, 16c + 16)``.
    """

    def __init__(self, config: Config, *, flavour: str = "native",
                 program: Program | None = None, broken_rounding: bool = False) -> None:
        self.config = config
        self.flavour = check_flavour(flavour)
        if program is not None:
            if flavour != "native":
                raise ValueError("only the native flavour takes a program; the instance "
                                 "flavour loads memory images from files at time 0")
            if program.config != config:
                raise ValueError(f"program is for {program.config.name}, not {config.name}")
            program.validate()
        self.program = program
        self.broken_rounding = bool(broken_rounding)
        #: Native flavour: the cores (their ``memories`` are filled in on elaboration).
        self.cores: list[Core] = []
        #: Native flavour, once elaborated: the top's own memories (``indesc``).
        self.memories: dict[str, memory.Memory] = {}
        if flavour == "native":
            self.cores = [Core(config, flavour=flavour,
                               image=program.cores[c] if program is not None else None,
                               broken_rounding=broken_rounding)
                          for c in range(config.num_cores)]
        super().__init__(top_signature(config))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg, flavour, program = self.config, self.flavour, self.program
        b, n = cfg.block_size, cfg.num_cores

        # -- input port ------------------------------------------------------------------
        run = Signal()                          # busy after cycle 0
        in_cnt = Signal(cfg.io_count_bits)      # input beat slots so far in this inference
        start = Signal()
        slot = Signal()                         # an input beat is due this cycle
        in_phase = Signal()
        done = Signal()
        # The model table, read with the index on the input port: its entry pc is what the
        # idle sequencers present, so the word read in cycle -1 (index of cycle -2) gives the
        # instruction of cycle 0; base and beats are those read in cycle 0 (index of cycle
        # -1), kept for the input phase.
        fb = MODEL_FIELD_BITS
        models = add_memory(m, "models", width=3 * fb, depth=MAX_MODELS, flavour=flavour,
                            writable=False,
                            init=model_table(program) if program is not None else None,
                            registry=self.memories)
        m.d.comb += models.raddr.eq(self.in_model)
        entry = models.rdata[:fb]
        base, beats = Signal(fb), Signal(fb)
        with m.If(start):
            m.d.sync += [base.eq(models.rdata[fb:2 * fb]), beats.eq(models.rdata[2 * fb:])]
        model1, model2 = Signal(MODEL_INDEX_BITS), Signal(MODEL_INDEX_BITS)
        m.d.sync += [model1.eq(self.in_model), model2.eq(model1)]
        bad_model = start & ((model1 != model2) | (models.rdata[2 * fb:] == 0))
        m.d.comb += [
            start.eq(~run & self.in_valid),
            in_phase.eq(run & (in_cnt < beats)),
            slot.eq(start | in_phase),
            self.in_ready.eq(~run | in_phase),
        ]
        with m.If(slot):
            m.d.sync += in_cnt.eq(in_cnt + 1)
        with m.Elif(done):
            m.d.sync += in_cnt.eq(0)

        indesc = add_memory(m, "indesc", width=INDESC_ADDR_BITS + INDESC_MASK_BITS,
                            depth=cfg.io_depth, flavour=flavour, writable=False,
                            init=indesc_words(program) if program is not None else None,
                            registry=self.memories)
        # Beat i is accepted in cycle i; its descriptor is read in cycle i, and both are
        # registered `input_write` times: the beat is written in cycle i + input_write.
        m.d.comb += indesc.raddr.eq(Mux(start, models.rdata[fb:2 * fb], base) + in_cnt)
        in_we = Signal(name="in_we1")
        in_data = Signal(16 * b, name="in_data1", reset_less=True)
        m.d.sync += [in_we.eq(slot & self.in_valid), in_data.eq(self.in_data)]
        in_addr = indesc.rdata[:INDESC_ADDR_BITS]
        in_mask = indesc.rdata[INDESC_ADDR_BITS:INDESC_ADDR_BITS + n]
        in_flight = []                          # input writes still to come after this cycle
        for k in range(2, latencies(cfg).input_write + 1):
            in_flight.append(in_we)
            regs = [Signal(name=f"in_we{k}"), Signal(16 * b, name=f"in_data{k}", reset_less=True),
                    Signal(INDESC_ADDR_BITS, name=f"in_addr{k}", reset_less=True),
                    Signal(n, name=f"in_mask{k}", reset_less=True)]
            m.d.sync += [r.eq(v) for r, v in zip(regs, (in_we, in_data, in_addr, in_mask),
                                                  strict=True)]
            in_we, in_data, in_addr, in_mask = regs

        # -- cores and the link bus -------------------------------------------------------
        sig = core_signature(cfg)
        ports = []
        for c in range(n):
            p = {name: Signal(member.shape, name=f"core{c}_{name}")
                 for name, member in sig.members.items()}
            ports.append(p)
            place(m, f"core{c}", module="tidal_core", signature=sig, connections=p,
                  flavour=flavour, native=self.cores[c] if self.cores else None)
        bus = {f"links_{field}": Cat(*(p[f"link_{field}"] for p in ports))
               for field in ("dest", "acc", "addr", "data")}
        for c, p in enumerate(ports):
            m.d.comb += [p["start"].eq(start), p["entry"].eq(entry), p["core_id"].eq(c),
                         p["in_we"].eq(in_we & in_mask[c]), p["in_addr"].eq(in_addr),
                         p["in_data"].eq(in_data)]
            m.d.comb += [p[name].eq(value) for name, value in bus.items()]

        # -- output port -----------------------------------------------------------------
        outs = [(p["out_valid"], p["out_data"]) for p in ports]
        m.d.comb += [
            self.out_valid.eq(Cat(*(p["out_valid"] for p in ports)).any()),
            self.out_data.eq(or_mux(outs, 16 * b)),
        ]
        output_collision = more_than_one([p["out_valid"] for p in ports])

        # -- status ----------------------------------------------------------------------
        quiet = Cat(*(p["quiet"] for p in ports)).all()
        m.d.comb += [
            self.busy.eq(start | run),
            # An input slot this cycle, or a beat in the input pipeline, means a write in a
            # later cycle, so both exclude done.
            done.eq((start | run) & quiet & ~slot & ~Cat(*in_flight).any()),
            self.done.eq(done),
        ]
        with m.If(start):
            m.d.sync += run.eq(1)
        with m.Elif(done):
            m.d.sync += run.eq(0)

        cyc = Signal(32)
        counting = Signal()
        m.d.comb += self.cycle.eq(Mux(start, 0, cyc))
        with m.If(start | counting):
            m.d.sync += [cyc.eq(self.cycle + 1), counting.eq(1)]

        err = Signal()
        err_now = Cat(
            in_phase & ~self.in_valid,                  # input underrun
            bad_model,
            self.out_valid & ~self.out_ready,           # output stall
            output_collision,
            *(p["error"] for p in ports),
        ).any()
        m.d.sync += err.eq(err | err_now)
        m.d.comb += self.error.eq(err | err_now)

        # -- trace -----------------------------------------------------------------------
        m.d.comb += [
            self.trace_valid.eq(Cat(*(p["trace_valid"] for p in ports))),
            self.trace_pc.eq(Cat(*(p["trace_pc"] for p in ports))),
        ]
        if flavour == "instance":
            # Simulation only: writes the issue trace to +TIDAL_TRACE=<file>.
            m.submodules.trace = Instance(
                "tidal_trace", p_NCORES=n, i_clk=ClockSignal(), i_rst=ResetSignal(),
                i_cycle=self.cycle, i_valid=self.trace_valid, i_pc=self.trace_pc,
                i_done=self.done)
        return m
