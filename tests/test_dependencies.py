"""The dependency direction of the packages (brief §6), checked by reading every import.

``isa`` imports no other project package; ``compiler``, ``sim`` and ``rtl`` import ``isa``;
``sim`` may import ``rtl`` (to build and run it); ``compiler`` and ``rtl`` never import each
other. ``compiler`` reaches the VM only through ``sim.vm`` (``Program.to_vm``), which itself
must not reach ``rtl``. The command line, ``bench/`` and ``tests/`` sit on top: no package
imports them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("isa", "compiler", "sim", "rtl", "tidal_cli")
TOP = ("tidal_cli", "bench", "tests", "examples")

#: Which project packages each package may import (itself always allowed).
ALLOWED = {
    "isa": set(),
    "compiler": {"isa", "sim.vm"},
    "sim": {"isa", "rtl"},
    "rtl": {"isa"},
}


def imports_of(path: Path) -> set[str]:
    """Return the dotted names of the project modules imported by ``path`` (any depth)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    roots = set(PACKAGES) | set(TOP)
    return {n for n in names if n.split(".")[0] in roots}


def allowed(package: str, name: str) -> bool:
    """Return whether ``package`` may import module ``name``."""
    if name.split(".")[0] == package:
        return True
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imports_of(path)):
            if not allowed(package, name):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "dependency direction violated:\n" + "\n".join(bad)


def test_vm_does_not_reach_rtl() -> None:
    # compiler may import sim.vm, so sim.vm (and the private modules it uses) must not
    # import rtl, or compiler would depend on rtl through it.
    for path in [ROOT / "sim" / "vm.py", *sorted((ROOT / "sim").glob("_vm*.py"))]:
        if path.exists():
            assert not any(n.split(".")[0] == "rtl" for n in imports_of(path)), path


def test_checker_sees_imports(tmp_path: Path) -> None:
    # The checker itself must catch a violation, or the tests above prove nothing.
    bad = tmp_path / "x.py"
    bad.write_text("import rtl.core\nfrom compiler import lower\n\ndef f():\n    import sim\n")
    assert imports_of(bad) == {"rtl.core", "compiler", "compiler.lower", "sim"}
    assert not allowed("compiler", "rtl.core")
    assert not allowed("rtl", "compiler.lower")
    assert not allowed("compiler", "sim.cosim")
    assert allowed("compiler", "sim.vm")
    assert allowed("sim", "rtl.gen")
    assert not allowed("isa", "sim")
