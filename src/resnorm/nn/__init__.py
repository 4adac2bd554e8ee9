"""Norm modules and residual designs.

- ``LayerNorm``, ``RMSNorm``: drop-ins for torch.nn's, computed by ``resnorm.add_norm``;
- ``AddNorm``: the module form of ``add_norm`` (residual add + norm, returns ``(y, residual_out)``);
- ``DyT``, ``ScaleNorm``, layout-aware ``BatchNorm`` / ``GroupNorm``; ``make_norm(name, dim)`` over ``NORMS``;
- ``Residual(branch, dim, placement, norm)``: every residual design in ``PLACEMENTS``.
"""

from resnorm.nn.norms import (
    FUSABLE_NORMS,
    NORMS,
    AddNorm,
    BatchNorm,
    ChannelsFirst,
    DyT,
    GroupNorm,
    LayerNorm,
    RMSNorm,
    ScaleNorm,
    default_num_groups,
    make_norm,
)
from resnorm.nn.residual import (
    PLACEMENTS,
    PRE_FAMILY,
    Residual,
    deepnorm_constants,
    make_final_norm,
    needs_final_norm,
    scale_branch_init_,
)

__all__ = [
    "LayerNorm",
    "RMSNorm",
    "AddNorm",
    "DyT",
    "ScaleNorm",
    "BatchNorm",
    "GroupNorm",
    "ChannelsFirst",
    "make_norm",
    "default_num_groups",
    "NORMS",
    "FUSABLE_NORMS",
    "Residual",
    "PLACEMENTS",
    "PRE_FAMILY",
    "needs_final_norm",
    "make_final_norm",
    "deepnorm_constants",
    "scale_branch_init_",
]
