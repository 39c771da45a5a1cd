"""Squeeze-and-excitation (Hu et al., SENet), the paper's Tables 6 and 12."""
import torch.nn as nn


class SqueezeExcitation(nn.Module):
    """Scale each channel by a gate computed from the whole image:
    ``x * sigmoid(expand(relu(reduce(mean_{spatial}(x)))))``.

    Args:
        channels (int): Number of channels C of (N, C, ...) inputs.
        ratio (float): Hidden width of the gate as a fraction of C,
            rounded, at least 1. Defaults to 1/16 (SENet's reduction 16,
            the reading that reproduces the paper's parameter counts).
    """

    def __init__(self, channels, ratio=1 / 16):
        super().__init__()
        hidden = max(1, round(channels * ratio))
        self.reduce = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        squeezed = x.mean(tuple(range(2, x.dim())))
        gate = self.gate(self.expand(self.act(self.reduce(squeezed))))
        return x * gate.view(gate.shape + (1, ) * (x.dim() - 2))
