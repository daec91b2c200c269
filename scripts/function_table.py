"""Measure every function of the function unit over all 65,536 bf16 inputs and write the
accuracy table into ``docs/numerics.md`` (between the ``functions`` markers).

Usage: ``python scripts/function_table.py [--check]``; ``make functions`` runs it. With
``--check`` nothing is written and the exit status says whether the document is current
(``tests/test_functions.py`` runs that check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from isa import functions
from isa.numerics import bf16_bits_to_f32

DOC = Path(__file__).resolve().parents[1] / "docs" / "numerics.md"
BEGIN, END = "<!-- functions:begin -->", "<!-- functions:end -->"


def render() -> str:
    """Return the generated table (Markdown, between and excluding the markers)."""
    rows = [
        f"Function table: {functions.table().size} entries of 32 bits per core "
        f"({functions.table().size * 32 / 1024:.0f} Kibit).",
        "",
        "| function | mode | table entries | max error (bf16 ulp) | worst input |",
        "|---|---|---:|---:|---|",
    ]
    for fn, err, worst in functions.accuracy():
        spec = functions.SPECS[fn]
        if spec.mode == functions.Mode.WINDOW:
            pos, neg = functions.windows(fn)
            entries = pos.entries + neg.entries
        elif spec.mode == functions.Mode.POWER:
            entries = 128 if spec.power == -1.0 else 256
        else:
            entries = 128
        x = float(bf16_bits_to_f32(np.uint16(worst)))
        rows.append(f"| `{fn.name}` | {spec.mode.value} | {entries} | {err:.3f} | "
                    f"`{worst:#06x}` ({x:.6g}) |")
    rows.append("| `MAX_LANES` | max_lanes | 0 | exact | — |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that docs/numerics.md holds the current table")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC}: the markers {BEGIN} / {END} are missing", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render()}\n{END}{tail}"
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run `make functions`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote the function table to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
