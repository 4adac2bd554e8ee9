"""Models built from resnorm's norms and residual designs.

Every model maps ``forward(input) -> logits`` and exposes ``blocks: nn.ModuleList``, its residual (or
plain) blocks in depth order, each returning the stream after the block.

- ``seed_resnet``, ``seed_mlp``: the two networks of the founding documents;
- ``resnet_cifar(depth, residual)``: He et al. 2016's CIFAR ResNets and plain twins;
- ``residual_mlp(depth, width, ...)``: any placement x norm on (B, F) data;
- ``GPT(GPTConfig(...))``: a nanoGPT-style decoder with any placement x norm.
"""

from resnorm.models.gpt import GPT, Block, CausalSelfAttention, FeedForward, GPTConfig
from resnorm.models.residual_mlp import MLPBranch, ResidualMLP, residual_mlp
from resnorm.models.resnet_cifar import BasicBlock, ResNetCifar, resnet_cifar
from resnorm.models.seed import SeedMLP, SeedMLPStage, SeedResBlock, SeedResNet, seed_mlp, seed_resnet

__all__ = [
    "seed_resnet",
    "seed_mlp",
    "resnet_cifar",
    "residual_mlp",
    "GPT",
    "GPTConfig",
    "SeedResNet",
    "SeedResBlock",
    "SeedMLP",
    "SeedMLPStage",
    "ResNetCifar",
    "BasicBlock",
    "ResidualMLP",
    "MLPBranch",
    "CausalSelfAttention",
    "FeedForward",
    "Block",
]
