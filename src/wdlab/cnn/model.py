"""The built-in CNN: a small ``nn.Module`` for 1-D signals or images."""

from __future__ import annotations

from torch import Tensor, nn


class CNN(nn.Module):
    """A small CNN for 1-D signals (C, L) or images (C, H, W).

    Per entry of ``channels``: a 3-wide convolution (without a bias when BatchNorm follows: its
    shift makes one redundant, and Adam would random-walk it on rounding noise), optional
    BatchNorm, ReLU, and a 2× max-pool while the signal is at least 4 long; then
    global average pooling, optional Dropout and a Linear head. Flat inputs (n, d) are read as
    one-channel signals of length d.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        channels: tuple[int, ...],
        out_dim: int,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) not in (2, 3):
            raise ValueError(f"cnn needs inputs of shape (C, L) or (C, H, W), got {in_shape}")
        self.in_shape = tuple(in_shape)
        two_d = len(in_shape) == 3
        conv, norm, pool = (
            (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
            if two_d
            else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
        )
        layers: list[nn.Module] = []
        c, size = in_shape[0], min(in_shape[1:])
        for ch in channels or (16, 32):
            layers.append(conv(c, ch, 3, padding=1, bias=not batchnorm))  # BatchNorm has the bias
            if batchnorm:
                layers.append(norm(ch))
            layers.append(nn.ReLU())
            if size >= 4:
                layers.append(pool(2))
                size //= 2
            c = ch
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(c, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs (logits or predictions) of shape (n, out_dim)."""
        x = x.reshape(len(x), *self.in_shape)
        h = self.features(x).flatten(2).mean(2)
        return self.head(self.dropout(h))
