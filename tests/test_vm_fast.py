"""The compiled VM executor (``sim/_vm_fast.py``) against the numpy executor, bit for bit.

A property test over random legal programs on several configurations: every program is
built legal by construction, with the pipeline latencies read off the VM's own schedule
analysis of a probe program (so no latency is written here), and then loaded by the VM,
whose schedule checks have the last word (a program they refuse is discarded and counted).
Images and inputs are full of ±0, ±inf, NaN, subnormals and huge values; every output,
every tensor-RAM and accumulator word and the cycle counts are compared bit for bit, for
single inferences, for whole sequences (``run_timesteps``, one compiled call) and at the
beat level (``run_beats``, raw bf16 patterns with NaN payloads).
"""

from __future__ import annotations

import numpy as np
import pytest

from isa import Config, CoreImage, Dest, End, Instruction, Mac, Program, TensorLayout, Vec, Wait
from isa.functions import Function
from isa.instructions import Fn, decode, encode_program
from isa.numerics import VecOp, f32_to_bf16_bits
from isa.timing import Latencies, latencies
from sim import _vm_fast
from sim import vm as vm_module
from sim.vm import VM, ScheduleError

pytestmark = pytest.mark.timeout(600)

#: The configurations and the number of random programs generated on each; c2b2 has the
#: smallest dot-product tree, c3b16 and c4b4 remote writes to several cores. At least
#: :data:`MIN_COMPARED` of each are compared, 225 or more in all per run.
CONFIGS = {"c1b4": 55, "c2b8": 55, "c3b16": 50, "c4b4": 50, "c2b2": 38, "c2b8-ideal": 30}
MIN_COMPARED = 0.9
#: Inferences run on each program.
STEPS = 3
NO_CLAMP = (-np.inf, np.inf)
#: Clamp tables: entries 5 .. depth-1 lie beyond the image and are [0, 0].
CLAMPS = [NO_CLAMP, (0, np.inf), (-1, 1), (-np.inf, 0.5), (-0.0, 0.0)]
SPECIALS = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 3e38, -3.3e38, 3.4e38, 1e-40,
                     -3e-39, 9.2e-41, 1.2e-38, -1e-45], np.float32)
#: NaNs with a sign bit and payloads: the machine stores only the canonical NaN.
ODD_NANS = np.array([0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FC12345], np.uint32).view(np.float32)


def sprinkle(rng: np.random.Generator, x: np.ndarray, p: float) -> np.ndarray:
    """Return float32 ``x`` with a fraction ``p`` of its values replaced by special values."""
    x = np.array(x, np.float32)
    flat = x.reshape(-1)
    hit = rng.random(flat.size) < p
    flat[hit] = rng.choice(np.concatenate([SPECIALS, ODD_NANS]), hit.sum())
    return x


def make_program(cfg: Config, code: list[list[Instruction]], *, n_tiles: int, n_tram: int,
                 n_in: int, n_out: int, dests: list[tuple[int, int]],
                 rng: np.random.Generator) -> Program:
    """Return ``code`` with random images full of special values (weights: ``n_tiles``
    tiles; tensor RAM: ``n_tram`` words), ``n_in`` input and ``n_out`` output beats."""
    b = cfg.block_size
    cores = []
    for instrs in code:
        w = sprinkle(rng, rng.standard_normal((n_tiles, b, b)) * 0.5, 0.04)
        t = sprinkle(rng, rng.standard_normal((n_tram, b)), 0.08)
        cores.append(CoreImage(encode_program(instrs), f32_to_bf16_bits(w),
                               f32_to_bf16_bits(t), np.asarray(CLAMPS, np.float32)))
    return Program(cfg, cores, [TensorLayout((n_in * b,), b)], [TensorLayout((n_out, b), b)],
                   np.asarray(dests, np.uint32).reshape(-1, 2))


