"""One core of the machine: sequencer, memories, matrix block, accumulator, vector unit.

::

                 imem ──► Sequencer ──► decode (isa.instructions.amaranth_layout)
                                          │ t: read addresses
          ┌───────────────────┬──────────┼──────────────┬─────────────┐
          ▼                   ▼          ▼              ▼             ▼
        tram (1R1W)   matrix: B lanes acc (VEC copy)  clamp      Accumulator (MAC ctrl)
          │ act bus ──►  wmem + DotUnit                  │              │
          │                   │ dots (t+2+L)             │              ▼
          │                   └─────────────────────────────►  + acc_mac read / bypass
          │                                              │              │ write (t+3+L)
          └──────────────► VectorUnit ◄──────────────────┘              ▼
                              │ t+4 local write            acc + acc_mac (written together)
                              └─► link register (t+5) ──► link bus (all cores' links)
                                                                │
            receive muxes: TRAM blocks ─► tram, ACCS blocks ─► acc ◄┘ (rtl.interconnect)

The tensor RAM's write port takes, in any one cycle, at most one of: a local ``VEC`` result
(t+4), an input beat (``in_we``) or another core's ``TRAM`` block from the link bus (t+5).
The accumulator store's (both copies) takes at most one of: a ``MAC`` write-back, a local
``VEC`` result (``ACC``, or ``ACCS`` with the own bit) or another core's ``ACCS`` block from
the link bus (t+5). The schedule guarantees this (architecture §5); a collision raises
``error`` rather than being resolved silently.

The function unit (:class:`~rtl.function.FunctionUnit`) reads the tensor RAM like a ``VEC``
and is one more writer of each port (an ``FN`` result, at t + fn_write).

An ``ACCS`` arrival goes through the same write port as every other accumulator write, so
the accumulate stage's capture of the previous cycle's write (:mod:`rtl.accum`) sees it as
it sees a ``VEC`` result; no legal program relies on that (a ``MAC`` must not read an
accumulator whose ``ACCS`` write is still in flight, architecture §5 rule 3).

The matrix block is placed with :func:`rtl.memory.place`: an ``Instance`` of the
once-converted ``tidal_matrix`` (itself B ``tidal_lane`` instances) in the ``"instance"``
flavour; the vector and function units place their B lanes (``tidal_vlane``,
``tidal_flane``) the same way.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from isa.config import Config
from isa.instructions import PC_BITS, WORD_BITS, Opcode, amaranth_layout
from isa.program import INSTR_READ, CoreImage
from rtl.accum import Accumulator
from rtl.function import FunctionUnit
from rtl.interconnect import link_addr_bits, merge, receive
from rtl.matrix import Matrix, matrix_signature
from rtl.memory import add_memory, addr_bits, check_flavour, own_copy, place
from rtl.sequencer import Sequencer
from rtl.vector import VectorUnit

__all__ = ["core_id_bits", "core_signature", "Core", "core_images"]


def core_id_bits(config: Config) -> int:
    """Return the width of a core's ``core_id`` input."""
    return max(1, (config.num_cores - 1).bit_length())


def core_signature(config: Config) -> wiring.Signature:
    """Return the signature of a :class:`Core` of ``config`` (see its Members)."""
    b, n = config.block_size, config.num_cores
    return wiring.Signature({
        "start": In(1),
        "entry": In(addr_bits(config.instr_mem_depth)),
        "core_id": In(core_id_bits(config)),
        "in_we": In(1),
        "in_addr": In(addr_bits(config.tensor_ram_depth)),
        "in_data": In(16 * b),
        "links_dest": In(n * n),
        "links_acc": In(n),
        "links_addr": In(link_addr_bits(config) * n),
        "links_data": In(32 * b * n),
        "quiet": Out(1),
        "error": Out(1),
        "trace_valid": Out(1),
        "trace_pc": Out(PC_BITS),
        "link_dest": Out(n),
        "link_acc": Out(1),
        "link_addr": Out(link_addr_bits(config)),
        "link_data": Out(32 * b),
        "out_valid": Out(1),
        "out_data": Out(16 * b),
    })


