"""Memories and repeated blocks in the two build flavours of the tidal RTL.

One elaboration code path builds both flavours of the machine:

``"native"``
    Plain Amaranth: memories are :class:`amaranth.lib.memory.Memory` with ``init=`` taken
    from a :class:`~isa.program.Program`, repeated blocks (lane, core) are ordinary
    submodules. Amaranth's simulator runs this flavour (it cannot simulate an ``Instance``).
``"instance"``
    For Verilog simulators: every memory is an ``Instance`` of the hand-written
    ``tidal_mem`` (``rtl/verilog/tidal_mem.v``, which loads its contents by its hierarchical
    name at time 0), and every repeated block is converted to Verilog once and placed with
    ``Instance``, so that a full C6B32 builds in about a minute in Verilator
    (``docs/rtl.md``).

The helpers here are the only places the flavours differ.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Signal, Value, unsigned
from amaranth.lib import memory, wiring

__all__ = ["FLAVOURS", "MemPort", "addr_bits", "check_flavour", "add_memory", "own_copy",
           "place"]

#: The build flavours (see the module docstring).
FLAVOURS = ("native", "instance")


def check_flavour(flavour: str) -> str:
    """Return ``flavour`` if it is one of :data:`FLAVOURS`.

    Raises
    ------
    ValueError
        Naming the bad value and the known ones.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, not {flavour!r}")
    return flavour


def addr_bits(depth: int) -> int:
    """Return the address width of a memory of ``depth`` words (at least 1 bit).

    ``tidal_mem`` keeps one address bit for ``DEPTH = 1`` so that its ports exist.
    """
    return max(1, (depth - 1).bit_length())


class MemPort:
    """The signals of one 1-read/1-write synchronous memory (read and write port).

    Members
    -------
    raddr : Signal(addr_bits(depth))
        Read address, presented in cycle ``t``.
    rdata : Signal(width)
        Data of the word at ``raddr`` of cycle ``t``, in cycle ``t + latency`` (old data if
        the word is written in cycle ``t``); see :func:`add_memory`.
    rdata_pre : Signal(width)
        The same data a cycle early, in cycle ``t + latency - 1``: the input of the last
        output register, for a consumer that keeps its own copy of that register (only
        meaningful when ``latency`` is at least 2).
    we : Signal(1)
        Write enable; the write happens in the cycle it is high.
    waddr : Signal(addr_bits(depth))
    wdata : Signal(width)
    """

    def __init__(self, name: str, width: int, depth: int) -> None:
        abits = addr_bits(depth)
        self.width, self.depth = width, depth
        self.raddr = Signal(abits, name=f"{name}_raddr")
        self.rdata = Signal(width, name=f"{name}_rdata")
        self.rdata_pre = Signal(width, name=f"{name}_rdata_pre")
        self.we = Signal(name=f"{name}_we")
        self.waddr = Signal(abits, name=f"{name}_waddr")
        self.wdata = Signal(width, name=f"{name}_wdata")


