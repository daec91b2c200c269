"""Small model helpers shared by the test modules."""

from collections.abc import Callable

import torch
from torch import nn


class Fn(nn.Module):
    """A model whose forward is ``fn(self, x)`` (so tests can write models as lambdas)."""

    def __init__(self, fn: Callable[..., torch.Tensor], **modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)
