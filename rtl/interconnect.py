"""The interconnect between cores: link registers, the link bus and the receive muxes.

Each core has one outbound link: the last register of its vector unit's link pipeline
(``Depths.link`` registers after the local write of a ``VEC``, :mod:`rtl.vector`), which
holds one block per cycle:

``link_dest`` (``num_cores`` bits)
    Bit ``c``: core ``c`` writes the block in this cycle (the sender's own bit is always
    clear: a core writes its own memories locally, earlier).
``link_acc`` (1 bit)
    The kind: 1 for an ``ACCS`` block (fp32, into the accumulator stores), 0 for a ``TRAM``
    block (into the tensor RAMs).
``link_addr`` (:func:`link_addr_bits`)
    Tensor-RAM or accumulator address.
``link_data`` (``32 × B`` bits)
    B lanes of 32 bits, lane ``i`` at bits ``[32i, 32i + 32)``: fp32 for ``ACCS``; for
    ``TRAM`` the rounded result as the vector unit holds it, bf16 in the upper half of each
    lane (:func:`bf16_block`). Only this register is 32 bits wide per
    lane; nothing else of the datapath is duplicated for ``ACCS``.

Output beats take a pipeline of their own (``Depths.output`` registers) to the top's
output port. The top concatenates every core's link into the **link bus** (core ``k``'s fields
at index ``k`` of ``links_dest``, ``links_acc``, ``links_addr``, ``links_data``) and gives
the whole bus to every core. Each core selects what is addressed to it (:func:`receive`),
so the receive muxes are part of the core, converted to Verilog once; the top has no logic
per destination core, and every core sees the same bus signals (which is also what keeps
Verilator from generating code per core instance, ``docs/rtl.md``).

One cycle can bring a core a tensor-RAM block and an accumulator block from two different
senders (or an input beat and an accumulator block), so each core has one receive mux per
memory. With the core's own writers (input beat or local ``VEC`` result for the tensor
RAM; ``MAC`` write-back or local ``VEC`` result for the accumulator store) they form the
memories' write ports (:func:`merge`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Value

from isa.config import Config
from rtl.memory import addr_bits

__all__ = ["link_addr_bits", "bf16_block", "Source", "receive", "merge", "or_mux",
           "more_than_one"]


def link_addr_bits(config: Config) -> int:
    """Return the width of a link's address: a tensor-RAM or an accumulator address."""
    return max(addr_bits(config.tensor_ram_depth), addr_bits(config.accum_store_depth))


def bf16_block(data: Value, block_size: int) -> Value:
    """Return the bf16 block (lane ``i`` at bits ``[16i, 16i + 16)``) held in a block of
    32-bit lanes (lane ``i`` at ``[32i, 32i + 32)``): the upper half of each lane, which is
    how a rounded result, and so a link carrying a ``TRAM`` block or an output beat, holds
    bf16 values. Wiring only."""
    return Cat(*(data[32 * i + 16:32 * i + 32] for i in range(block_size)))


#: One writer of a memory's write port: (enable, address, data).
Source = tuple[Value, Value, Value]


def receive(config: Config, own: Value, links_dest: Value, links_acc: Value,
            links_addr: Value, links_data: Value) -> tuple[list[Source], list[Source]]:
    """Return the link bus's writers of one core's tensor RAM and of its accumulator store.

    Parameters
    ----------
    config : Config
    own : Value
        One-hot mask of the receiving core.
    links_dest, links_acc, links_addr, links_data : Value
        The link bus (see the module docstring).

    Returns
    -------
    tram, acc : list of Source
        One writer per sender: bf16 blocks for the tensor RAM, fp32 blocks for the
        accumulator store. Every sender is listed, the receiving core included: its own
        ``link_dest`` bit is always clear, so it never enables itself, and a core needs no
        wiring of its own.
    """
    b, n = config.block_size, config.num_cores
    lab = link_addr_bits(config)
    tram, acc = [], []
    for k in range(n):
        dest = links_dest[n * k:n * (k + 1)]
        kind = links_acc[k]
        addr = links_addr[lab * k:lab * (k + 1)]
        data = links_data[32 * b * k:32 * b * (k + 1)]
        to_me = (dest & own).any()
        tram.append((to_me & ~kind, addr, bf16_block(data, b)))
        acc.append((to_me & kind, addr, data))
    return tram, acc


def merge(sources: list[Source], addr_width: int, data_width: int
          ) -> tuple[Value, Value, Value, Value]:
    """Return ``(we, addr, data, collision)`` of a write port with these writers.

    At most one writer is enabled per cycle (architecture §5 rule 1), so the port is an
    AND-OR mux; ``collision`` is high when two or more are, which a valid schedule never
    causes (the RTL raises ``error`` rather than resolve it).
    """
    enables = [en for en, _, _ in sources]
    return (Cat(*enables).any(),
            or_mux([(en, a) for en, a, _ in sources], addr_width),
            or_mux([(en, d) for en, _, d in sources], data_width),
            more_than_one(enables))


def or_mux(pairs: list[tuple[Value, Value]], width: int) -> Value:
    """Return the OR of the values whose enable is high (at most one is, by schedule)."""
    out: Value = Const(0, width)
    for en, value in pairs:
        out = out | Mux(en, value, 0)
    return out[:width]


def more_than_one(bits: list[Value]) -> Value:
    """Return a value that is 1 when two or more of ``bits`` are 1."""
    seen: Value = Const(0, 1)
    two: Value = Const(0, 1)
    for bit in bits:
        two = two | (seen & bit)
        seen = seen | bit
    return two
