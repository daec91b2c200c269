"""Constrained-random programs for the co-simulation: legal by construction, hard values.

:func:`random_program` writes a program cycle by cycle, in execution order, keeping for
every memory word the cycles its writes land, so that every read sees every earlier write
landed, every write lands after the earlier writes of its word in a free port cycle, and no
two output beats share a cycle; the VM's schedule checks (:class:`sim.vm.VM`) then filter
it (a rejected draw is redrawn). Everything is drawn from the seed:

- every ``VecOp``, every ``Dest``, ``MAC`` chains (``accumulate``), ``WAIT`` s,
  ``VEC``/``ACCS`` writes to other cores, and ``FN`` s of every function to tensor RAM
  and to the accumulator;
- addresses at both ends and around the middle of every memory (tensor RAM, accumulator
  store, weight store: the top half and the last word too), every clamp entry;
- a clamp table with entries of every kind (none, one-sided, symmetric, a point, ±0, fp32
  bounds that bf16 cannot represent, subnormal and inverted bounds);
- input beats (1–8, or now and then 10–24 for a short program, so that they continue
  after the last output beat), each to a random set of cores, sometimes none;
- weights, tensor-RAM images and inputs from :func:`hard_bf16`: wide dynamic range, values
  with few mantissa bits (exact sums, rounding ties, cancellation), ±0, subnormals,
  infinities and NaNs; a quarter of the tensor-RAM image from :func:`function_edges`.

``python -m sim.cosim.random_programs`` runs a batch against the RTL (``make
cosim-random``); every program's seed is printed, and ``--seed S --count 1`` reruns one.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from isa.config import Config, ConfigError
from isa.functions import SPECS, Function, Mode, windows
from isa.instructions import Dest, End, Fn, Instruction, Mac, Vec, VecOp, Wait, encode_program
from isa.program import CoreImage, Program, TensorLayout
from isa.timing import latencies
from sim.vm import VM, ScheduleError

__all__ = ["SPECIAL_BF16", "hard_bf16", "function_edges", "clamp_table", "random_program",
           "RandomCase", "random_case", "main"]

#: bf16 bit patterns every input draws from: ±0, ±inf, quiet and signalling-style NaNs of
#: both signs, the smallest and largest subnormals, the smallest normal, the largest
#: finite values, ±1.
SPECIAL_BF16 = np.array([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x0001,
                         0x807F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF80], np.uint16)

#: Probabilities of ACC, TRAM, OUTPUT and ACCS for a random VEC's destination.
DEST_P = (.3, .35, .15, .2)

#: A memory word: (memory, core, address).
_Word = tuple[str, int, int]


def hard_bf16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Return bf16 bit patterns (``uint16``) that exercise the numerics.

    A mix of: moderate values (exponents 2^-7 .. 2^7, any mantissa); values with at most
    two mantissa bits over a narrower range, whose sums are often exact, tied halfway
    between two bf16 or fp32 values, or cancel; any finite exponent (over- and underflow);
    and :data:`SPECIAL_BF16`.
    """
    kind = rng.choice(4, size=shape, p=(.35, .3, .15, .2))
    sign = rng.integers(0, 2, shape, dtype=np.uint32) << 15
    mant = rng.integers(0, 128, shape, dtype=np.uint32)
    exp = rng.integers(120, 135, shape, dtype=np.uint32)
    sparse_exp = rng.integers(118, 138, shape, dtype=np.uint32)
    sparse_mant = rng.integers(0, 4, shape, dtype=np.uint32) << 5
    wide_exp = rng.integers(1, 255, shape, dtype=np.uint32)
    special = rng.choice(SPECIAL_BF16, size=shape).astype(np.uint32)
    out = np.select([kind == 0, kind == 1, kind == 2],
                    [sign | exp << 7 | mant, sign | sparse_exp << 7 | sparse_mant,
                     sign | wide_exp << 7 | mant], special)
    return out.astype(np.uint16)


