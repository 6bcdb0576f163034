"""A user model factory for the `--model module:factory` tests."""

from torch import nn


def make(in_dim: int, out_dim: int) -> nn.Module:
    """A small tanh MLP with a LayerNorm."""
    return nn.Sequential(nn.Linear(in_dim, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, out_dim))