def _pack(rows: np.ndarray, bits: int) -> list[int]:
    """Return each row of ``rows`` (unsigned ints) as one integer, element 0 lowest."""
    out = []
    for row in np.asarray(rows, dtype=np.uint64):
        word = 0
        for j, v in enumerate(row.tolist()):
            word |= int(v) << (bits * j)
        out.append(word)
    return out


def core_images(image: CoreImage, config: Config) -> dict[str, list[int]]:
    """Return the initial words of one core's memories, by memory name below the core.

    Keys: ``imem``, ``tram``, ``clamp`` and ``matrix.lane<L>.wmem`` for every lane ``L``, in the
    word formats of ``docs/rtl.md`` (the ``tidal_mem`` hex files hold the same
    words). Words beyond an image are zero and are not listed.
    """
    b = config.block_size
    weights = np.asarray(image.weights, dtype=np.uint16).reshape(-1, b, b)
    clamps = np.ascontiguousarray(image.clamps, dtype=np.float32).view(np.uint32)
    images = {
        "imem": [int(w) for w in np.asarray(image.instructions, dtype=np.uint64)],
        "tram": _pack(np.asarray(image.tram_init, dtype=np.uint16).reshape(-1, b), 16),
        "clamp": _pack(clamps.reshape(-1, 2), 32),
    }
    for lane in range(b):
        images[f"matrix.lane{lane}.wmem"] = _pack(weights[:, lane, :], 16)
    return images


