"""Mutation testing of ``rtl/`` against the co-simulation suite: ``make mutate``.

A small mutator of our own (``mutmut`` and ``cosmic-ray`` run a test command per mutant on
the mutated tree in place; here every mutant needs its own copy of the tree, its own build
cache and its own Verilog, and two run at once): it lists every mutation site of the RTL
sources (:data:`FILES`), samples ``--count`` of them with ``--seed``, and for each

1. copies the project's packages and tests into a scratch directory and applies the one
   mutation there (a textual splice of ``ast.unparse`` of the mutated node);
2. checks that the mutant still generates Verilog for ``c1b4`` and ``c2b8`` (a mutant that
   does not is "unbuildable" and counts neither way);
3. runs the co-simulation suite on Icarus (:data:`SUITE`, first failure stops it) from
   that directory, with its own build cache: exit 0 means the mutant **survived**, a
   failure means it was **killed**, and a run longer than ``--timeout`` (or a test over
   its pytest-timeout) **timed out**.

Mutation operators: a comparison flipped (``<``/``<=``, ``>``/``>=``, ``==``/``!=``), an
arithmetic or bitwise operator swapped (``+``/``-``, ``&``/``|``, ``^``→``|``,
``<<``/``>>``), ``~``/``not`` dropped, an integer constant ± 1, ``True``/``False``
flipped, ``and``/``or`` swapped, the two data inputs of a ``Mux`` swapped. Sites inside
``raise``/``assert`` statements, docstrings, type annotations, signal names and code of
the native flavour or the deliberately broken variant (never built by the co-simulation)
are not mutated.

The report (``build/mutate/report.md`` and ``.json``) lists killed, survived, timed out
and unbuildable mutants, with the diff of every survivor.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The RTL sources mutated (``gen.py`` writes files; ``__init__.py`` only re-exports).
FILES = ("accum.py", "arith.py", "core.py", "dot.py", "interconnect.py", "lane.py",
         "matrix.py", "memory.py", "sequencer.py", "top.py", "vector.py")
#: What a mutant's copy needs.
COPY = ("isa", "rtl", "sim", "compiler", "tests", "examples", "tidal_cli", "pyproject.toml")
#: The suite run against each mutant, fastest killers first (Icarus only).
SUITE = ("tests/test_cosim_directed.py", "tests/test_cosim_random.py", "tests/test_cosim.py")
SELECT = "icarus and not waves and not watchdog and not c6b32"

#: What pytest-timeout writes when a test runs over its limit (the failure message of its
#: signal method, the separator line of its thread method).
_PYTEST_TIMEOUT = re.compile(r"from pytest-timeout|^\++ Timeout \++$", re.MULTILINE)

_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
            ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
          ast.BitXor: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift}


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One mutation: ``file`` (below ``rtl/``), the source span it replaces and with what."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    before: str
    after: str
    what: str

    def name(self) -> str:
        return f"rtl/{self.file}:{self.line}: {self.what}"

    def apply(self, text: str) -> str:
        """Return ``text`` (the file's source) with the mutation applied."""
        lines = text.splitlines(keepends=True)
        start = sum(len(s) for s in lines[:self.line - 1]) + _byte_col(lines[self.line - 1],
                                                                         self.col)
        end = sum(len(s) for s in lines[:self.end_line - 1]) + _byte_col(
            lines[self.end_line - 1], self.end_col)
        return text[:start] + self.after + text[end:]

    def diff(self, text: str) -> str:
        return "".join(difflib.unified_diff(
            text.splitlines(keepends=True), self.apply(text).splitlines(keepends=True),
            f"a/rtl/{self.file}", f"b/rtl/{self.file}", n=1))


def _byte_col(line: str, col: int) -> int:
    """Return the character index of the UTF-8 byte offset ``col`` in ``line``."""
    return len(line.encode()[:col].decode())


def _skipped(node: ast.AST, parents: dict[ast.AST, ast.AST], source: str) -> bool:
    """Return whether ``node`` is in code the co-simulation never builds or runs."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Raise | ast.Assert | ast.JoinedStr):
            return True
        if isinstance(node, ast.If):
            test = ast.get_source_segment(source, node.test) or ""
            if "native" in test or "broken" in test or "image" in test:
                return True
        if isinstance(node, ast.keyword) and node.arg in ("name", "src_loc_at"):
            return True
    return False


def _annotations(node: ast.AST) -> list[ast.expr]:
    """Return the type annotations directly held by ``node``."""
    if isinstance(node, ast.arg | ast.AnnAssign):
        return [node.annotation] if node.annotation is not None else []
    if isinstance(node, ast.FunctionDef) and node.returns is not None:
        return [node.returns]
    return []


def sites(file: str) -> list[Mutant]:
    """Return every mutation of ``rtl/<file>`` (see the module docstring)."""
    source = (ROOT / "rtl" / file).read_text()
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    annotations = {id(sub) for n in ast.walk(tree)
                   for ann in _annotations(n) for sub in ast.walk(ann)}
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr)}
    out: list[Mutant] = []

    def add(node: ast.expr, new: ast.expr, what: str) -> None:
        out.append(Mutant(file, node.lineno, node.col_offset, node.end_lineno or node.lineno,
                          node.end_col_offset or node.col_offset,
                          ast.get_source_segment(source, node) or "", ast.unparse(new), what))

    for node in ast.walk(tree):
        if not isinstance(node, ast.expr) or id(node) in docstrings | annotations:
            continue
        if _skipped(node, parents, source):
            continue
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            new = ast.Compare(node.left, [_COMPARE[type(node.ops[0])]()], node.comparators)
            add(node, new, f"{type(node.ops[0]).__name__} -> {type(new.ops[0]).__name__}")
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
            new_op = _BINOP[type(node.op)]()
            add(node, ast.BinOp(node.left, new_op, node.right),
                f"{type(node.op).__name__} -> {type(new_op).__name__}")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert | ast.Not):
            add(node, node.operand, f"drop {type(node.op).__name__}")
        elif isinstance(node, ast.BoolOp):
            new_bool = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            add(node, ast.BoolOp(new_bool, node.values),
                f"{type(node.op).__name__} -> {type(new_bool).__name__}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            add(node, ast.Constant(not node.value), f"{node.value} -> {not node.value}")
        elif (isinstance(node, ast.Constant) and type(node.value) is int
              and 0 <= node.value <= 64):
            add(node, ast.Constant(node.value + 1), f"{node.value} -> {node.value + 1}")
            if node.value > 0:
                add(node, ast.Constant(node.value - 1), f"{node.value} -> {node.value - 1}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "Mux" and len(node.args) == 3):
            a, b, c = node.args
            add(node, ast.Call(node.func, [a, c, b], node.keywords), "Mux inputs swapped")
    return out


@dataclasses.dataclass
class Outcome:
    """What the suite did to one mutant."""

    mutant: Mutant
    verdict: str            # killed, survived, timeout, unbuildable
    seconds: float
    detail: str


def _copy_tree(dest: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copyfile(src, dest / name)


def run_mutant(mutant: Mutant, scratch: Path, timeout: float) -> Outcome:
    """Build and test one mutant in ``scratch`` (removed afterwards)."""
    start = time.perf_counter()
    try:
        _copy_tree(scratch)
        path = scratch / "rtl" / mutant.file
        path.write_text(mutant.apply(path.read_text()))
        env = {**os.environ, "TIDAL_CACHE_DIR": str(scratch / "cache"),
               "TIDAL_NEED_SIMULATORS": "1"}
        env.pop("PYTHONPATH", None)
        check = ("import sys, tempfile; from isa import Config; from rtl.gen import generate\n"
                 "for c in ('c1b4', 'c2b8'):\n"
                 "    generate(Config.preset(c), tempfile.mkdtemp(), write_trace=True)\n")
        gen = subprocess.run([sys.executable, "-c", check], cwd=scratch, env=env,
                             capture_output=True, text=True, timeout=timeout, check=False)
        if gen.returncode:
            return Outcome(mutant, "unbuildable", time.perf_counter() - start,
                           gen.stderr.strip().splitlines()[-1] if gen.stderr.strip() else "")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m",
               "cosim", "-k", SELECT, *SUITE]
        try:
            proc = subprocess.run(["nice", *cmd], cwd=scratch, env=env, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Outcome(mutant, "timeout", time.perf_counter() - start, "")
        summary = [s for s in proc.stdout.splitlines() if s.startswith("FAILED")]
        summary += proc.stdout.strip().splitlines()[-1:]
        verdict = "survived" if proc.returncode == 0 else "killed"
        if proc.returncode and _PYTEST_TIMEOUT.search(proc.stdout + proc.stderr):
            # A test over its pytest-timeout (a slow mutant, or a loaded machine) says
            # nothing about the mutant: not a kill.
            verdict = "timeout"
        return Outcome(mutant, verdict, time.perf_counter() - start,
                       summary[0] if summary else "")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(outcomes: list[Outcome], args: argparse.Namespace, total_sites: int) -> str:
    """Return the markdown report."""
    count = {v: sum(o.verdict == v for o in outcomes)
             for v in ("killed", "survived", "timeout", "unbuildable")}
    judged = count["killed"] + count["survived"] + count["timeout"]
    rate = count["killed"] / judged if judged else 0.0
    lines = [f"# Mutation testing of rtl/ (`make mutate`, seed {args.seed})", "",
             f"{len(outcomes)} mutants sampled from {total_sites} sites; suite: "
             f"`pytest -x -m cosim -k \"{SELECT}\" {' '.join(SUITE)}`.", "",
             f"- killed: {count['killed']}", f"- survived: {count['survived']}",
             f"- timed out: {count['timeout']}",
             f"- unbuildable (no Verilog; not counted): {count['unbuildable']}",
             f"- **kill rate: {count['killed']} / {judged} = {100 * rate:.1f} %**", ""]
    for o in sorted(outcomes, key=lambda o: (o.verdict, o.mutant.name())):
        lines.append(f"- {o.verdict}: {o.mutant.name()} ({o.seconds:.0f} s) {o.detail}")
    for o in outcomes:
        if o.verdict in ("survived", "timeout"):
            text = (ROOT / "rtl" / o.mutant.file).read_text()
            lines += ["", f"## {o.verdict}: {o.mutant.name()}", "", "```diff",
                      o.mutant.diff(text).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the sample (see the module docstring); return 0 (the report says the rate)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant")
    parser.add_argument("--out", default=str(ROOT / "build" / "mutate"))
    parser.add_argument("--list", action="store_true", help="list the sample and stop")
    parser.add_argument("--list-all", action="store_true", help="list every site and stop")
    parser.add_argument("--mutant", action="append",
                        help="run only this mutant (its name as listed; any site, in the "
                             "sample or not), e.g. to recheck a survivor; repeatable")
    args = parser.parse_args(argv)
    every = [m for f in FILES for m in sites(f)]
    sample = random.Random(args.seed).sample(every, min(args.count, len(every)))
    if args.mutant:
        sample = [m for m in every if m.name() in args.mutant]
        missing = set(args.mutant) - {m.name() for m in sample}
        if missing:
            parser.error(f"no such mutation site: {', '.join(sorted(missing))} (--list-all "
                         "lists every site)")
    if args.list or args.list_all:
        for m in every if args.list_all else sample:
            print(m.name())
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="tidal-mutate-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_mutant, m, Path(tmp) / f"m{i}", args.timeout): m
                   for i, m in enumerate(sample)}
        for future in concurrent.futures.as_completed(futures):
            o = future.result()
            outcomes.append(o)
            print(f"[{len(outcomes)}/{len(sample)}] {o.verdict}: {o.mutant.name()} "
                  f"({o.seconds:.0f} s) {o.detail}", flush=True)
            text = report(outcomes, args, len(every))
            (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps(
        [{"mutant": o.mutant.name(), "verdict": o.verdict, "seconds": o.seconds,
          "detail": o.detail} for o in outcomes], indent=1))
    print("\n".join(report(outcomes, args, len(every)).splitlines()[2:10]))
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
