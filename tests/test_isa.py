"""Tests of the machine definition in ``isa/``: configurations, the instruction encoding and
the program file format (round trips and random corruptions)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import (
    Config,
    ConfigError,
    CoreImage,
    Dest,
    EncodingError,
    End,
    Instruction,
    Mac,
    Opcode,
    Program,
    ProgramError,
    ProgramFormatError,
    TensorLayout,
    Vec,
    Wait,
    decode,
    encode,
)
from isa.config import Depths
from isa.instructions import (
    FORMATS,
    OPCODE_BITS,
    WORD_BITS,
    Fn,
    Function,
    amaranth_layout,
    decode_program,
    encode_program,
)
from isa.numerics import VecOp
from isa.program import FORMAT_VERSION, MAGIC
from isa.timing import Access, accesses, input_writes, latencies

pytestmark = pytest.mark.timeout(60)

PROPERTY = settings(max_examples=300, deadline=None)

# -- Config ----------------------------------------------------------------------------------


def test_presets() -> None:
    c6 = Config.ia_420f_c6b32()
    assert (c6.num_cores, c6.block_size, c6.weight_store_depth, c6.clock_mhz) == (6, 32, 512, 320)
    assert c6.tree_levels == 5 and c6.max_parameters == 3_145_728
    assert Config.bittware_ia420f_c6b32() == c6
    c3 = Config.ia_840f_c3b64()
    assert (c3.num_cores, c3.block_size, c3.tree_levels) == (3, 64, 6)
    assert Config.bittware_ia840f_c3b64() == c3
    assert (Config.ip_core(1, 4).num_cores, Config.ip_core(1, 4).block_size) == (1, 4)
    assert Config.ip_core(2, 8).name == "ip_core_c2b8"
    assert Config.ip_core(2, 8, tensor_ram_depth=64).tensor_ram_depth == 64


def test_preset_by_name() -> None:
    assert Config.preset("ia_420f_c6b32") == Config.ia_420f_c6b32()
    assert Config.preset("bittware_ia420f_c6b32") == Config.ia_420f_c6b32()
    assert Config.preset("ia_840f_c3b64") == Config.ia_840f_c3b64()
    assert Config.preset("c2b8") == Config.ip_core(2, 8)
    with pytest.raises(ConfigError, match=r"unknown configuration 'c6'; known: .*c<N>b<B>"):
        Config.preset("c6")
    assert Config.preset("c2b8-ideal") == Config.ip_core(2, 8, depths=Depths.ideal())
    assert Config.preset("ia_420f_c6b32-ideal") == Config.ia_420f_c6b32(Depths.ideal())


def test_depths_are_part_of_the_configuration() -> None:
    assert Config.ia_420f_c6b32().depths == Depths.realistic() != Depths.ideal()
    assert Config.ip_core(1, 4).depths == Depths.realistic()
    ideal = Config.ip_core(2, 8, depths=Depths.ideal())
    assert ideal.with_depths(Depths.realistic()) == Config.ip_core(2, 8)
    assert "fp32_add=4" in Depths.realistic().describe()
    for name in ("mem_read", "fp32_add", "output"):
        for bad in (0, 17, 2.0, True):
            with pytest.raises(ConfigError, match=f"depth '{name}'"):
                Depths(**{name: bad})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'depths' must be a Depths"):
        Config(num_cores=1, block_size=4, depths={"mem_read": 1})  # type: ignore[arg-type]
    data = Config.ip_core(1, 4).to_dict()
    with pytest.raises(ConfigError, match="missing field 'depths'"):
        Config.from_dict({k: v for k, v in data.items() if k != "depths"})
    with pytest.raises(ConfigError, match=r"'depths': unknown \['adder'\], missing \[\]"):
        Config.from_dict({**data, "depths": {**data["depths"], "adder": 2}})
    with pytest.raises(ConfigError, match="depth 'link'"):
        Config.from_dict({**data, "depths": {**data["depths"], "link": 0}})


def test_latencies_follow_the_depths() -> None:
    # The one-stage machine: MAC write t+3+L, accumulate-read t+1+L, VEC writes t+4 / t+5.
    lat = latencies(Config.ia_420f_c6b32(Depths.ideal()))
    assert (lat.mac_acc_write, lat.mac_acc_read, lat.mac_spacing, lat.bypass) == (8, 6, 1, 1)
    assert (lat.vec_local_write, lat.vec_remote_write, lat.vec_output, lat.input_write) == (
        4, 5, 5, 1)
    d = Depths(mem_read=2, bf16_mul=3, fp32_add=4, vec_mul=2, norm_round=1, clamp_round=3,
               link=2, output=3)
    lat = latencies(Config.ip_core(1, 8, depths=d))
    assert lat.mac_accumulate == 2 + 3 + 3 * 4 and lat.mac_acc_write == 2 + 3 + 4 * 4
    assert lat.mac_acc_read == lat.mac_accumulate - 2 and lat.mac_spacing == 4
    assert lat.vec_op == 4 and lat.vec_local_write == 2 + 4 + 3
    assert (lat.vec_remote_write, lat.vec_output, lat.input_write) == (11, 12, 2)


def test_accesses_of_each_instruction() -> None:
    cfg = Config.ip_core(3, 4)
    lat = latencies(cfg)
    mac = accesses(cfg, Mac(acc=2, tram=5, weight=7, accumulate=1), 1, 10)
    assert mac == [Access("tram", 1, 5, 10, False), Access("weight", 1, 7, 10, False),
                   Access("acc", 1, 2, 10 + lat.mac_acc_read, False, True),
                   Access("acc", 1, 2, 10 + lat.mac_acc_write, True, True)]
    assert Access("acc", 1, 2, 10 + lat.mac_acc_read, False, True) not in accesses(
        cfg, Mac(acc=2, tram=5, weight=7, accumulate=0), 1, 10)
    vec = accesses(cfg, Vec(op=VecOp.PASS_A, clamp=1, acc=3, tram=4, dest=Dest.TRAM,
                            addr=9, cores=0b101), 2, 0)
    assert vec == [Access("acc", 2, 3, 0, False), Access("clamp", 2, 1, 0, False),
                   Access("tram", 0, 9, lat.vec_remote_write, True),
                   Access("tram", 2, 9, lat.vec_local_write, True)]
    out = accesses(cfg, Vec(op=VecOp.PASS_T, clamp=0, acc=0, tram=1, dest=Dest.OUTPUT,
                            addr=0, cores=0), 0, 3)
    assert out[-1] == Access("out", 0, 0, 3 + lat.vec_output, True)
    assert accesses(cfg, Wait(3), 0, 0) == accesses(cfg, End(), 0, 0) == []
    assert input_writes(cfg, 4, 0b110, 8) == [Access("tram", d, 8, 4 + lat.input_write, True)
                                              for d in (1, 2)]


@pytest.mark.parametrize(("field", "value"), [
    ("num_cores", 0), ("num_cores", 9), ("num_cores", 2.0), ("num_cores", True),
    ("block_size", 1), ("block_size", 128), ("block_size", 12), ("block_size", "32"),
    ("weight_store_depth", 0), ("weight_store_depth", 1 << 17),
    ("tensor_ram_depth", 1), ("tensor_ram_depth", 1 << 17),
    ("accum_store_depth", 0), ("accum_store_depth", 1025),
    ("instr_mem_depth", 1), ("instr_mem_depth", (1 << 16) + 1),
    ("clamp_store_depth", 0), ("clamp_store_depth", 9),
    ("io_depth", 0), ("io_depth", (1 << 16) + 1),
    ("clock_mhz", 0), ("clock_mhz", -1.0), ("clock_mhz", float("inf")),
    ("clock_mhz", float("nan")), ("clock_mhz", "320"), ("clock_mhz", False),
    ("name", ""), ("name", 3),
])
def test_config_validation_names_the_field(field: str, value: object) -> None:
    fields = {"num_cores": 2, "block_size": 8, field: value}
    with pytest.raises(ConfigError, match=f"'{field}'"):
        Config(**fields)  # type: ignore[arg-type]


def test_config_json_round_trip(tmp_path: Path) -> None:
    for cfg in (Config.ia_420f_c6b32(), Config.ip_core(2, 8, clock_mhz=250.5, io_depth=7)):
        path = tmp_path / "config.json"
        cfg.save(path)
        assert Config.load(path) == cfg
        assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON configuration"):
        Config.load(path)
    with pytest.raises(ConfigError, match="JSON object"):
        Config.from_dict([6, 32])
    with pytest.raises(ConfigError, match="unknown configuration field.*cores"):
        Config.from_dict({**Config.ip_core(1, 4).to_dict(), "cores": 2})
    with pytest.raises(ConfigError, match="incomplete"):
        Config.from_dict({"num_cores": 2})
    with pytest.raises(ConfigError, match="'block_size'"):
        Config.from_dict({**Config.ip_core(1, 4).to_dict(), "block_size": 3})


# -- instruction encoding ---------------------------------------------------------------------


def field_values(cls: type[Instruction]) -> st.SearchStrategy[dict[str, int]]:
    """Every in-range value of every field of ``cls`` (respecting per-format rules)."""
    values = {f.name: st.integers(0, (1 << f.width) - 1) for f in cls.FIELDS}
    if cls is Wait:
        values["cycles"] = st.integers(1, (1 << 16) - 1)
    if cls is Vec:
        values["dest"] = st.sampled_from([int(d) for d in Dest])
    if cls is Fn:
        values["fn"] = st.sampled_from([int(f) for f in Function])
        values["dest"] = st.sampled_from([int(Dest.TRAM), int(Dest.ACC)])
    strategy = st.fixed_dictionaries(values)
    if cls is Vec:
        strategy = strategy.filter(
            lambda v: v["dest"] not in (Dest.TRAM, Dest.ACCS) or v["cores"] != 0)
    return strategy


instructions = st.one_of([field_values(cls).map(lambda v, cls=cls: cls(**v))
                          for cls in FORMATS.values()])


def test_formats_cover_every_opcode() -> None:
    assert set(FORMATS) == set(Opcode)
    for opcode, cls in FORMATS.items():
        assert cls.OPCODE == opcode
        assert OPCODE_BITS + sum(f.width for f in cls.FIELDS) <= WORD_BITS


@PROPERTY
@given(instructions)
def test_encode_decode_round_trip(instr: Instruction) -> None:
    word = encode(instr)
    assert 0 <= word < 1 << WORD_BITS
    assert word & ((1 << OPCODE_BITS) - 1) == instr.OPCODE
    assert decode(word) == instr
    assert decode_program(encode_program([instr, End()])) == [instr, End()]


@PROPERTY
@given(instructions)
def test_amaranth_layout_matches_decode(instr: Instruction) -> None:
    word = encode(instr)
    layout = amaranth_layout(instr.OPCODE)
    assert layout.size == WORD_BITS
    view = layout.from_bits(word)
    assert int(view.opcode) == instr.OPCODE
    for name, value in instr.fields().items():
        assert int(getattr(view, name)) == value, name
    if "_pad" in dict(layout):
        assert int(view["_pad"]) == 0


@pytest.mark.parametrize("cls", [cls for cls in FORMATS.values() if cls.FIELDS])
def test_out_of_range_field_names_it(cls: type[Instruction]) -> None:
    base = {f.name: 1 for f in cls.FIELDS}
    for f in cls.FIELDS:
        for bad in (1 << f.width, -1):
            with pytest.raises(EncodingError, match=rf"^{cls.OPCODE.name}\.{f.name} = {bad} "):
                cls(**{**base, f.name: bad})
        with pytest.raises(EncodingError, match=rf"{cls.OPCODE.name}\.{f.name} must be an int"):
            cls(**{**base, f.name: 1.0})


def test_format_rules() -> None:
    with pytest.raises(EncodingError, match="WAIT.cycles must be >= 1"):
        Wait(0)
    fields = {"op": 0, "clamp": 0, "acc": 0, "tram": 0, "addr": 0}
    # Every value of the 2-bit dest field is a Dest; 3 is ACCS.
    assert [int(d) for d in Dest] == [0, 1, 2, 3]
    assert Vec(**fields, dest=3, cores=1).dest == Dest.ACCS
    assert decode(encode(Vec(**fields, dest=3, cores=0b10))) == Vec(**fields, dest=Dest.ACCS,
                                                                      cores=0b10)
    with pytest.raises(EncodingError, match=r"VEC.cores must name at least one core for "
                       r"Dest.TRAM"):
        Vec(**fields, dest=Dest.TRAM, cores=0)
    with pytest.raises(EncodingError, match=r"VEC.cores must name at least one core for "
                       r"Dest.ACCS"):
        Vec(**fields, dest=Dest.ACCS, cores=0)
    # The mask is unused for ACC and OUTPUT: zero is fine.
    assert Vec(**fields, dest=Dest.ACC, cores=0).cores == 0
    assert Vec(**fields, dest=Dest.OUTPUT, cores=0).cores == 0


@PROPERTY
@given(st.integers(0, (1 << 60) - 1), st.integers(len(Opcode), (1 << OPCODE_BITS) - 1))
def test_unknown_opcode_rejected(high: int, code: int) -> None:
    with pytest.raises(EncodingError, match=f"unknown opcode {code}"):
        decode(high << OPCODE_BITS | code)


@PROPERTY
@given(instructions, st.data())
def test_stray_high_bits_rejected(instr: Instruction, data: st.DataObject) -> None:
    used = OPCODE_BITS + sum(f.width for f in instr.FIELDS)
    bit = data.draw(st.integers(used, WORD_BITS - 1))
    with pytest.raises(EncodingError, match=f"sets bits above bit {used}"):
        decode(encode(instr) | 1 << bit)


def test_words_outside_64_bits_and_bad_pcs() -> None:
    for word in (-1, 1 << 64):
        with pytest.raises(EncodingError, match="not a 64-bit value"):
            decode(word)
    with pytest.raises(EncodingError, match="^pc 2: unknown opcode 15"):
        decode_program([encode(End()), encode(Wait(3)), 15])


# -- program file format ----------------------------------------------------------------------


def small_program() -> Program:
    """A 2-core B = 4 program with every image non-empty and some metadata."""
    cfg = Config.ip_core(2, 4)
    rng = np.random.default_rng(0)
    code = [Wait(2), Mac(acc=0, tram=0, weight=1, accumulate=0), Wait(5),
            Vec(op=2, clamp=1, acc=0, tram=1, dest=Dest.OUTPUT, addr=0, cores=0), End()]
    cores = [CoreImage(encode_program(code if c == 0 else [End()]),
                       rng.integers(0, 1 << 16, (2, 4, 4), dtype=np.uint16),
                       rng.integers(0, 1 << 16, (3, 4), dtype=np.uint16),
                       np.array([[-np.inf, np.inf], [0, 6]], np.float32), tram_used=5)
             for c in range(2)]
    return Program(cfg, cores, [TensorLayout((1, 4), 4)], [TensorLayout((3,), 4)],
                   np.array([[3, 0]], np.uint32),
                   meta={"name": "small", "streaming": True, "layers": [{"tiles": 1}]})


def assert_same_program(a: Program, b: Program) -> None:
    assert a.config == b.config and a.meta == b.meta
    assert a.inputs == b.inputs and a.outputs == b.outputs
    np.testing.assert_array_equal(a.input_dests, b.input_dests)
    assert len(a.cores) == len(b.cores)
    for x, y in zip(a.cores, b.cores, strict=True):
        for f in dataclasses.fields(CoreImage):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and u.shape == v.shape, f.name
                np.testing.assert_array_equal(u, v, err_msg=f.name)
            else:
                assert u == v, f.name


def test_program_round_trip(tmp_path: Path) -> None:
    prog = small_program()
    data = prog.save_bytes()
    assert data[:8] == MAGIC
    assert_same_program(Program.load_bytes(data), prog)
    prog.save(tmp_path / "p.tidal")
    loaded = Program.load(tmp_path / "p.tidal")
    assert_same_program(loaded, prog)
    assert loaded.save_bytes() == data
    # The output VEC issues in cycle 8 (WAIT 2, MAC, WAIT 5).
    assert loaded.cycle_count_per_inference() == prog.cycle_count_per_inference() == (
        8 + latencies(prog.config).vec_output + 1)


def expected_reason(data: bytes) -> str | None:
    """The reason the documented format gives for refusing ``data`` (None: it is valid)."""
    head = 52
    if data[:8] != MAGIC:
        return "magic"
    if len(data) < head:
        return "truncated"
    version, reserved, length = struct.unpack_from("<HHQ", data, 8)
    if version != FORMAT_VERSION:
        return "version"
    if reserved:
        return "checksum"
    if len(data) - head < length:
        return "truncated"
    if len(data) - head > length or hashlib.sha256(data[head:]).digest() != data[20:head]:
        return "checksum"
    return None


def corrupt(rng: np.random.Generator, data: bytes) -> bytes:
    """One random corruption: bit flips, byte changes, a truncation, an extension, a wrong
    magic or a wrong version."""
    buf = bytearray(data)
    kind = rng.integers(7)
    if kind == 0:
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= int(rng.integers(1, 256))
    elif kind == 2:
        del buf[int(rng.integers(len(buf))):]
    elif kind == 3:
        buf += rng.bytes(int(rng.integers(1, 64)))
    elif kind == 4:
        buf[:8] = rng.bytes(8)
    elif kind == 5:
        struct.pack_into("<H", buf, 8, int(rng.integers(2, 1 << 16)))
    else:
        # Any single position, in the header fields or the payload.
        pos = int(rng.integers(min(len(buf), 80)))
        buf[pos] ^= 0xFF
    return bytes(buf)


def test_random_corruptions_are_refused() -> None:
    prog = small_program()
    data = prog.save_bytes()
    rng = np.random.default_rng(2024)
    reasons: dict[str, int] = {}
    for _ in range(12_000):
        bad = corrupt(rng, data)
        reason = expected_reason(bad)
        if reason is None:
            # Unchanged bytes (a flip undone by another): it must load the same program.
            assert bad == data
            assert_same_program(Program.load_bytes(bad), prog)
            continue
        with pytest.raises(ProgramFormatError) as info:
            Program.load_bytes(bad)
        assert info.value.reason == reason, (reason, str(info.value))
        reasons[reason] = reasons.get(reason, 0) + 1
    assert set(reasons) == {"magic", "version", "truncated", "checksum"}
    assert sum(reasons.values()) >= 10_000


def with_payload(data: bytes, payload: bytes) -> bytes:
    """``data``'s file header around a new payload, checksum and length updated."""
    return (data[:12] + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest()
            + payload)