class Core(wiring.Component):
    """One core (see the module docstring for the structure).

    Parameters
    ----------
    config : Config
    flavour : str
        ``"native"`` or ``"instance"`` (:mod:`rtl.memory`).
    image : CoreImage, optional
        Native flavour: initial memory contents (zero without).
    broken_rounding : bool
        Test-only, passed to :class:`~rtl.vector.VectorUnit`.
    write_trace : bool
        Instance flavour, simulation only: add a ``tidal_wtrace`` instance that reports
        every tensor-RAM and accumulator write (``rtl/verilog/tidal_wtrace.v``). Without
        it the core has no trace logic at all.

    Members
    -------
    start : In(1)
        Cycle 0 of an inference (shared by all cores).
    entry : In(addr_bits(instr_mem_depth))
        Entry pc of the model selected on the input port (shared by all cores).
    core_id : In(core_id_bits)
        This core's index (decides which bit of a ``VEC`` core mask is a local write).
    in_we : In(1)
        An input beat is written into this core's tensor RAM this cycle.
    in_addr : In(addr_bits(tensor_ram_depth))
    in_data : In(16 * B)
    links_dest, links_acc, links_addr, links_data : In
        The link bus: every core's link register (this core's included), core ``k``'s
        fields at index ``k`` (:mod:`rtl.interconnect`). The same signals for every core.
    quiet : Out(1)
        Nothing of this core happens after this cycle: its program has ended (in this cycle
        or before) and no write or output beat of it is in flight.
    error : Out(1)
        A write-port collision in this cycle (tensor RAM or accumulator store), which a
        valid schedule never causes, or an inference starting in the first two cycles
        after reset (:class:`~rtl.sequencer.Sequencer`).
    trace_valid : Out(1)
        An instruction issues this cycle.
    trace_pc : Out(16)
        Its pc.
    link_dest, link_acc, link_addr, link_data : Out
        This core's outbound link (:mod:`rtl.interconnect`): which other cores' tensor RAMs
        or accumulator stores the block goes to this cycle, its kind, address and data.
    out_valid, out_data : Out
        This core's output beat this cycle (:class:`~rtl.vector.VectorUnit`).
    """

    def __init__(self, config: Config, *, flavour: str = "native",
                 image: CoreImage | None = None, broken_rounding: bool = False,
                 write_trace: bool = False) -> None:
        self.config = config
        self.flavour = check_flavour(flavour)
        if image is not None and flavour != "native":
            raise ValueError("only the native flavour takes memory images; the instance "
                             "flavour loads them from files at time 0")
        if write_trace and flavour != "instance":
            raise ValueError("the write trace is a Verilog instance: instance flavour only")
        self.write_trace = bool(write_trace)
        self.images = core_images(image, config) if image is not None else {}
        self.broken_rounding = bool(broken_rounding)
        #: Native flavour, once elaborated: the core's memories by name (for testbenches).
        self.memories: dict[str, memory.Memory] = {}
        #: Native flavour: the matrix block.
        self.matrix = None
        if flavour == "native":
            self.matrix = Matrix(config, flavour=flavour,
                                 weights=[self.images.get(f"matrix.lane{lane}.wmem")
                                          for lane in range(config.block_size)])
        super().__init__(core_signature(config))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg, flavour = self.config, self.flavour
        b, n = cfg.block_size, cfg.num_cores
        init = self.images.get
        reg = self.memories

        # Memories (their submodule names are the hierarchical names of the contract).
        # The instruction memory's data is registered (INSTR_READ): the sequencer fetches
        # ahead of issue, so only a refill sees the latency (MODEL_SETUP).
        imem = add_memory(m, "imem", width=WORD_BITS, depth=cfg.instr_mem_depth,
                          flavour=flavour, init=init("imem"), writable=False, registry=reg,
                          latency=INSTR_READ)
        # The data memories read with the configuration's latency.
        rl = cfg.depths.mem_read
        tram = add_memory(m, "tram", width=16 * b, depth=cfg.tensor_ram_depth,
                          flavour=flavour, init=init("tram"), registry=reg, latency=rl)
        clamp = add_memory(m, "clamp", width=64, depth=cfg.clamp_store_depth,
                           flavour=flavour, init=init("clamp"), writable=False, registry=reg,
                           latency=rl)
        # Two copies of the accumulator store written together: "acc" is read by VEC (and
        # by the testbench), "acc_mac" by the accumulate stage of MAC.
        acc = add_memory(m, "acc", width=32 * b, depth=cfg.accum_store_depth, flavour=flavour,
                         registry=reg, latency=rl)
        acc_mac = add_memory(m, "acc_mac", width=32 * b, depth=cfg.accum_store_depth,
                             flavour=flavour, registry=reg, latency=rl)

        # Fetch, issue and decode (through the isa layouts only) of the registered word.
        m.submodules.seq = seq = Sequencer(cfg)
        m.d.comb += [seq.start.eq(self.start), seq.entry.eq(self.entry), seq.word.eq(imem.rdata),
                     imem.raddr.eq(seq.imem_addr)]
        word = seq.instr
        opcode = data.View(amaranth_layout(Opcode.END), word).opcode
        mac = data.View(amaranth_layout(Opcode.MAC), word)
        vec = data.View(amaranth_layout(Opcode.VEC), word)
        fn = data.View(amaranth_layout(Opcode.FN), word)
        is_vec = opcode == Opcode.VEC
        is_fn = opcode == Opcode.FN

        # Cycle t: read addresses (one instruction per cycle, so one tensor-RAM read port).
        m.d.comb += [
            tram.raddr.eq(Mux(is_vec, vec.tram, Mux(is_fn, fn.tram, mac.tram))),
            acc.raddr.eq(vec.acc),
            clamp.raddr.eq(vec.clamp),
        ]

        # Matrix block: B lanes sharing the weight address, activation bus and valid.
        m.submodules.accum = accum = Accumulator(cfg)
        dots = Signal(32 * b)
        place(m, "matrix", module="tidal_matrix", signature=matrix_signature(cfg),
              connections={"waddr": mac.weight[:addr_bits(cfg.weight_store_depth)],
                           "act": tram.rdata_pre, "valid": accum.lane_valid, "dots": dots},
              flavour=flavour, native=self.matrix)
        m.d.comb += [
            accum.issue.eq(seq.issue & (opcode == Opcode.MAC)),
            accum.acc_addr.eq(mac.acc),
            accum.accumulate.eq(mac.accumulate),
            accum.dots.eq(dots),
            acc_mac.raddr.eq(accum.raddr),
            accum.rdata.eq(acc_mac.rdata),
        ]

        # Vector unit.
        m.submodules.vector = vu = VectorUnit(cfg, flavour=flavour,
                                                  broken_rounding=self.broken_rounding)
        own = Signal(n)
        m.d.comb += [
            own.eq(Const(1, n) << self.core_id),
            vu.issue.eq(seq.issue & is_vec),
            vu.op.eq(vec.op),
            vu.dest.eq(vec.dest),
            vu.addr.eq(vec.addr),
            vu.cores.eq(vec.cores[:n]),
            vu.own.eq(own),
            # One register early: the lanes keep their own copies (rtl.memory.own_copy).
            vu.a.eq(acc.rdata_pre),
            vu.t.eq(tram.rdata_pre),
            vu.bounds.eq(clamp.rdata),
        ]

        # Function unit: reads the tensor RAM like a VEC, writes only this core.
        m.submodules.function = fu = FunctionUnit(cfg, flavour=flavour)
        m.d.comb += [
            fu.issue.eq(seq.issue & is_fn),
            fu.fn.eq(fn.fn),
            fu.dest.eq(fn.dest),
            fu.addr.eq(fn.addr),
            # Its own copy of the tensor RAM's output register, placed beside it (as the
            # lanes and the vector unit's lanes keep theirs: rtl.memory.own_copy).
            fu.t.eq(own_copy(m, tram.rdata_pre, rl, "fn_t")),
        ]

        # What the link bus brings this core: other cores' TRAM and ACCS blocks.
        tram_links, acc_links = receive(cfg, own, self.links_dest, self.links_acc,
                                        self.links_addr, self.links_data)

        # Accumulator store write port, both copies: MAC write-back, local VEC result or
        # another core's ACCS block.
        acc_we = Signal()
        acc_waddr = Signal.like(acc.waddr)
        acc_wdata = Signal(32 * b)
        acc_collision = Signal()
        we, waddr, wdata, collision = merge(
            [(accum.wb_we, accum.wb_addr, accum.wb_data), (vu.acc_we, vu.waddr, vu.result),
             (fu.acc_we, fu.waddr, fu.result), *acc_links], len(acc_waddr), 32 * b)
        m.d.comb += [
            acc_we.eq(we),
            acc_waddr.eq(waddr),
            acc_wdata.eq(wdata),
            acc_collision.eq(collision),
            accum.we.eq(acc_we),
            accum.waddr.eq(acc_waddr),
            accum.wdata.eq(acc_wdata),
        ]
        for copy in (acc, acc_mac):
            m.d.comb += [copy.we.eq(acc_we), copy.waddr.eq(acc_waddr),
                         copy.wdata.eq(acc_wdata)]

        # Tensor RAM write port: local VEC result, input beat or another core's TRAM block.
        tram_collision = Signal()
        we, waddr, wdata, collision = merge(
            [(vu.tram_we, vu.waddr, vu.result_bf16), (self.in_we, self.in_addr, self.in_data),
             (fu.tram_we, fu.waddr, fu.result_bf16), *tram_links], len(tram.waddr), 16 * b)
        m.d.comb += [tram.we.eq(we), tram.waddr.eq(waddr), tram.wdata.eq(wdata),
                     tram_collision.eq(collision)]
        if self.write_trace:
            # Simulation only: every write of both ports to +TIDAL_WTRACE=<dir>.
            m.submodules.wtrace = Instance(
                "tidal_wtrace", p_TRAM_AW=len(tram.waddr), p_TRAM_W=16 * b,
                p_ACC_AW=len(acc_waddr), p_ACC_W=32 * b, p_ID_W=len(self.core_id),
                i_clk=ClockSignal(), i_rst=ResetSignal(), i_start=self.start,
                i_core_id=self.core_id, i_quiet=self.quiet, i_tram_we=we, i_tram_addr=waddr,
                i_tram_data=wdata, i_acc_we=acc_we, i_acc_addr=acc_waddr,
                i_acc_data=acc_wdata)

        m.d.comb += [
            self.quiet.eq(~seq.more & ~accum.pending & ~vu.pending & ~fu.pending),
            self.error.eq(tram_collision | acc_collision | seq.error),
            self.trace_valid.eq(seq.issue),
            self.trace_pc.eq(seq.pc),
            self.link_dest.eq(vu.link_dest),
            self.link_acc.eq(vu.link_acc),
            self.link_addr.eq(vu.link_addr),
            self.link_data.eq(vu.link_data),
            self.out_valid.eq(vu.out_valid),
            self.out_data.eq(vu.out_data),
        ]
        return m
