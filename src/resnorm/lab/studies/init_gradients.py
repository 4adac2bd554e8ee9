"""Xiong et al. 2020's gradient statistic at initialization, on the lab's GPT (study xiong2020).

``init_gradients`` measures, per layer, the Frobenius norm of the expected gradient (the element-wise
mean over mini-batches, then the norm) of the feed-forward matrices, the statistic of Xiong et al.'s
figure 3, with Xavier init, unit-variance inputs and an untied output layer.
``variant="post+cross"`` adds to each Post-LN layer a sublayer whose branch does not read the stream
(encoder attention at initialization with uniform attention, Xiong et al.'s own simplification): the
control that separates the LayerNorm's contraction of the gradient from the branch's expansion of it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["init_gradients", "build_model", "VARIANTS"]

VARIANTS = ("post", "pre", "post+cross")


class _Memory(nn.Module):
    """The branch of encoder attention at initialization with uniform attention (Xiong et al.'s
    simplification, Q = K = 0): ``W_O W_V mean(memory)``, the same for every position, and not a
    function of the decoder stream. ``memory`` is set per batch."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        nn.init.xavier_uniform_(self.value.weight)
        nn.init.xavier_uniform_(self.out.weight)
        self.memory: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.value(self.memory)).expand_as(x)


class _WithMemory(nn.Module):
    """A post-LN GPT layer with a third sublayer between attention and feed-forward:
    ``x <- LN(x + W_O W_V mean(memory))`` (a decoder layer's encoder attention, stand-in)."""

    def __init__(self, block: nn.Module, d_model: int) -> None:
        from resnorm.nn import Residual

        super().__init__()
        self.block = block
        self.cross = Residual(_Memory(d_model), d_model, placement="post", norm="layernorm", norm_bias=False)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None = None, values: dict | None = None):
        hidden, residual = self.block.attention(hidden, residual)
        if residual is not None:
            hidden, residual = hidden + residual, None
        return self.block.feedforward(self.cross(hidden), None)


def build_model(
    data,
    variant: str,
    n_layer: int,
    *,
    d_model: int = 128,
    n_head: int = 4,
    seed: int = 0,
    block_size: int = 64,
) -> tuple[nn.Module, list[nn.Module], list[nn.Module]]:
    """The GPT ``init_gradients`` measures, for initialization number ``seed``: ``(model, its
    feed-forward modules in depth order, the stream-independent branches (post+cross; else []))``.

    Xavier init and the theory's inputs: token embeddings N(0, 1) (Vaswani et al.'s N(0, 1/d)
    embedding times sqrt(d)), position embeddings N(0, 1/2), and an output layer N(0, 1/d) of its own.
    (With the lab's tied embedding the logits at initialization favour repeating the input character,
    and the gradient then depends on how often the text does that: on Python source it hides Pre-LN's
    1/sqrt(L).) ``variant``: ``post``, ``pre`` or ``post+cross`` (Post-LN plus a stream-independent
    sublayer per layer, ``_WithMemory``)."""
    from resnorm.models import GPT, GPTConfig

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    placement = "post" if variant.startswith("post") else "pre"
    torch.manual_seed(10_000 + seed)
    model = GPT(
        GPTConfig(
            vocab_size=data.vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=n_head,
            d_model=d_model,
            norm="layernorm",
            placement=placement,
            init="xavier",
            fused=False,
        )
    )
    nn.init.normal_(model.token_embedding.weight, std=1.0)
    nn.init.normal_(model.position_embedding.weight, std=0.5**0.5)
    model.lm_head.weight = nn.Parameter(torch.randn(data.vocab_size, d_model) * d_model**-0.5)
    memories: list[nn.Module] = []
    if variant == "post+cross":
        model.blocks = nn.ModuleList([_WithMemory(b, d_model) for b in model.blocks])
        memories = [b.cross.branch for b in model.blocks]
    ffns = [(b.block if isinstance(b, _WithMemory) else b).feedforward.branch for b in model.blocks]
    return model, ffns, memories


def init_gradients(
    data,
    variant: str,
    n_layer: int,
    *,
    d_model: int = 128,
    n_head: int = 4,
    batches: int = 8,
    seeds: int = 2,
    batch_size: int = 16,
    block_size: int = 64,
) -> dict[str, list[float]]:
    """Xiong et al.'s statistic at initialization: per layer, ``||mean_k dL_k/dW||_F`` (the element-wise
    mean of the gradient over ``batches`` mini-batches of the text ``data``, then the Frobenius norm)
    for the FFN's first (``W1``) and second (``W2``) matrix, and ``W2_batch``: ``mean_k ||dL_k/dW2||_F``
    (each mini-batch's gradient norm, then the mean), geometric means over ``seeds`` initializations
    of ``build_model(data, variant, n_layer, ...)``. Mini-batch ``k`` of initialization ``s`` is
    ``data.batch(batch_size, block_size, generator_for(s, counter=k, stream=7))``."""
    from resnorm.data import generator_for

    logs = {key: torch.zeros(n_layer, dtype=torch.float64) for key in ("W1", "W2", "W2_batch")}
    for seed in range(seeds):
        model, ffns, memories = build_model(
            data, variant, n_layer, d_model=d_model, n_head=n_head, seed=seed, block_size=block_size
        )
        sums = {
            "W1": [torch.zeros_like(f.fc.weight) for f in ffns],
            "W2": [torch.zeros_like(f.proj.weight) for f in ffns],
        }
        batch_norms = torch.zeros(n_layer, dtype=torch.float64)
        for k in range(batches):
            gen = generator_for(seed, counter=k, stream=7)
            x, y = data.batch(batch_size, block_size, gen)
            if memories:
                summary = torch.randn(batch_size, 1, d_model, generator=gen)  # unit-variance memory summary
                for m in memories:
                    m.memory = summary
            model.zero_grad(set_to_none=True)
            logits = model(x)
            nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
            for i, f in enumerate(ffns):
                sums["W1"][i] += f.fc.weight.grad
                sums["W2"][i] += f.proj.weight.grad
                batch_norms[i] += float(f.proj.weight.grad.norm()) / batches
        for key in ("W1", "W2"):
            logs[key] += torch.tensor(
                [float((s / batches).norm()) for s in sums[key]], dtype=torch.float64
            ).log()
        logs["W2_batch"] += batch_norms.log()
    return {key: (v / seeds).exp().tolist() for key, v in logs.items()}