def test_inconsistent_content_is_refused() -> None:
    data = small_program().save_bytes()
    payload = data[52:]
    (head_len,) = struct.unpack_from("<I", payload)
    header = json.loads(payload[4:4 + head_len])
    arrays = payload[4 + head_len:]

    def rebuild(h: dict) -> bytes:
        text = json.dumps(h).encode()
        return with_payload(data, struct.pack("<I", len(text)) + text + arrays)

    bad_config = json.loads(json.dumps(header))
    bad_config["config"]["block_size"] = 3
    outside = json.loads(json.dumps(header))
    outside["cores"][0]["weights"]["offset"] = len(arrays)
    bad_shape = json.loads(json.dumps(header))
    bad_shape["cores"][1]["weights"]["shape"] = [2, 4]
    too_deep = json.loads(json.dumps(header))
    too_deep["inputs"] = [[4, 4]]
    missing = json.loads(json.dumps(header))
    del missing["meta"]
    cases = [
        with_payload(data, payload[:4] + b"{garbage" + payload[12:]),
        with_payload(data, struct.pack("<I", 1 << 30) + payload[4:]),
        with_payload(data, b"\x01"),
        rebuild(bad_config), rebuild(outside), rebuild(bad_shape), rebuild(too_deep),
        rebuild(missing),
    ]
    for bad in cases:
        assert expected_reason(bad) is None
        with pytest.raises(ProgramFormatError) as info:
            Program.load_bytes(bad)
        assert info.value.reason == "content", str(info.value)
    assert_same_program(Program.load_bytes(rebuild(header)), small_program())


def test_validate_names_the_culprit() -> None:
    prog = small_program()
    prog.cores[1].weights = np.zeros((2, 4, 8), np.uint16)
    with pytest.raises(ProgramError, match="core 1 weights"):
        prog.validate()
    prog = small_program()
    prog.input_dests = np.array([[4, 0]], np.uint32)
    with pytest.raises(ProgramError, match="input_dests names a core"):
        prog.validate()
    prog = small_program()
    prog.cores[0].instructions = encode_program([Wait(1)])
    with pytest.raises(ProgramError, match="core 0 instructions: program has no END"):
        prog.validate()
    prog = small_program()
    prog.outputs = []
    with pytest.raises(ProgramError, match="at least one input and one output"):
        prog.validate()
