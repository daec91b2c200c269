"""Tracing PyTorch models with ``torch.fx`` (``prepare_shape``) and translating them (``nnir``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from compiler.frontend.fx import nnir
from compiler.frontend.nn import PaddedConv1d

__all__ = ["nnir", "prepare_shape"]


class _Tracer(fx.Tracer):
    """The default fx tracer, with :class:`PaddedConv1d` a leaf and source lines recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, PaddedConv1d) or super().is_leaf_module(m, module_qualified_name)


def prepare_shape(model: nn.Module, *inputs: torch.Tensor) -> tuple[fx.GraphModule, Any]:
    """Trace a model and annotate every node with the shape it has for these inputs.

    Parameters
    ----------
    model : torch.nn.Module
        The model, in the mode it should be translated in (call ``model.eval()`` first if it
        has dropout). It is not modified.
    *inputs : torch.Tensor
        Example inputs, one per argument of ``model.forward``; their shapes (including the
        sequence length of a streaming model) become the shapes of the NNIR graph.

    Returns
    -------
    tuple of (torch.fx.GraphModule, Any)
        The traced module, sharing ``model``'s parameters, with ``node.meta["tensor_meta"]``
        on every tensor-valued node (what :func:`compiler.frontend.fx.nnir.to_nnir` reads);
        and ``model(*inputs)`` computed without gradients (a tensor, or a tuple of them).
    """
    tracer = _Tracer()
    if tracer.is_leaf_module(model, ""):
        model = nn.Sequential(model)  # fx traces through the root, so make a leaf a child
    graph = tracer.trace(model)
    graph_module = fx.GraphModule(tracer.root, graph, type(model).__name__)
    with torch.no_grad():
        ShapeProp(graph_module).propagate(*inputs)
        expected = model(*inputs)
    return graph_module, fx.node.map_aggregate(
        expected, lambda v: v.detach() if isinstance(v, torch.Tensor) else v
    )
