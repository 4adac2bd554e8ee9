"""A nanoGPT-style decoder whose every residual and norm is a resnorm module.

Token + position embeddings -> ``n_layer`` layers -> final norm (when the placement needs one) -> a
head tied to the token embedding. A layer (``Block``) is two residual blocks, attention then
feed-forward, each a ``resnorm.nn.StreamBlock`` with ``config.placement`` and ``config.norm``, so any
design in ``resnorm.nn.PLACEMENTS`` and any norm in ``resnorm.nn.NORMS`` can be trained.

The stream. Layers map ``(hidden, residual) -> (hidden, residual)`` (flash-attention's ``Block``
interface): the model starts from ``(embeddings, None)``, every norm makes the pending residual add
inside its one ``add_norm`` call, and the final norm takes the last one. A pre-norm (or post-norm)
GPT of L layers thus makes 2L ``add_norm`` calls that carry a residual and no residual add outside
them. ``GPTConfig(fused=False)`` runs the textbook form of every block instead (explicit adds,
separate norm calls), the same numbers up to rounding.

Init (``GPTConfig.init``; embeddings are N(0, 0.02) in all three, biases 0):

- ``"gpt2"`` (default; GPT-2 / nanoGPT): every Linear N(0, 0.02), the two output projections of each
  layer (attention out, MLP down) N(0, 0.02 / sqrt(2 * n_layer)). With ``placement="deepnorm"``,
  DeepNet's beta then multiplies the value, attention-out and MLP weights (on top of this init).
- ``"xavier"``: Xavier-uniform for every projection (query, key and value each as its own d x d
  matrix), as Xiong et al. 2020 and DeepNet train; deepnorm's beta multiplies on top, as for gpt2.
- ``"deepnet"``: DeepNet's Algorithm 1 (Wang et al. 2022): Xavier-normal with gain beta for the value,
  attention-out and both MLP weights, gain 1 for query and key; beta = (8 n_layer)^(-1/4) whatever the
  placement (deepnorm does not apply it a second time).

Options (default off): ``qk_norm`` — the model's norm applied per head to q and k (Dehghani et al.
2023; OLMo 2; Qwen3); ``value_residual`` — every layer's values mixed with the first layer's,
``V <- l1 V + l2 V_1`` with learnable l1, l2 (0.5 at init; Zhou et al. 2024, ResFormer).

``placement="ngpt"`` is the normalized Transformer (Loshchilov et al., ICLR 2025): unit-norm hidden
states ``h <- Norm(h + alpha (Norm(F(h)) - h))`` (``resnorm.nn.StreamBlock``), no other norm (``norm``
is ignored, and so is ``qk_norm``), q and k normalized per head and scaled by a learned ``s_qk``
with softmax scale sqrt(d_head) instead of 1/sqrt(d_head), the MLP pre-activation scaled by
``s_u * sqrt(d_model)``, logits scaled by a learned per-token ``s_z``; the embeddings' rows and every
matrix along the embedding dimension are unit vectors, restored by ``after_optimizer_step()`` (the
lab's trainer calls it after every optimizer step). Positions: the sum of the token and (learned)
position embeddings is normalized (the paper uses RoPE).

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

from resnorm._checks import check_bool, check_choice, check_float, check_int, check_probability
from resnorm.nn import (
    NORMS,
    PLACEMENTS,
    LearnedScale,
    StreamBlock,
    begin_stream,
    composite_mixing_gains,
    deepnorm_constants,
    end_stream,
    make_final_norm,
    make_norm,
    normalize_matrix_,
)

__all__ = ["GPT", "GPTConfig", "CausalSelfAttention", "FeedForward", "Block", "INITS"]

INITS = ("gpt2", "xavier", "deepnet")


@dataclass
class GPTConfig:
    """Sizes and design of a ``GPT``.

    ``d_model`` must be divisible by ``n_head``; ``norm`` in ``resnorm.nn.NORMS``; ``placement`` in
    ``resnorm.nn.PLACEMENTS``; ``bias`` for the Linear layers and the LayerNorms (as nanoGPT:
    ``bias=False`` means no additive bias anywhere). ``qk_norm``, ``value_residual`` and ``init``: the
    module docstring. ``fused=False``: the textbook form of every block. Placement options:
    ``mixln_rho`` (mixln: post-norm in the first floor(rho n_layer) layers), ``streams`` (hyper, mhc:
    residual streams), ``hyper_dynamic`` (hyper: dynamic or static), ``sinkhorn_iters`` (mhc)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    d_model: int
    norm: str = "rmsnorm"
    placement: str = "pre"
    dropout: float = 0.0
    bias: bool = False
    qk_norm: bool = False
    value_residual: bool = False
    init: str = "gpt2"
    fused: bool = True
    mixln_rho: float = 0.25
    streams: int = 4
    hyper_dynamic: bool = True
    sinkhorn_iters: int = 20

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "streams", "sinkhorn_iters"):
            check_int(name, getattr(self, name))
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        check_choice("norm", self.norm, NORMS)
        check_choice("placement", self.placement, PLACEMENTS)
        check_choice("init", self.init, INITS)
        check_probability("dropout", self.dropout)
        check_float("mixln_rho", self.mixln_rho, minimum=0.0, maximum=1.0)
        for name in ("bias", "qk_norm", "value_residual", "fused", "hyper_dynamic"):
            check_bool(name, getattr(self, name))


