"""tidal's compiler: NNIR graphs to microcode ``Program``s (the reference's
``vollo_compiler``). ``import compiler as vollo_compiler`` runs scripts written for it."""

from compiler.builder import ProgramBuilder
from compiler.nnir import NNIR
from compiler.program import AllocationError, Program
from isa import Config, NumberFormat

__all__ = ["AllocationError", "Config", "NNIR", "NumberFormat", "Program", "ProgramBuilder"]
