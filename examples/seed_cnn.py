"""The seed example (the reference product's streaming-CNN walkthrough), run on tidal.

The code is the seed's, verbatim, except for its import lines
(``import vollo_torch.nn`` -> ``import compiler.frontend as vollo_torch`` and
``import vollo_compiler`` -> ``import compiler as vollo_compiler``), a fixed random seed, and
the two prints at the end. Run from any directory: it writes ``cnn.vollo`` there.
"""

# ruff: noqa: E251, E402, F811, I001 -- the seed's layout: two model definitions, late imports.

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


class CNN(nn.Module):
    def __init__(self, in_channels, out_channels, hidden_channels, kernel_size=3):
        super().__init__()
        # Reduces sequence length by (kernel_size - 1) = 2
        self.conv1 = nn.Conv1d(in_channels, hidden_channels, kernel_size)
        # Reduces sequence length by (kernel_size - 1) = 2
        self.conv2 = nn.Conv1d(hidden_channels, out_channels, kernel_size)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return x


# Instantiate the model
in_channels = 32
out_channels = 1
hidden_channels = 128
model = CNN(in_channels, out_channels, hidden_channels)

import torch
import torch.nn as nn
import torch.nn.functional as F
import compiler.frontend as vollo_torch


class CNN(nn.Module):
    def __init__(self, in_channels, out_channels, hidden_channels, kernel_size=3):
        super().__init__()
        self.conv1 = vollo_torch.nn.PaddedConv1d(in_channels, hidden_channels, kernel_size)
        self.conv2 = vollo_torch.nn.PaddedConv1d(hidden_channels, out_channels, kernel_size)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return x


# Instantiate the model
in_channels = 32
out_channels = 1
hidden_channels = 128
model = CNN(in_channels, out_channels, hidden_channels)

batch_size = 1
sequence_length = 5
input = torch.randn(batch_size, in_channels, sequence_length)

(model, expected_output) = vollo_torch.fx.prepare_shape(model, input)
nnir = vollo_torch.fx.nnir.to_nnir(model)

# Provide the streaming transform with index of the sequence axis
(nnir, output_axis) = nnir.streaming_transform(2)

import compiler as vollo_compiler

program = nnir.to_program(vollo_compiler.Config.ia_420f_c6b32())
vm = program.to_vm()

vm_outputs = []
for i in range(5):
    # Runs inference on one element of the input sequence, updating the
    # streaming CNN's state
    vm_outputs.append(vm.run(input[:, :, i].detach().numpy()))

torch.testing.assert_close(
    expected_output,
    torch.stack(
        [torch.from_numpy(output) for output in vm_outputs],
        axis=output_axis,
    ),
    atol = 5e-3,
    rtol = 1e-3
)

program.save('cnn.vollo')

print(program.cycle_count_per_inference())
print(program.compute_duration_per_inference_us())