def random_program(cfg: Config, seed: int) -> Program:
    """Return a random program that obeys the schedule rules by construction.

    Instructions are generated cycle by cycle, cores in order, i.e. in execution order,
    keeping for every memory word the latest landing of a write issued so far (and of a
    non-MAC and a MAC write: the MAC bypass forwards only MAC results, landing at most
    ``bypass`` cycles after it, to a MAC's accumulate-read): a read needs every such write
    landed; a write must land after them, in a free port
    cycle, and not on a word read in the same cycle. The schedule checks of ``VM`` remain
    the judge.
    """
    rng = np.random.default_rng(seed)
    lat = latencies(cfg)
    n_cores = cfg.num_cores
    n_tram, n_acc, n_tiles = 12, 4, 4
    n_in = int(rng.integers(1, 4))
    dests = [(int(rng.integers(0 if rng.random() < .1 else 1, 1 << n_cores)), i)
             for i in range(n_in)]
    last: dict[tuple[str, int, int], int] = {}
    last_vec: dict[tuple[str, int, int], int] = {}
    last_mac: dict[tuple[str, int, int], int] = {}
    ports: set[tuple[str, int, int]] = set()
    for i, (mask, addr) in enumerate(dests):
        for d in range(n_cores):
            if mask >> d & 1:
                word = ("tram", d, addr)
                last[word] = last_vec[word] = i + lat.input_write
                ports.add(("tram", d, i + lat.input_write))
    code: list[list[Instruction]] = [[] for _ in range(n_cores)]
    cursor = [0] * n_cores
    prev_mac: list[int | None] = [None] * n_cores
    budget = [int(rng.integers(6, 22)) for _ in range(n_cores)]
    n_out = 0
    t = 0
    while any(budget) or n_out == 0:
        read_now: set[tuple[str, int, int]] = set()
        for c in range(n_cores):
            if cursor[c] != t or (not budget[c] and (c or n_out)):
                continue
            instr, reads, writes = _random_instr(rng, cfg, lat, c, t, not budget[c],
                                                 prev_mac[c], n_tram, n_acc, n_tiles, n_in)
            ok = instr is not None and all(last.get(w, -1) < t for w in reads) and all(
                last.get(w, -1) < land and (w[0], w[1], land) not in ports and w not in read_now
                for w, land in writes)
            if isinstance(instr, Mac) and instr.accumulate:
                # The bypass forwards MAC writes landing up to `bypass` after the read.
                word, read = ("acc", c, instr.acc), t + lat.mac_acc_read
                ok = ok and last_vec.get(word, -1) < read and (
                    last_mac.get(word, -1) <= read + lat.bypass)
            if isinstance(instr, Vec) and instr.dest == Dest.OUTPUT:
                ok = ok and ("out", -1, t + lat.vec_output) not in ports
            if not ok:
                instr = Wait(int(rng.integers(1, 4)))
            code[c].append(instr)
            cursor[c] = t + (instr.cycles if isinstance(instr, Wait) else 1)
            if isinstance(instr, Wait):
                continue
            budget[c] = max(budget[c] - 1, 0)
            prev_mac[c] = instr.acc if isinstance(instr, Mac) else None
            read_now.update(reads)
            if isinstance(instr, Mac):
                read_now.add(("acc", c, instr.acc))
            for word, land in writes:
                last[word] = land
                (last_mac if isinstance(instr, Mac) else last_vec)[word] = land
                ports.add((word[0], word[1], land))
            if isinstance(instr, Vec) and instr.dest == Dest.OUTPUT:
                ports.add(("out", -1, t + lat.vec_output))
                n_out += 1
        t += 1
    for c in range(n_cores):
        if cursor[c] < t:
            code[c].append(Wait(t - cursor[c]))
        code[c].append(End())
    return make_program(cfg, code, n_tiles=n_tiles, n_tram=n_tram, n_in=n_in, n_out=n_out,
                        dests=dests, rng=rng)