@torch.no_grad()
def _init_projection(weight: torch.Tensor, init: str, *, std: float, gain: float = 1.0) -> None:
    """One projection matrix (out x in): gpt2 N(0, std); xavier uniform; deepnet xavier normal x gain."""
    if init == "gpt2":
        nn.init.normal_(weight, mean=0.0, std=std)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight)
    else:
        nn.init.xavier_normal_(weight, gain=gain)


def _init_linear(linear: nn.Linear, init: str, *, std: float, gain: float = 1.0) -> None:
    _init_projection(linear.weight, init, std=std, gain=gain)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _deepnet_beta(config: GPTConfig) -> float:
    return deepnorm_constants(2 * config.n_layer)[1]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (``F.scaled_dot_product_attention(is_causal=True)``).

    ``forward(x, values=None)``: with ``config.value_residual`` the GPT passes one dict per forward;
    layer 1 stores its values there and every later layer uses ``l1 V + l2 V_1``. ``config.qk_norm``
    applies the model's norm per head to q and k; under ``ngpt`` q and k are unit vectors per head
    times ``s_qk`` and the softmax scale is sqrt(d_head).

    Set ``record_entropy = True`` to compute the attention probabilities explicitly instead; the
    forward then stores ``last_entropy``: the mean over batch, heads and query positions of
    ``-sum_k p log p`` (nats). Meant for probes on sampled steps only (it is slower).
    """

    record_entropy: bool = False

    def __init__(self, config: GPTConfig, layer: int = 1) -> None:
        super().__init__()
        d = config.d_model
        self.n_head, self.d_model, self.head_dim = config.n_head, d, d // config.n_head
        self.layer = check_int("layer", layer)
        self.qkv = nn.Linear(d, 3 * d, bias=config.bias)
        self.out = nn.Linear(d, d, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.last_entropy: float | None = None
        ngpt = config.placement == "ngpt"
        self.q_norm = self.k_norm = None
        if config.qk_norm and not ngpt:
            self.q_norm = make_norm(config.norm, self.head_dim, channels_first=False, bias=config.bias)
            self.k_norm = make_norm(config.norm, self.head_dim, channels_first=False, bias=config.bias)
        self.qk_scale = LearnedScale(d, 1.0, d**-0.5) if ngpt else None
        self.value_lambdas = (nn.Parameter(torch.tensor([0.5, 0.5]))
                              if config.value_residual and self.layer > 1 else None)
        out_std = 0.02 / math.sqrt(2 * config.n_layer)
        beta = _deepnet_beta(config)
        if config.init == "gpt2":  # one draw for the fused matrix: exactly nanoGPT's init
            _init_linear(self.qkv, "gpt2", std=0.02)
        else:
            with torch.no_grad():
                for i in range(3):  # query, key, value: each its own d x d matrix (its own fans)
                    gain = beta if i == 2 else 1.0
                    _init_projection(self.qkv.weight[i * d : (i + 1) * d], config.init, std=0.02, gain=gain)
                if self.qkv.bias is not None:
                    nn.init.zeros_(self.qkv.bias)
        _init_linear(self.out, config.init, std=out_std, gain=beta)

    @torch.no_grad()
    def deepnorm_scale_(self, beta: float) -> None:
        """DeepNet's init: scale value and output projections by beta; query and key keep theirs."""
        self.qkv.weight[2 * self.d_model :].mul_(beta)
        self.out.weight.mul_(beta)

    @torch.no_grad()
    def ngpt_normalize_(self) -> None:
        """nGPT: q, k, v projections read the stream (unit rows), the output projection writes it
        (unit columns)."""
        normalize_matrix_(self.qkv.weight, dim=1)
        normalize_matrix_(self.out.weight, dim=0)

    def forward(self, x: torch.Tensor, values: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        heads = (B, T, self.n_head, self.head_dim)
        q, k, v = q.view(heads), k.view(heads), v.view(heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        scale = None  # SDPA's default 1/sqrt(d_head)
        if self.qk_scale is not None:  # nGPT: cosine similarities times s_qk^2, softmax scale sqrt(d_head)
            s_qk = self.qk_scale().view(self.n_head, self.head_dim)
            q, k = F.normalize(q, dim=-1) * s_qk, F.normalize(k, dim=-1) * s_qk
            scale = math.sqrt(self.head_dim)
        if values is not None:
            if self.value_lambdas is None:
                values["first"] = v
            else:
                v = self.value_lambdas[0] * v + self.value_lambdas[1] * values["first"]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        p_drop = self.dropout if self.training else 0.0
        if self.record_entropy:
            softmax_scale = scale if scale is not None else 1.0 / math.sqrt(self.head_dim)
            scores = (q @ k.transpose(-2, -1)) * softmax_scale
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            entropy = -torch.special.xlogy(probs.float(), probs.float()).sum(dim=-1)
            self.last_entropy = float(entropy.detach().mean()) if entropy.numel() else 0.0
            y = F.dropout(probs, p_drop, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=True, scale=scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.out(y))


class FeedForward(nn.Module):
    """``Dropout(Linear(GELU(Linear(x))))``, ``d_model -> 4 d_model -> d_model``; under ``ngpt`` the
    pre-activation is scaled by ``s_u * sqrt(d_model)`` (nGPT's ``s_nu``)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.fc = nn.Linear(d, 4 * d, bias=config.bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * d, d, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.ngpt_scale = LearnedScale(4 * d, 1.0, 1.0) if config.placement == "ngpt" else None
        self._sqrt_d = math.sqrt(d)
        beta = _deepnet_beta(config)
        _init_linear(self.fc, config.init, std=0.02, gain=beta)
        _init_linear(self.proj, config.init, std=0.02 / math.sqrt(2 * config.n_layer), gain=beta)

    @torch.no_grad()
    def ngpt_normalize_(self) -> None:
        """nGPT: ``fc`` reads the stream (unit rows), ``proj`` writes it (unit columns)."""
        normalize_matrix_(self.fc.weight, dim=1)
        normalize_matrix_(self.proj.weight, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.fc(x)
        if self.ngpt_scale is not None:
            u = u * (self.ngpt_scale() * self._sqrt_d)
        return self.dropout(self.proj(self.act(u)))


class Block(nn.Module):
    """One transformer layer: attention then feed-forward, each a ``StreamBlock`` with the config's
    placement and norm. ``forward(hidden, residual=None, values=None) -> (hidden, residual)``: the
    stream state in and out (``resnorm.nn.StreamBlock``); ``values`` is the value-residual dict."""

    def __init__(self, config: GPTConfig, layer: int = 1) -> None:
        super().__init__()
        design = dict(
            placement=config.placement, norm=config.norm, depth=2 * config.n_layer,  # DeepNorm's M = 2N
            layer=layer, num_layers=config.n_layer, mixln_rho=config.mixln_rho, streams=config.streams,
            hyper_dynamic=config.hyper_dynamic, sinkhorn_iters=config.sinkhorn_iters, norm_bias=config.bias,
            fused=config.fused, scale_branch=config.init != "deepnet",
        )
        self.attention = StreamBlock(CausalSelfAttention(config, layer), config.d_model, **design)
        self.feedforward = StreamBlock(FeedForward(config), config.d_model, **design)

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None = None, values: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if values is None:
            hidden, residual = self.attention(hidden, residual)
        else:
            hidden, residual = self.attention(hidden, residual, values=values)
        return self.feedforward(hidden, residual)

    def mixing_matrices(self) -> list[torch.Tensor]:
        """The stream-mixing matrices ``(..., n, n)`` of the layer's two blocks (hyper/mhc), in order;
        [] otherwise. (``residual_mixing()`` is the one-matrix method of a block or connection module:
        a transformer layer holds two blocks, so it has this list instead.)"""
        mixing = (self.attention.residual_mixing(), self.feedforward.residual_mixing())
        return [m for m in mixing if m is not None]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.attention.after_optimizer_step()
        self.feedforward.after_optimizer_step()


class GPT(nn.Module):
    """Decoder-only transformer (nanoGPT layout). ``forward(idx) -> logits (B, T, vocab_size)``;
    ``blocks``: the ``n_layer`` layers; ``attention_modules()``: their attention layers;
    ``after_optimizer_step()``: nGPT's re-normalization (nothing for other placements);
    ``residual_mixing_gains()``: hyper/mhc's composite mixing gains per layer."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig; got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.block_size, d)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, layer + 1) for layer in range(config.n_layer)])
        self.final_norm = make_final_norm(config.placement, config.norm, d, bias=config.bias,
                                          num_layers=config.n_layer, mixln_rho=config.mixln_rho)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying (Press & Wolf 2017)
        nn.init.normal_(self.token_embedding.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.position_embedding.weight, mean=0.0, std=0.02)
        self.ngpt = config.placement == "ngpt"
        self.logit_scale = LearnedScale(config.vocab_size, 1.0, d**-0.5) if self.ngpt else None
        if self.ngpt:
            self.after_optimizer_step()

    def attention_modules(self) -> list[CausalSelfAttention]:
        return [m for m in self.modules() if isinstance(m, CausalSelfAttention)]

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
        placement = self.config.placement
        hidden, residual = begin_stream(x, placement, self.config.streams)
        values = {} if self.config.value_residual else None
        for block in self.blocks:
            hidden, residual = block(hidden, residual, values)
        logits = self.lm_head(end_stream(hidden, residual, self.final_norm, placement=placement,
                                         fused=self.config.fused))
        return logits if self.logit_scale is None else logits * self.logit_scale()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """nGPT: the embeddings' rows (the tied head's too) and every block matrix back to unit norm
        along the embedding dimension; nothing for the other placements."""
        if not self.ngpt:
            return
        normalize_matrix_(self.token_embedding.weight, dim=1)
        normalize_matrix_(self.position_embedding.weight, dim=1)
        for block in self.blocks:
            block.after_optimizer_step()

    def residual_mixing_gains(self) -> dict[str, list[float]] | None:
        """hyper/mhc: forward and backward gains of the composite stream mixing from the input to the
        end of each layer (``resnorm.nn.composite_mixing_gains``; the last forward's matrices);
        None for single-stream placements."""
        return composite_mixing_gains([block.mixing_matrices() for block in self.blocks])

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
