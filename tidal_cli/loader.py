"""Loading what the user names on the command line: model factories, programs, arrays.

Every function here turns a user mistake (missing file, malformed spec, wrong shape) into a
:class:`CliError` whose message names the file and what is wrong with it, so that the
command line can print one line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import isa

__all__ = ["CliError", "EXIT_FAILURE", "EXIT_USAGE", "load_factory", "load_program",
           "load_array", "check_shape", "insert_axis", "one_line"]

#: Exit status when the command ran and failed (a model that does not compile, a mismatch).
EXIT_FAILURE = 1
#: Exit status when the command line itself is wrong (bad option, missing file, bad name).
EXIT_USAGE = 2


class CliError(Exception):
    """An error to report as one ``tidal: error: ...`` line and an exit status.

    Parameters
    ----------
    message : str
        The line to print (without the ``tidal: error:`` prefix).
    status : int
        :data:`EXIT_USAGE` or :data:`EXIT_FAILURE`.
    """

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def one_line(exc: BaseException) -> str:
    """Return an exception's message on one line.

    Messages that list several problems, one per line (``"header:\\n  - a\\n  - b"``, as
    the front end's), become ``"header: a; b"``.
    """
    # Only a list bullet ("- ") goes: an option's dashes ("-o", "--timesteps") stay.
    parts = [p.strip().removeprefix("- ").strip() for p in str(exc).splitlines()]
    parts = [p for p in parts if p]
    if not parts:
        return type(exc).__name__
    head, rest = parts[0], parts[1:]
    return head.rstrip(":") + ": " + "; ".join(rest) if rest else head


def _existing_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} {str(p)!r} does not exist", EXIT_USAGE)
    if not p.is_file():
        raise CliError(f"{what} {str(p)!r} is not a file", EXIT_USAGE)
    return p


def load_factory(spec: str) -> tuple[Any, Any]:
    """Import ``path/to/file.py:factory``, call the factory and return its result.

    Parameters
    ----------
    spec : str
        A Python file and the name of a callable in it, separated by a colon. The callable
        takes no arguments and returns ``(model, example_input)``.

    Returns
    -------
    tuple of (torch.nn.Module, torch.Tensor)

    Raises
    ------
    CliError
        If the spec is malformed or is an ONNX file with ``:FUNCTION`` (usage), the file
        does not exist (usage), the name is not a callable in it or it needs arguments
        (usage), or the file fails to import, the factory raises or does not return a pair
        (failure; the message gives the user's exception type and message, on one line).
    """
    path, sep, name = spec.rpartition(":")
    if path.lower().endswith(".onnx"):
        raise CliError(f"{spec!r}: name an ONNX model by its file alone (FILE.onnx), without "
                       "':FUNCTION'", EXIT_USAGE)
    if not sep or not path or not name.isidentifier():
        raise CliError(f"MODEL must be FILE.py:FUNCTION (a function returning (model, "
                       f"example_input)), not {spec!r}", EXIT_USAGE)
    file = _existing_file(path, "model file")
    module_name = f"_tidal_model_{file.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    if module_spec is None or module_spec.loader is None:
        raise CliError(f"model file {path!r} is not a Python file", EXIT_USAGE)
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing so that dataclasses and pickling inside it can find it.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise CliError(f"model file {path!r}: {type(exc).__name__} at line {exc.lineno}: "
                       f"{exc.msg}") from None
    except (Exception, SystemExit) as exc:  # the user's module-level code
        raise CliError(f"model file {path!r} fails to import: {_raised(exc)}") from None
    factory = getattr(module, name, None)
    if factory is None:
        raise CliError(f"{path!r} has no function {name!r}", EXIT_USAGE)
    if not callable(factory):
        raise CliError(f"{path!r}: {name!r} is a {type(factory).__name__}, not a function",
                       EXIT_USAGE)
    needed = _required_parameters(factory)
    if needed:
        raise CliError(f"{spec}: the factory must take no arguments, but needs "
                       f"{', '.join(needed)} (give them defaults, or wrap it)", EXIT_USAGE)
    try:
        result = factory()
    except (Exception, SystemExit) as exc:
        raise CliError(f"{spec}: the factory raised {_raised(exc)}") from None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise CliError(f"{spec}: the factory must return (model, example_input), not "
                       f"{type(result).__name__}")
    return result


def _raised(exc: BaseException) -> str:
    """Return ``"Type: message"`` of an exception from the user's code, on one line."""
    text = one_line(exc)
    return type(exc).__name__ if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


def _required_parameters(func: Any) -> list[str]:
    """Return the names of ``func``'s parameters that have no default."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): just call it
        return []
    return [p.name for p in parameters if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def load_program(path: str | Path) -> Any:
    """Read a program file as a :class:`compiler.Program` (which can build its VM).

    Raises
    ------
    CliError
        If the file does not exist (usage) or is not a valid program (failure; the message
        says whether it is truncated, corrupted, of another version, ...).
    """
    from compiler import Program

    file = _existing_file(path, "program")
    try:
        return Program.load(file)
    except isa.ProgramFormatError as exc:
        raise CliError(f"{str(file)!r}: {exc}") from None


#: The first bytes of every ``.npy`` file (a ``.npz`` archive, a zip file, starts ``PK``).
_NPY_MAGIC = b"\x93NUMPY"


def load_array(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` file of a floating dtype as a ``float32`` array.

    The dtypes are those ``VM.run`` takes (any numpy floating dtype); integers, booleans,
    complex numbers and pickled objects are refused rather than converted.

    Raises
    ------
    CliError
        If the file does not exist (usage) or is not a floating-point ``.npy`` array
        (failure).
    """
    file = _existing_file(path, "input")
    with file.open("rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if not head:
        raise CliError(f"{str(file)!r} is empty: save the input with np.save")
    if head.startswith(b"PK"):
        raise CliError(f"{str(file)!r} is a .npz archive; save the input alone with np.save")
    if head != _NPY_MAGIC:
        raise CliError(f"{str(file)!r} is not a .npy file (no NumPy header): save the "
                       "input with np.save")
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if "allow_pickle" in str(exc):
            raise CliError(f"{str(file)!r} holds Python objects, not numbers: save a "
                           "float array") from None
        raise CliError(f"{str(file)!r} is not a readable .npy array: {one_line(exc)}") \
            from None
    if not np.issubdtype(array.dtype, np.floating):
        raise CliError(f"{str(file)!r} holds {array.dtype} values; the VM takes floating-point "
                       "inputs (float16, float32, float64, longdouble): convert with "
                       ".astype(np.float32)")
    return array.astype(np.float32)


def load_sequences(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Read a ``.npz`` archive of sequences as ``(name, float32 array)`` pairs.

    The sequences are the archive's arrays in the archive's order: the order ``np.savez``
    was given them (``arr_0, arr_1, ...`` positionally, or the keywords' order).

    Raises
    ------
    CliError
        If the file does not exist (usage), is not a ``.npz`` archive, holds no arrays, or
        an array is not of a floating dtype (naming it).
    """
    file = _existing_file(path, "sequences")
    with file.open("rb") as f:
        head = f.read(2)
    if head != b"PK":
        raise CliError(f"{str(file)!r} is not a .npz archive: save the sequences with "
                       "np.savez(path, seq0, seq1, ...)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            items = [(name, archive[name]) for name in archive.files]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "allow_pickle" in str(exc):
            raise CliError(f"{str(file)!r} holds Python objects, not numbers: save float "
                           "arrays") from None
        raise CliError(f"{str(file)!r} is not a readable .npz archive: {one_line(exc)}") \
            from None
    if not items:
        raise CliError(f"{str(file)!r} holds no arrays: save at least one sequence")
    for name, array in items:
        if not np.issubdtype(array.dtype, np.floating):
            raise CliError(f"{str(file)!r}: sequence {name!r} holds {array.dtype} values; the "
                           "VM takes floating-point inputs: convert with .astype(np.float32)")
    return [(name, array.astype(np.float32)) for name, array in items]


def insert_axis(shape: Sequence[int], axis: int, length: int) -> tuple[int, ...]:
    """Return ``shape`` with an axis of ``length`` inserted at ``axis``."""
    out = list(shape)
    out.insert(axis, length)
    return tuple(out)


def check_shape(array: np.ndarray, expected: Sequence[int], what: str) -> None:
    """Raise :class:`CliError` unless ``array`` has shape ``expected``.

    ``what`` names the array in the message (e.g. the file it came from).
    """
    if tuple(array.shape) != tuple(expected):
        hint = ""
        if math.prod(array.shape) == math.prod(expected):
            hint = " (same number of values: reshape it first)"
        raise CliError(f"{what} has shape {tuple(array.shape)} but the program expects "
                       f"{tuple(expected)}{hint}")