def add_memory(m: Module, name: str, *, width: int, depth: int, flavour: str,
               init: Sequence[int] | None = None, writable: bool = True,
               registry: dict[str, memory.Memory] | None = None,
               latency: int = 1) -> MemPort:
    """Add memory ``name`` to ``m`` and return its ports.

    Parameters
    ----------
    m : Module
    name : str
        Submodule name; in the ``"instance"`` flavour also the last component of the
        hierarchical name ``tidal_mem`` loads its image by.
    width, depth : int
        Word width in bits and number of words.
    flavour : str
        ``"native"`` or ``"instance"``.
    init : sequence of int, optional
        Initial contents from word 0 (``"native"`` only; the rest is zero). The
        ``"instance"`` flavour loads its contents from a file at time 0 instead.
    writable : bool
        False for memories the machine only reads (instructions, weights, clamp table,
        input descriptors): the native flavour then has no write port, and the instance's
        write enable is tied low.
    registry : dict, optional
        Native flavour: the :class:`~amaranth.lib.memory.Memory` is recorded here under
        ``name``, so that a testbench can read and write its contents.
    latency : int
        Read latency in cycles (``Depths.mem_read`` for the data memories): the synchronous
        read, then ``latency - 1`` output registers (which is how a block RAM's registered
        output closes timing).
    """
    if latency < 1:
        raise ValueError(f"memory {name}: read latency must be at least 1, not {latency}")
    port = MemPort(name, width, depth)
    # The memory's own synchronous read drives `raw`; `latency - 1` registers follow.
    raw = Signal(width, name=f"{name}_rdata_raw")
    pre: Value = raw
    rdata: Value = raw
    for k in range(1, latency):
        pre = rdata
        # Kept like the consumers' copies (`own_copy`), or synthesis would merge the two.
        reg = Signal(width, name=f"{name}_rdata{k}", reset_less=True, attrs={"keep": 1})
        m.d.sync += reg.eq(rdata)
        rdata = reg
    m.d.comb += [port.rdata.eq(rdata), port.rdata_pre.eq(pre)]
    if flavour == "instance":
        m.submodules[name] = Instance(
            "tidal_mem", p_WIDTH=width, p_DEPTH=depth,
            i_clk=ClockSignal(), i_raddr=port.raddr, o_rdata=raw,
            i_we=port.we if writable else 0, i_waddr=port.waddr, i_wdata=port.wdata)
        return port
    init = [int(v) for v in (init if init is not None else [])]
    if len(init) > depth:
        raise ValueError(f"memory {name}: {len(init)} initial words exceed the depth {depth}")
    mem = memory.Memory(shape=unsigned(width), depth=depth, init=init)
    m.submodules[name] = mem
    if registry is not None:
        registry[name] = mem
    # Not transparent: a read in the cycle of a write to the same word sees the old value.
    rp = mem.read_port(domain="sync")
    m.d.comb += [rp.addr.eq(port.raddr), raw.eq(rp.data)]
    if writable:
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(port.waddr), wp.data.eq(port.wdata), wp.en.eq(port.we)]
    return port


def own_copy(m: Module, pre: Value, latency: int, name: str) -> Value:
    """Return a consumer's own copy of a memory's last output register.

    A memory read by many consumers (the tensor RAM by the B lanes of a core) would drive
    all of them from one output register, and that register's fan-out would sit in front of
    each consumer's first stage. A consumer that registers :attr:`MemPort.rdata_pre` itself
    sees the same data in the same cycle as ``rdata`` and can be placed beside its copy.
    The copies are identical, so each copy (and the memory's own output registers) carries
    the ``keep`` attribute: synthesis must not merge them back into one (the ``make
    timing`` flow makes Yosys honour it on the flip-flop; vendor tools read it as
    "preserve").

    Parameters
    ----------
    pre : Value
        The memory's ``rdata_pre``.
    latency : int
        The memory's read latency: at 1 there is no output register to copy and ``pre``
        (then the memory's own read data) is returned as it is.
    name : str
        Name of the copy.
    """
    if latency < 2:
        return pre
    copy = Signal(len(pre), name=name, reset_less=True, attrs={"keep": 1})
    m.d.sync += copy.eq(pre)
    return copy


def place(m: Module, name: str, *, module: str, signature: wiring.Signature,
          connections: dict[str, Value], flavour: str,
          native: wiring.Component | None = None) -> None:
    """Place one repeated block (a lane or a core) in ``m``.

    In the ``"instance"`` flavour the block is an ``Instance`` of the Verilog module
    ``module`` (converted once by :mod:`rtl.gen`), with clock and reset and one port per
    member of ``signature``; in the ``"native"`` flavour ``native`` (a component with that
    signature) is added as a submodule and its ports are driven from / drive
    ``connections``.

    Parameters
    ----------
    connections : dict of str to Value
        Every member of ``signature`` by name: the value driving an input or the signal an
        output drives.
    """
    members = dict(signature.members.items())
    if set(members) != set(connections):
        raise ValueError(f"{name}: connections {sorted(connections)} do not match the ports "
                         f"{sorted(members)}")
    if flavour == "instance":
        ports: dict[str, Value] = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for pname, member in members.items():
            prefix = "i_" if member.flow == wiring.In else "o_"
            ports[prefix + pname] = connections[pname]
        m.submodules[name] = Instance(module, **ports)
        return
    assert native is not None, f"{name}: the native flavour needs the component"
    m.submodules[name] = native
    for pname, member in members.items():
        port = getattr(native, pname)
        if member.flow == wiring.In:
            m.d.comb += port.eq(connections[pname])
        else:
            m.d.comb += connections[pname].eq(port)
