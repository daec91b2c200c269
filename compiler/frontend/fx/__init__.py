"""Tracing PyTorch models with ``torch.fx`` (``prepare_shape``) and translating them (``nnir``)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from compiler.frontend.fx import nnir
from compiler.frontend.nn import PaddedConv1d, Scan

__all__ = ["nnir", "prepare_shape"]


class _Tracer(fx.Tracer):
    """The default fx tracer, with :class:`PaddedConv1d` and :class:`Scan` leaves (and, as
    every ``torch.nn`` module, ``LSTM`` and ``GRU``) and source lines recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (isinstance(m, PaddedConv1d | Scan)
                or super().is_leaf_module(m, module_qualified_name))


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

    Raises
    ------
    ValueError
        If ``model`` is not a module, an input is not a floating-point tensor, the model
        fails on the inputs (the message starts with PyTorch's), or torch.fx cannot trace it.
    """
    _check_inputs(model, inputs)
    # Run the model once first: a PyTorch error then names the real problem, where ShapeProp
    # would print a traceback and wrap it in the fx node's metadata.
    with torch.no_grad():
        try:
            expected = model(*inputs)
        except Exception as exc:
            raise ValueError(f"the model fails on the example input: {_first_line(exc)}") \
                from exc
    tracer = _Tracer()
    if tracer.is_leaf_module(model, ""):
        model = nn.Sequential(model)  # fx traces through the root, so make a leaf a child
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise ValueError(f"torch.fx cannot trace the model (data-dependent control flow or "
                         f"an untraceable call?): {_first_line(exc)}") from exc
    graph_module = fx.GraphModule(tracer.root, graph, type(model).__name__)
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        try:
            ShapeProp(graph_module).propagate(*inputs)
        except Exception as exc:
            raise ValueError("the traced model fails on the example input: "
                             f"{_first_line(exc.__cause__ or exc)}") from exc
    return graph_module, fx.node.map_aggregate(
        expected, lambda v: v.detach() if isinstance(v, torch.Tensor) else v
    )


def _check_inputs(model: Any, inputs: tuple[Any, ...]) -> None:
    """Raise ValueError unless ``model`` is a module and every input a floating tensor."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"the model must be a torch.nn.Module, not {type(model).__name__}")
    for k, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"example input {k} must be a torch.Tensor, not "
                             f"{type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"example input {k} has dtype {x.dtype}: the machine computes in "
                             "bf16, so inputs must be floating-point tensors (use .float())")


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")