def function_edges(function: Function | int) -> np.ndarray:
    """Return bf16 bit patterns (``uint16``, sorted, unique) at the edges of ``function``.

    Both signs of: :data:`SPECIAL_BF16`; exponent fields 0–2 (zero, subnormals, the
    smallest normals), 125–129 (around 1), 252–255 (the largest and inf/NaN) and, for a
    ``WINDOW`` function, both sides of both edges of its windows (:func:`isa.functions.windows`:
    fields ``lo − 1``, ``lo``, ``hi − 1``, ``hi``); each with fractions 0, 1, 63, 64
    (``LOG``'s split at 1.5), 126 and 127.
    """
    function = Function(function)
    fields = {0, 1, 2, 125, 126, 127, 128, 129, 252, 253, 254, 255}
    if SPECS[function].mode == Mode.WINDOW:
        for w in windows(function):
            fields |= {w.lo - 1, w.lo, w.hi - 1, w.hi}
    e = np.array(sorted(f for f in fields if 0 <= f <= 255), np.uint32)
    f = np.array([0, 1, 63, 64, 126, 127], np.uint32)
    mags = (e[:, None] << 7 | f[None, :]).reshape(-1)
    out = np.concatenate([mags, mags | 0x8000, SPECIAL_BF16.astype(np.uint32)])
    return np.unique(out).astype(np.uint16)


def clamp_table(rng: np.random.Generator, depth: int) -> np.ndarray:
    """Return a clamp table (``float32`` [depth, 2]) with entries of every kind.

    In order, repeated to ``depth``: none, ``[0, inf)``, ``(-inf, 0]``, ``[-1, 1]``, one
    point, ``[-0, +0]``, random fp32 bounds bf16 cannot represent (one of them possibly
    subnormal), and an inverted pair (``low > high``).
    """
    point = np.float32(rng.choice([-1, 1]) * rng.uniform(0.1, 4))
    odd = np.float32(1 + 2.0 ** -20) * np.float32(rng.uniform(-2, 0))
    tiny = np.float32(rng.choice([1e-39, 3e-38, 0.75]))
    kinds = [(-np.inf, np.inf), (0.0, np.inf), (-np.inf, 0.0), (-1.0, 1.0), (point, point),
             (-0.0, 0.0), (odd, tiny), (1.0, -1.0)]
    return np.array([kinds[i % len(kinds)] for i in range(depth)], np.float32)


def _pools(cfg: Config, rng: np.random.Generator, n_in: int
           ) -> tuple[list[int], list[int], list[int], list[int]]:
    """Return (input addresses, writable tensor-RAM, accumulator, weight) address pools."""
    d, h = cfg.tensor_ram_depth, cfg.tensor_ram_depth // 2
    tram = sorted({*range(n_in + 6), h - 1, h, h + 1, h + 2, d - 2, d - 1})
    tram = [int(a) for a in rng.permutation(tram)]
    a, ha = cfg.accum_store_depth, cfg.accum_store_depth // 2
    acc = sorted({0, 1, 2, ha - 1, ha, a - 1})
    w, hw = cfg.weight_store_depth, cfg.weight_store_depth // 2
    weights = sorted({0, 1, hw, w - 1})
    return tram[:n_in], tram[n_in:], acc, weights


class _Code:
    """Per-core instruction lists built by issue cycle (the WAITs are inserted)."""

    def __init__(self, num_cores: int) -> None:
        self.cores: list[list[Instruction]] = [[] for _ in range(num_cores)]
        self.cursor = [0] * num_cores

    def at(self, core: int, cycle: int, instr: Instruction) -> None:
        if cycle > self.cursor[core]:
            self.cores[core].append(Wait(cycle - self.cursor[core]))
        self.cores[core].append(instr)
        self.cursor[core] = cycle + (instr.cycles if isinstance(instr, Wait) else 1)


