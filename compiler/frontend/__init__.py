"""The PyTorch front end: ``import compiler.frontend as vollo_torch``.

``nn`` holds the modules the compiler recognises as single operations (``PaddedConv1d``);
``fx`` traces a model (``fx.prepare_shape``) and translates it to NNIR (``fx.nnir.to_nnir``).
"""

from __future__ import annotations

from compiler.frontend import fx, nn

__all__ = ["fx", "nn"]
