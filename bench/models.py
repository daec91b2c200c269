"""Registry of benchmark models: the shapes of the brief's §5 table and the seed CNN.

Each factory returns ``(model, example input, streaming axis or None, reference cycles)``:
the PyTorch model (seeded weights, eval mode), an input to trace it with, the index of the
sequence axis to give ``NNIR.streaming_transform`` (None for a model that is compiled as
is), and the reference compiler's published compute cycles on the IA-420F C6B32 (None where
there is none). Models the toolchain cannot compile stay in the registry, so that the
benchmark lists them with their error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import compiler.frontend as vollo_torch

__all__ = ["MODELS", "Factory"]

Factory = Callable[[], tuple[nn.Module, torch.Tensor, int | None, int | None]]


class MLP(nn.Module):
    """``layers`` × (Linear ``width_in`` → ``width`` + ReLU); the first takes ``width_in``."""

    def __init__(self, width_in: int, width: int, layers: int) -> None:
        super().__init__()
        sizes = [width_in] + [width] * layers
        self.linears = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears:
            x = F.relu(linear(x))
        return x


class SeedCNN(nn.Module):
    """The seed example's CNN: two causal convolutions (32 → 128 → 1 channels) with ReLU."""

    def __init__(self, in_channels: int = 32, out_channels: int = 1,
                 hidden_channels: int = 128, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = vollo_torch.nn.PaddedConv1d(in_channels, hidden_channels, kernel_size)
        self.conv2 = vollo_torch.nn.PaddedConv1d(hidden_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        return F.relu(self.conv2(x))


class TCN(nn.Module):
    """``layers`` residual blocks of causal conv (kernel ``k``) + ReLU, ``channels`` wide.

    The reference's TCN is dilated; ``PaddedConv1d`` has dilation 1, so this has the same
    weights and work per timestep but a shorter receptive field.
    """

    def __init__(self, channels: int = 128, layers: int = 3, k: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            vollo_torch.nn.PaddedConv1d(channels, channels, k) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x)) + x
        return x


class RMSNorm(nn.Module):
    """RMS normalisation over the channel axis (axis 1 of [N, C, T])."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight


class ResidualCNN(nn.Module):
    """``blocks`` × ([RMSNorm +] causal conv + ReLU + residual), ``channels`` wide."""

    def __init__(self, channels: int = 64, blocks: int = 4, k: int = 8,
                 norm: bool = True) -> None:
        super().__init__()
        self.norms = nn.ModuleList(
            RMSNorm(channels) if norm else nn.Identity() for _ in range(blocks))
        self.convs = nn.ModuleList(
            vollo_torch.nn.PaddedConv1d(channels, channels, k) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, conv in zip(self.norms, self.convs, strict=True):
            x = F.relu(conv(norm(x))) + x
        return x


class ResidualRMSMLP(nn.Module):
    """The reference zoo's activation benchmark: ``blocks`` × (x + Linear ``hidden`` → ``d``
    (act(Linear ``d`` → ``hidden`` (RMSNorm(x))))); 985,856 parameters at d 320, hidden 768.

    ``act`` is ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"softplus"``, ``"silu"`` or ``"elu"``.
    """

    def __init__(self, act: str, d: int = 320, hidden: int = 768, blocks: int = 2) -> None:
        super().__init__()
        self.act = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                    "softplus": F.softplus, "silu": F.silu, "elu": F.elu}[act]
        self.norms = nn.ModuleList(nn.RMSNorm(d) for _ in range(blocks))
        self.ups = nn.ModuleList(nn.Linear(d, hidden) for _ in range(blocks))
        self.downs = nn.ModuleList(nn.Linear(hidden, d) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, up, down in zip(self.norms, self.ups, self.downs, strict=True):
            x = x + down(self.act(up(norm(x))))
        return x


class LayerNormMLP(nn.Module):
    """``layers`` × (LayerNorm → Linear ``width`` → ``width`` → GELU)."""

    def __init__(self, width: int = 512, layers: int = 2) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, linear in zip(self.norms, self.linears, strict=True):
            x = F.gelu(linear(norm(x)))
        return x


class LSTM(nn.Module):
    """One LSTM layer (hidden 128) over a [N, T, 128] sequence."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class LSTMHead(nn.Module):
    """The reference zoo's ``lstm_*`` shape: ``compiler.frontend.nn.LSTM(hidden, hidden,
    layers)`` then Linear(hidden, 32), over a [T, hidden] sequence."""

    def __init__(self, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.lstm = vollo_torch.nn.LSTM(hidden, hidden, num_layers=layers)
        self.fc = nn.Linear(hidden, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x))


class GRU(nn.Module):
    """One GRU layer (hidden 128) over a [T, 128] sequence."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.gru = nn.GRU(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def _make(build: Callable[[], nn.Module], shape: tuple[int, ...], axis: int | None,
          reference: int | None) -> Factory:
    def factory() -> tuple[nn.Module, torch.Tensor, int | None, int | None]:
        torch.manual_seed(0)
        model = build().eval()
        return model, torch.randn(*shape), axis, reference

    return factory


#: name -> factory, in the order of the brief's table (the seed CNN first).
MODELS: dict[str, Factory] = {
    "seed CNN 32-128-1 k3": _make(SeedCNN, (1, 32, 5), 2, None),
    "Linear 128->128 + ReLU": _make(lambda: MLP(128, 128, 1), (1, 128), None, 84),
    "Linear 256->1024 + ReLU": _make(lambda: MLP(256, 1024, 1), (1, 256), None, 161),
    "Linear 1024->1024 + ReLU": _make(lambda: MLP(1024, 1024, 1), (1, 1024), None, 292),
    "MLP 2x(512->512 + ReLU)": _make(lambda: MLP(512, 512, 2), (1, 512), None, 219),
    "MLP 4x(512->512 + ReLU)": _make(lambda: MLP(512, 512, 4), (1, 512), None, 384),
    "MLP 3x(1024->1024 + ReLU)": _make(lambda: MLP(1024, 1024, 3), (1, 1024), None, 748),
    "TCN k3 3x128 (dilation 1)": _make(TCN, (1, 128, 8), 2, 321),
    "CNN 4x(RMSNorm+conv+ReLU+res) 64ch k8": _make(ResidualCNN, (1, 64, 16), 2, 519),
    "CNN 4x(conv+ReLU+res) 64ch k8, no norm": _make(
        lambda: ResidualCNN(norm=False), (1, 64, 16), 2, None),
    "LSTM 1 layer hidden 128": _make(LSTM, (1, 4, 128), 1, 105),
    "lstm_tiny: 2x LSTM 128 + Linear 32": _make(LSTMHead, (4, 128), 0, None),
    "GRU 1 layer hidden 128": _make(GRU, (4, 128), 0, None),
    **{f"MLP-res-RMSNorm d320 h768 {act}": _make(
        lambda act=act: ResidualRMSMLP(act), (1, 320), None, reference)
       for act, reference in (("relu", 591), ("sigmoid", 619), ("tanh", 619),
                              ("softplus", 619), ("silu", 619), ("elu", 703))},
    "LayerNorm MLP 2x(LayerNorm+512->512+GELU)": _make(LayerNormMLP, (1, 512), None, None),
}