def _draw(cfg: Config, rng: np.random.Generator, name: str) -> Program:
    """Draw one program (legal by construction; see the module docstring)."""
    n_cores, b = cfg.num_cores, cfg.block_size
    lat = latencies(cfg)
    # Now and then many input beats and a short program: beats after the last output.
    short = rng.random() < .25
    n_in = int(rng.integers(10, 25) if short else rng.integers(1, 9))
    in_addrs, tram_pool, acc_pool, tile_pool = _pools(cfg, rng, n_in)
    readable_tram = tram_pool + in_addrs
    dests = [(int(rng.integers(1, 1 << n_cores)) if rng.random() < .9 else 0, addr)
             for addr in in_addrs]
    last: dict[_Word, int] = {}        # word -> latest landing of any write
    last_vec: dict[_Word, int] = {}    # word -> latest landing of a non-MAC write
    last_mac: dict[_Word, int] = {}    # word -> latest landing of a MAC write
    ports: set[tuple[str, int, int]] = set()
    out_cycles: set[int] = set()
    for i, (mask, addr) in enumerate(dests):
        for d in range(n_cores):
            if mask >> d & 1:
                land = i + lat.input_write
                ports.add(("tram", d, land))
                last[("tram", d, addr)] = last_vec[("tram", d, addr)] = land
    code = _Code(n_cores)
    prev_mac: list[int | None] = [None] * n_cores
    n_out = 0
    budget = [int(rng.integers(1, 4) if short else rng.integers(3, 20))
              for _ in range(n_cores)]
    read_now: set[_Word] = set()

    def readable(w: _Word, r: int, mac: bool = False) -> bool:
        # A MAC's accumulate-read is forwarded MAC writes landing up to `bypass` after it.
        return (last_vec.get(w, -1) < r and last_mac.get(w, -1) <= r + lat.bypass
                if mac else last.get(w, -1) < r)

    def writable(w: _Word, land: int) -> bool:
        return last.get(w, -1) < land and (w[0], w[1], land) not in ports and w not in read_now

    def pick(pool: list[int]) -> int:
        return int(pool[int(rng.integers(len(pool)))])

    t = 0
    while any(budget) or n_out == 0:
        read_now.clear()
        for c in range(n_cores):
            if code.cursor[c] != t or (not budget[c] and (c or n_out)):
                continue
            want_out = not budget[c]
            kind = "vec" if want_out else rng.choice(["mac", "vec", "fn", "wait"],
                                                     p=[.3, .35, .15, .2])
            instr: Instruction | None = None
            reads: list[_Word] = []
            writes: list[tuple[_Word, int]] = []
            if kind == "mac":
                a = prev_mac[c] if prev_mac[c] is not None and rng.random() < .6 \
                    else pick(acc_pool)
                accumulate = int(a == prev_mac[c] or rng.random() < .3)
                x = pick(readable_tram)
                target = ("acc", c, a)
                if (readable(("tram", c, x), t) and writable(target, t + lat.mac_acc_write)
                        and (not accumulate or readable(target, t + lat.mac_acc_read, True))):
                    instr = Mac(acc=a, tram=x, weight=pick(tile_pool), accumulate=accumulate)
                    reads, writes = [("tram", c, x)], [(target, t + lat.mac_acc_write)]
            elif kind == "vec":
                op = VecOp(int(rng.integers(len(VecOp))))
                dest = Dest.OUTPUT if want_out else Dest(int(rng.choice(4, p=DEST_P)))
                a, x = pick(acc_pool), pick(readable_tram)
                clamp = int(rng.integers(cfg.clamp_store_depth))
                addr, mask = 0, 0
                if dest == Dest.ACC:
                    addr = a if rng.random() < .4 else pick(acc_pool)
                    writes = [(("acc", c, addr), t + lat.vec_local_write)]
                elif dest in (Dest.TRAM, Dest.ACCS):
                    memory = "tram" if dest == Dest.TRAM else "acc"
                    addr = pick(tram_pool if dest == Dest.TRAM else acc_pool)
                    mask = int(rng.integers(1, 1 << n_cores))
                    writes = [((memory, d, addr),
                               t + (lat.vec_local_write if d == c else lat.vec_remote_write))
                              for d in range(n_cores) if mask >> d & 1]
                if op != VecOp.PASS_T:
                    reads.append(("acc", c, a))
                if op != VecOp.PASS_A:
                    reads.append(("tram", c, x))
                if (all(readable(r, t) for r in reads)
                        and all(writable(w, land) for w, land in writes)
                        and (dest != Dest.OUTPUT or t + lat.vec_output not in out_cycles)):
                    instr = Vec(op=op, clamp=clamp, acc=a, tram=x, dest=dest, addr=addr,
                                cores=mask)
                    if dest == Dest.OUTPUT:
                        out_cycles.add(t + lat.vec_output)
                        n_out += 1
            elif kind == "fn":
                x = pick(readable_tram)
                if rng.random() < .5:
                    dest, addr, memory = Dest.TRAM, pick(tram_pool), "tram"
                else:
                    dest, addr, memory = Dest.ACC, pick(acc_pool), "acc"
                reads = [("tram", c, x)]
                writes = [((memory, c, addr), t + lat.fn_write)]
                if readable(reads[0], t) and writable(*writes[0]):
                    instr = Fn(fn=int(rng.integers(len(Function))), tram=x, dest=dest,
                               addr=addr)
            if instr is None:
                code.at(c, t, Wait(int(rng.integers(1, 4))))
                continue
            code.at(c, t, instr)
            budget[c] = max(budget[c] - 1, 0)
            prev_mac[c] = instr.acc if isinstance(instr, Mac) else None
            read_now.update(reads)
            for w, land in writes:
                last[w] = land
                (last_mac if isinstance(instr, Mac) else last_vec)[w] = land
                ports.add((w[0], w[1], land))
        t += 1
    images = []
    edges = np.unique(np.concatenate([function_edges(f) for f in Function]))
    for c in range(n_cores):
        code.at(c, code.cursor[c], End())
        tram = hard_bf16(rng, (max(readable_tram) + 1, b))
        tram = np.where(rng.random(tram.shape) < .25, rng.choice(edges, tram.shape), tram)
        images.append(CoreImage(
            encode_program(code.cores[c]),
            hard_bf16(rng, (cfg.weight_store_depth, b, b)),
            tram.astype(np.uint16),
            clamp_table(rng, cfg.clamp_store_depth)))
    return Program(cfg, images, [TensorLayout((n_in * b,), b)],
                   [TensorLayout((n_out * b,), b)], np.array(dests, np.uint32).reshape(-1, 2),
                   {"name": name})