def _random_instr(rng: np.random.Generator, cfg: Config, lat: Latencies, c: int, t: int,
                  want_out: bool, prev_mac: int | None, n_tram: int, n_acc: int,
                  n_tiles: int, n_in: int
                  ) -> tuple[Instruction | None, list[tuple[str, int, int]],
                             list[tuple[tuple[str, int, int], int]]]:
    """Return a random instruction for core ``c`` at cycle ``t``, its reads at issue and its
    writes with their landing cycles (None: a WAIT)."""
    kind = "vec" if want_out else rng.choice(["mac", "vec", "fn", "wait"],
                                             p=[.35, .35, .15, .15])
    if kind == "wait":
        return None, [], []
    x = int(rng.integers(n_tram))
    if kind == "fn":
        fn = Function(int(rng.integers(len(Function))))
        if rng.random() < .5:
            dest, addr, memory = Dest.TRAM, int(rng.integers(n_in, n_tram)), "tram"
        else:
            dest, addr, memory = Dest.ACC, int(rng.integers(n_acc)), "acc"
        return (Fn(fn=fn, tram=x, dest=dest, addr=addr), [("tram", c, x)],
                [((memory, c, addr), t + lat.fn_write)])
    if kind == "mac":
        chain = prev_mac is not None and rng.random() < .6
        a = prev_mac if chain else int(rng.integers(n_acc))
        # Tile addresses beyond the image read zeros.
        mac = Mac(acc=a, tram=x, weight=int(rng.integers(n_tiles + 1)),
                  accumulate=int(chain or rng.random() < .3))
        return mac, [("tram", c, x)], [(("acc", c, a), t + lat.mac_acc_write)]
    op = VecOp(int(rng.integers(8)))
    dest = Dest.OUTPUT if want_out else Dest(int(rng.choice(4, p=[.3, .35, .15, .2])))
    a = int(rng.integers(n_acc))
    clamp = int(rng.integers(cfg.clamp_store_depth))
    addr, mask = 0, 0
    writes: list[tuple[tuple[str, int, int], int]] = []
    if dest == Dest.ACC:
        # Often acc[a] += t, unclamped: an accumulation chain member for the numpy executor.
        if rng.random() < .4:
            op, addr, clamp = VecOp.ADD, a, int(rng.choice([0, 0, 1]))
        else:
            addr = int(rng.integers(n_acc))
        mask = 1 << c
    elif dest in (Dest.TRAM, Dest.ACCS):
        addr = int(rng.integers(n_in, n_tram) if dest == Dest.TRAM else rng.integers(n_acc))
        mask = int(rng.integers(1, 1 << cfg.num_cores))
    if dest != Dest.OUTPUT:
        memory = "tram" if dest == Dest.TRAM else "acc"
        writes = [((memory, d, addr), t + (lat.vec_local_write if d == c else lat.vec_remote_write))
                  for d in range(cfg.num_cores) if mask >> d & 1]
    reads = []
    if op != VecOp.PASS_T:
        reads.append(("acc", c, a))
    if op != VecOp.PASS_A:
        reads.append(("tram", c, x))
    vec = Vec(op=op, clamp=clamp, acc=a, tram=x, dest=dest,
              addr=addr, cores=mask if dest in (Dest.TRAM, Dest.ACCS) else 0)
    return vec, reads, writes


