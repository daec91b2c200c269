"""The one definition of the machine: configuration, instruction set, numerics, timing and
the compiled-program format. The compiler, the VM, the RTL and the testbenches all import it;
it imports none of them."""

from isa.config import Config, ConfigError
from isa.instructions import (
    Dest,
    EncodingError,
    End,
    Instruction,
    Mac,
    Opcode,
    Vec,
    VecOp,
    Wait,
    decode,
    encode,
)
from isa.numerics import NumberFormat
from isa.program import (
    CoreImage,
    ModelEntry,
    Program,
    ProgramError,
    ProgramFormatError,
    TensorLayout,
)

__all__ = [
    "Config", "ConfigError", "Dest", "EncodingError", "End", "Instruction", "Mac", "Opcode",
    "Vec", "VecOp", "Wait", "decode", "encode", "NumberFormat", "CoreImage", "ModelEntry",
    "Program", "ProgramError", "ProgramFormatError", "TensorLayout",
]