def random_program(config: Config, seed: int) -> Program:
    """Return the random program of ``seed`` for ``config`` (see the module docstring).

    Draws are redrawn (from the same seed's generator) until the VM accepts one; the
    generator makes legal programs, so that is normally the first.

    Raises
    ------
    RuntimeError
        If 20 draws in a row break a schedule rule (a generator bug).
    """
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(20):
        program = _draw(config, rng, f"random {config.name} seed {seed}")
        try:
            VM(program)
        except ScheduleError as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        return program
    raise RuntimeError(f"random_program({config.name}, {seed}): 20 draws broke a schedule "
                       f"rule, e.g. {errors[0]}")


@dataclasses.dataclass(frozen=True)
class RandomCase:
    """A random program and its inferences' input beats (``uint16`` [n_in, B] each)."""

    seed: int
    program: Program
    inputs: list[np.ndarray]


def random_case(config: Config, seed: int, inferences: int = 3) -> RandomCase:
    """Return the program of ``seed`` with ``inferences`` inputs of :func:`hard_bf16`."""
    program = random_program(config, seed)
    rng = np.random.default_rng([seed, 1])
    n_in, b = len(program.input_dests), config.block_size
    return RandomCase(seed, program, [hard_bf16(rng, (n_in, b)) for _ in range(inferences)])


def main(argv: list[str] | None = None) -> int:
    """Compare ``--count`` random programs on the VM and the RTL; return 1 on a mismatch."""
    from sim.cosim._compare import compare

    parser = argparse.ArgumentParser(prog="python -m sim.cosim.random_programs",
                                     description=main.__doc__)
    parser.add_argument("--config", action="append",
                        help="preset (repeatable; default c1b4, c2b8 and their -ideal)")
    parser.add_argument("--simulator", action="append", choices=("icarus", "verilator"),
                        help="repeatable; default both")
    parser.add_argument("--count", type=int, default=20, help="programs per configuration")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--inferences", type=int, default=3)
    args = parser.parse_args(argv)
    names = args.config or ["c1b4", "c2b8", "c1b4-ideal", "c2b8-ideal"]
    try:
        configs = [(name, Config.preset(name)) for name in names]
    except ConfigError as exc:
        parser.error(str(exc))
    failed = 0
    start = time.perf_counter()
    runs = 0
    for name, config in configs:
        for simulator in args.simulator or ["icarus", "verilator"]:
            for seed in range(args.seed, args.seed + args.count):
                case = random_case(config, seed, args.inferences)
                report = compare(case.program, inputs=case.inputs, simulator=simulator)
                runs += 1
                verdict = "ok" if report.ok else "MISMATCH"
                print(f"{name} {simulator} seed {seed}: {verdict} "
                      f"({report.write_records} writes, {report.values_compared} values)",
                      flush=True)
                if not report.ok:
                    failed += 1
                    print(report.summary())
                    print(f"  rerun: python -m sim.cosim.random_programs --config "
                          f"{name} --simulator {simulator} --seed {seed} --count 1")
    print(f"{runs - failed} of {runs} random programs matched "
          f"({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
