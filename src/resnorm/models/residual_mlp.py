"""A residual MLP to compare every placement and norm on (B, F) data."""

from __future__ import annotations

import torch
from torch import nn

from resnorm.models._checks import check_int
from resnorm.nn import Residual, make_final_norm

__all__ = ["residual_mlp", "ResidualMLP", "MLPBranch"]


class MLPBranch(nn.Module):
    """The residual branch ``F(x) = Linear(GELU(Linear(x)))``, ``width -> hidden -> width``."""

    def __init__(self, width: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or width
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualMLP(nn.Module):
    """``Linear(in_features, width)`` -> ``depth`` x ``Residual(MLPBranch(width), placement, norm)``
    -> final norm (pre-family placements only) -> ``Linear(width, num_classes)``.

    Inputs ``(B, ...)`` are flattened. ``blocks``: the residual blocks in depth order. DeepNorm's
    constants use ``depth`` as the number of residual blocks.
    """

    def __init__(
        self,
        depth: int,
        width: int,
        in_features: int,
        num_classes: int,
        norm: str = "layernorm",
        placement: str = "pre",
    ) -> None:
        super().__init__()
        depth = check_int("depth", depth)
        width = check_int("width", width)
        self.in_features = check_int("in_features", in_features)
        num_classes = check_int("num_classes", num_classes)
        self.placement, self.norm = placement, norm
        self.input = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            [Residual(MLPBranch(width), width, placement, norm, depth=depth) for _ in range(depth)]
        )
        self.final_norm = make_final_norm(placement, norm, width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"input must flatten to {self.in_features} features; got {x.shape[1]}")
        x = self.input(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def residual_mlp(
    depth: int,
    width: int,
    in_features: int,
    num_classes: int,
    norm: str = "layernorm",
    placement: str = "pre",
) -> ResidualMLP:
    """A ``depth``-block residual MLP of ``width`` features with any ``norm`` (``resnorm.nn.NORMS``)
    and ``placement`` (``resnorm.nn.PLACEMENTS``)."""
    return ResidualMLP(depth, width, in_features, num_classes, norm=norm, placement=placement)