def assert_same(a: VM, b: VM, what: str) -> None:
    """Assert two VMs' tensor RAMs and accumulators are bit-identical, word by word."""
    sa, sb = a.state(), b.state()
    for memory in ("tram", "acc"):
        for c, (x, y) in enumerate(zip(sa[memory], sb[memory], strict=True)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: core {c} {memory}")


def bits(y: np.ndarray) -> np.ndarray:
    """The float32 bit patterns of ``y``."""
    return np.ascontiguousarray(y, np.float32).view(np.uint32)


@pytest.mark.parametrize("name", CONFIGS)
def test_compiled_matches_numpy_on_random_programs(name: str) -> None:
    cfg = Config.preset(name)
    rng = np.random.default_rng(7)
    compared = discarded = 0
    for seed in range(CONFIGS[name]):
        prog = random_program(cfg, seed)
        try:
            ref = VM(prog, executor="numpy")
        except ScheduleError:
            discarded += 1
            continue
        what = f"{name} seed {seed}"
        fast, seq = VM(prog, executor="compiled"), VM(prog, executor="compiled")
        assert fast.executor == seq.executor == "compiled"
        xs = sprinkle(rng, rng.standard_normal((STEPS, *prog.inputs[0].shape)) * 4, 0.15)
        for x in xs:
            np.testing.assert_array_equal(bits(fast.run(x)), bits(ref.run(x)), err_msg=what)
            assert_same(fast, ref, what)
        ys = seq.run_timesteps(xs, 0, 0)
        assert_same(seq, ref, what + " (sequence)")
        ref = VM(prog, executor="numpy")  # hand-built: no reset entry, so a fresh load
        np.testing.assert_array_equal(bits(ys), bits(np.stack([ref.run(x) for x in xs])),
                                      err_msg=what + " (sequence)")
        # Raw bf16 patterns at the beat level: NaN payloads and subnormals included.
        beats = rng.integers(0, 1 << 16, (len(prog.input_dests), cfg.block_size), np.uint16)
        np.testing.assert_array_equal(fast.run_beats(beats), ref.run_beats(beats), err_msg=what)
        assert_same(fast, ref, what + " (beats)")
        for spaced in (True, False):
            assert fast.cycle_count(spaced) == seq.cycle_count(spaced) == ref.cycle_count(spaced)
        assert seq.inferences == STEPS and fast.inferences == ref.inferences == STEPS + 1
        compared += 1
    # The generator is legal by construction: the checks refuse (almost) nothing.
    assert compared >= MIN_COMPARED * CONFIGS[name], f"{discarded} of {CONFIGS[name]} discarded"


def test_random_programs_are_varied() -> None:
    # The comparison proves little unless it exercises every op and destination, chains,
    # remote writes, out-of-image weights and clamps, and special values on every path.
    seen: set[str] = set()
    for seed in range(30):
        prog = random_program(Config.preset("c3b16"), seed)
        for c, core in enumerate(prog.cores):
            for word in core.instructions:
                instr = decode(int(word))
                if isinstance(instr, Mac):
                    seen.add("mac-accumulate" if instr.accumulate else "mac-set")
                    if instr.weight >= len(core.weights):
                        seen.add("zero-tile")
                if isinstance(instr, Fn):
                    seen.add(f"fn-{Function(instr.fn).name}-{Dest(instr.dest).name}")
                if isinstance(instr, Vec):
                    seen.add(VecOp(instr.op).name)
                    seen.add(Dest(instr.dest).name)
                    if instr.cores & ~(1 << c):
                        seen.add("remote")
                    if instr.clamp >= len(core.clamps):
                        seen.add("zero-clamp")
    assert {op.name for op in VecOp} | {d.name for d in Dest} <= seen
    assert {"mac-accumulate", "mac-set", "zero-tile", "remote", "zero-clamp"} <= seen
    assert {f"fn-{f.name}-{d}" for f in Function for d in ("TRAM", "ACC")} <= seen


def test_executor_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    prog = random_program(Config.preset("c1b4"), 0)
    monkeypatch.delenv("TIDAL_VM_EXECUTOR", raising=False)
    assert VM(prog).executor == "compiled"
    assert VM(prog, trace=True).executor == "cycle"
    assert VM(prog, executor="numpy").executor == "numpy"
    monkeypatch.setenv("TIDAL_VM_EXECUTOR", "numpy")
    assert VM(prog).executor == "numpy"
    assert VM(prog, executor="compiled").executor == "compiled"
    monkeypatch.setenv("TIDAL_VM_EXECUTOR", "fast")
    with pytest.raises(ValueError, match="TIDAL_VM_EXECUTOR must be one of auto, compiled, "
                                         "numpy, not 'fast'"):
        VM(prog)
    with pytest.raises(ValueError, match="executor must be one of"):
        VM(prog, executor="jit")
    info = _vm_fast.compile_info()
    assert info["seconds"] > 0 and isinstance(info["from_disk_cache"], bool)


@pytest.mark.parametrize("shape", [(4,), (8,), (3, 8), (2, 3, 5), (1, 1), (12,)])
def test_block_layout_helpers_match_tensor_layout(shape: tuple[int, ...]) -> None:
    # run and run_timesteps lay values out with sim.vm's helpers, not TensorLayout's methods.
    layout = TensorLayout(shape, 4)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, *shape)).astype(np.float32)
    many = vm_module._to_blocks(layout, x, (5,))
    for k in range(5):
        np.testing.assert_array_equal(vm_module._to_blocks(layout, x[k]), layout.to_blocks(x[k]))
        np.testing.assert_array_equal(many[k], layout.to_blocks(x[k]))
        blocks = rng.standard_normal((layout.beats, 4)).astype(np.float32)
        np.testing.assert_array_equal(vm_module._from_blocks(layout, blocks),
                                      layout.from_blocks(blocks))
    np.testing.assert_array_equal(vm_module._from_blocks(layout, many, (5,)), x)
