"""Model factories for ``tidal compile FILE.py:FACTORY``: each returns (model, example input).

``seed_cnn`` is the streaming CNN of the seed example (32 → 128 → 1 channels, kernel 3);
``lstm_tiny`` the reference zoo's two-layer LSTM (hidden 128) with a Linear to 32.
"""

import torch
import torch.nn.functional as F
from torch import nn

import compiler.frontend as vollo_torch


class CNN(nn.Module):
    """The seed example's CNN: two causal convolutions with ReLU."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = vollo_torch.nn.PaddedConv1d(in_channels, hidden_channels, kernel_size)
        self.conv2 = vollo_torch.nn.PaddedConv1d(hidden_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return x


def seed_cnn(sequence_length: int = 5) -> tuple[nn.Module, torch.Tensor]:
    """Return the seed CNN (seeded weights) and an input of shape [1, 32, sequence_length].

    Compile it with ``--streaming-axis 2``.
    """
    torch.manual_seed(0)
    model = CNN(in_channels=32, out_channels=1, hidden_channels=128)
    return model, torch.randn(1, 32, sequence_length)


class LSTMHead(nn.Module):
    """``vollo_torch.nn.LSTM`` layers, then a Linear on every step's hidden state."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, out: int) -> None:
        super().__init__()
        self.lstm = vollo_torch.nn.LSTM(input_size, hidden_size, num_layers=num_layers)
        self.fc = nn.Linear(hidden_size, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x))


def lstm_tiny(sequence_length: int = 5) -> tuple[nn.Module, torch.Tensor]:
    """Return two LSTM layers of 128 and a Linear to 32 (seeded weights) and an input of
    shape [sequence_length, 128].

    Compile it with ``--streaming-axis 0``: each inference is one step, the states on chip.
    """
    torch.manual_seed(0)
    return LSTMHead(128, 128, 2, 32), torch.randn(sequence_length, 128)
