"""The Amaranth RTL of the tidal machine (``docs/rtl.md``).

:class:`~rtl.top.Top` is the machine; ``python -m rtl.gen`` (:func:`rtl.gen.generate`)
writes its Verilog. The arithmetic is in :mod:`rtl.arith` and :mod:`rtl.dot`.
"""

from rtl.core import Core
from rtl.top import Top

__all__ = ["Top", "Core"]
