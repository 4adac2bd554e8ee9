"""A nanoGPT-style decoder whose every residual and norm is a resnorm module.

Token + position embeddings -> ``n_layer`` blocks -> final norm (pre-family placements) -> a head
tied to the token embedding. A block is two residual sublayers, ``Residual(attention)`` then
``Residual(MLP)``, each with ``config.placement`` and ``config.norm``, so any design in
``resnorm.nn.PLACEMENTS`` and any norm in ``resnorm.nn.NORMS`` can be trained.

Init (GPT-2 / nanoGPT): every Linear and embedding N(0, 0.02), biases 0, and the two output
projections of each block (attention out, MLP down) N(0, 0.02 / sqrt(2 * n_layer)). DeepNorm then
multiplies the value, attention-out and MLP weights by beta (``resnorm.nn.deepnorm_constants`` with
depth = 2 * n_layer residual sublayers).

Norms that pool statistics across positions see the future during training: batchnorm (over batch
and positions, while training) breaks causality in train mode; groupnorm here is per position
(``resnorm.nn.GroupNorm`` on channels-last input) and stays causal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnorm.models._checks import check_int
from resnorm.nn import FUSABLE_NORMS, NORMS, PLACEMENTS, Residual, make_final_norm

__all__ = ["GPT", "GPTConfig", "CausalSelfAttention", "FeedForward", "Block"]


@dataclass
class GPTConfig:
    """Sizes and design of a ``GPT``: ``d_model`` must be divisible by ``n_head``; ``norm`` in
    ``resnorm.nn.NORMS``; ``placement`` in ``resnorm.nn.PLACEMENTS``; ``bias`` for the Linear layers
    and the LayerNorms (as nanoGPT: ``bias=False`` means no additive bias anywhere)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    d_model: int
    norm: str = "rmsnorm"
    placement: str = "pre"
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            check_int(name, getattr(self, name))
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {self.norm!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {self.placement!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"dropout must be a float in [0, 1); got {type(self.dropout).__name__}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")


def _init_linear(linear: nn.Linear, std: float) -> None:
    nn.init.normal_(linear.weight, mean=0.0, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (``F.scaled_dot_product_attention(is_causal=True)``).

    Set ``record_entropy = True`` to compute the attention probabilities explicitly instead; the
    forward then stores ``last_entropy``: the mean over batch, heads and query positions of
    ``-sum_k p log p`` (nats). Meant for probes on sampled steps only (it is slower).
    """

    record_entropy: bool = False

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.d_model = config.n_head, config.d_model
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.out = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.last_entropy: float | None = None
        _init_linear(self.qkv, 0.02)
        _init_linear(self.out, 0.02 / math.sqrt(2 * config.n_layer))

    @torch.no_grad()
    def deepnorm_scale_(self, beta: float) -> None:
        """DeepNet's init: scale value and output projections by beta; query and key keep theirs."""
        self.qkv.weight[2 * self.d_model :].mul_(beta)
        self.out.weight.mul_(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p_drop = self.dropout if self.training else 0.0
        if self.record_entropy:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            entropy = -torch.special.xlogy(probs.float(), probs.float()).sum(dim=-1)
            self.last_entropy = float(entropy.detach().mean()) if entropy.numel() else 0.0
            y = F.dropout(probs, p_drop, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.out(y))


class FeedForward(nn.Module):
    """``Dropout(Linear(GELU(Linear(x))))``, ``d_model -> 4 d_model -> d_model``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        _init_linear(self.fc, 0.02)
        _init_linear(self.proj, 0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """One transformer layer: ``Residual(CausalSelfAttention)`` then ``Residual(FeedForward)``.

    For ``placement="pre"`` with layernorm/rmsnorm, the attention sublayer's residual add and the
    feed-forward's norm run as one ``add_norm(..., prenorm=True)`` call — the same numbers as
    ``x = x + attn(Norm1(x)); x = x + mlp(Norm2(x))``, with one pass over memory less.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        depth = 2 * config.n_layer  # residual sublayers in the model (DeepNorm's M = 2N)
        design = dict(placement=config.placement, norm=config.norm, depth=depth, norm_bias=config.bias)
        self.attention = Residual(CausalSelfAttention(config), config.d_model, **design)
        self.feedforward = Residual(FeedForward(config), config.d_model, **design)
        self.fuse_pre = config.placement == "pre" and config.norm in FUSABLE_NORMS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse_pre:
            attn_out = self.attention.branch(self.attention.norm(x))
            h, x = self.feedforward.norm.forward_add(attn_out, x, prenorm=True)  # x += attn; h = Norm2(x)
            return x + self.feedforward.branch(h)
        return self.feedforward(self.attention(x))


class GPT(nn.Module):
    """Decoder-only transformer (nanoGPT layout). ``forward(idx) -> logits (B, T, vocab_size)``;
    ``blocks``: the ``n_layer`` blocks; ``attention_modules()``: their attention layers."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig; got {type(config).__name__}")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.block_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.final_norm = make_final_norm(config.placement, config.norm, config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying (Press & Wolf 2017)
        nn.init.normal_(self.token_embedding.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.position_embedding.weight, mean=0.0, std=0.02)

    def attention_modules(self) -> list[CausalSelfAttention]:
        return [block.attention.branch for block in self.blocks]

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); ``non_embedding`` drops the position embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.position_embedding.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 2:
            raise TypeError("idx must be a (B, T) tensor of int64/int32 token ids")
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T), conditioning on at most the last
        ``block_size`` tokens; logits divided by ``temperature`` and cut to the ``top_k`` best."""
        check_int("max_new_tokens", max_new_tokens, minimum=0)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if top_k is not None:
            top_k = check_int("top_k", top_k)
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits = self(context)[:, -1, :] / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_token = torch.multinomial(logits.softmax(dim=-1), num_samples=1)
            idx = torch.cat([idx, next_token.to(idx.dtype)], dim=1)
        return idx
