"""resnorm.integrations.transformers on tiny models built from configs (no download), every family.

The reference is the unpatched transformers model itself (a deep copy of the same weights), and for
bf16 a float64 copy of it. Tolerances: fp32, 1e-5 relative (to the largest value of the reference);
bf16, the rule ``|patched - ref64| <= 2 * |unpatched - ref64| + atol`` elementwise with
``atol = 5e-2 * max|ref64|`` (the kernels tests' bf16 atol, scaled to the tensor, since gradients
here are far from unit size).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

import resnorm
import resnorm.functional as functional

transformers = pytest.importorskip("transformers")
rt = pytest.importorskip("resnorm.integrations.transformers")

# gemma3 (the multimodal model) has its own test; its text decoder is the gemma3_text family
FAMILIES = [m for m in rt.SUPPORTED_MODEL_TYPES if m != "gemma3"]
N_LAYER, VOCAB = 2, 100
HF_NORMS = {  # the class each family's code normalizes with (independent of the module under test)
    "llama": "LlamaRMSNorm", "mistral": "MistralRMSNorm", "qwen2": "Qwen2RMSNorm", "qwen3": "Qwen3RMSNorm",
    "phi3": "Phi3RMSNorm", "gemma": "GemmaRMSNorm", "gemma2": "Gemma2RMSNorm", "gemma3_text": "Gemma3RMSNorm",
    "olmo2": "Olmo2RMSNorm", "gpt2": "LayerNorm",
}
# residual adds followed by a norm in one forward of an L-layer model: every pre-norm sublayer's add
# (2 per layer, the last into the final norm); OLMo 2 normalizes only the branch, so only the last add
FUSED_ADDS = {m: (1 if m == "olmo2" else 2 * N_LAYER) for m in FAMILIES}


def tiny(model_type: str, seed: int = 0, **sizes) -> transformers.PreTrainedModel:
    """A 2-layer model with every parameter moved off its init (so that norm weights, Gemma's
    zero-centered ones included, are not all 1 or 0)."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, n_layer=N_LAYER, n_head=4, d_model=32, block_size=64)
    if model_type != "gpt2":
        kw["n_kv_head"] = 2  # grouped-query attention where the family has it
    kw.update(sizes)
    model = rt.causal_lm_from_config(model_type, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def ids_for(seed: int = 1, shape=(2, 7)) -> torch.Tensor:
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def assert_rel(actual, expected, rtol, what, floor=0.0):
    """max|actual - expected| <= rtol * max(max|expected|, floor)."""
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), floor)
    assert err <= rtol * scale + 1e-12, f"{what}: max error {err:.3g} > {rtol} * {scale:.3g}"


def assert_grads_close(model, ref, rtol, what="grad", every_parameter=True):
    """Every parameter's gradient, relative to its largest entry; gradients that are zero in exact
    arithmetic (attention's key bias: rounding noise in both models) are held to 1% of the model's
    largest gradient instead."""
    g, g_ref = grads(model), grads(ref)
    assert set(g) == set(g_ref)
    if every_parameter:
        assert set(g_ref) == {n for n, p in ref.named_parameters() if p.requires_grad}
    floor = 1e-2 * max(v.abs().max().item() for v in g_ref.values())
    for name in g_ref:
        assert_rel(g[name], g_ref[name], rtol, f"{what} of {name}", floor)


def assert_by_rule(patched, unpatched, ref64, what, atol_rel=5e-2):
    p, u, r = patched.double(), unpatched.double(), ref64.double()
    assert torch.isfinite(p).all(), f"{what}: non-finite"
    atol = atol_rel * r.abs().max().item()
    worst = ((p - r).abs() - (2 * (u - r).abs() + atol)).max().item()
    assert worst <= 0, f"{what}: |patched - ref64| exceeds 2|unpatched - ref64| + {atol:.3g} by {worst:.3g}"


class AddNormCalls:
    """Wraps resnorm.functional.add_norm and records (has residual, prenorm) for each call."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[bool, bool]] = []
        original = functional.add_norm

        def counting(x, residual=None, *args, **kwargs):
            self.calls.append((residual is not None, bool(kwargs.get("prenorm", False))))
            return original(x, residual, *args, **kwargs)

        monkeypatch.setattr(functional, "add_norm", counting)

    @property
    def fused(self) -> int:  # add_norm(..., residual, prenorm=True): a residual add fused into a norm
        return sum(1 for has_residual, prenorm in self.calls if has_residual and prenorm)


def loss_of(logits, ids):
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())


def grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------------------------
# import hygiene


def test_import_resnorm_does_not_import_transformers():
    """Neither the library nor the lab (its hf family registered) nor the CLI imports the optional
    frameworks: only resnorm.integrations.transformers and resnorm.keras do."""
    code = ("import sys, resnorm, resnorm.integrations, resnorm.integrations.hf_common, resnorm.nn, "
            "resnorm.functional, resnorm.lab, resnorm.lab.hf, resnorm.cli; "
            "resnorm.cli.build_parser(); "
            "found = [m for m in ('transformers', 'keras') if m in sys.modules]; "
            "assert not found, f'imported {found}'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_transformers_version_guard_names_the_supported_range():
    rt._check_transformers_version("5.3.0")
    rt._check_transformers_version("5.99.1.dev0")
    for bad in ("4.57.1", "5.2.0", "6.0.0"):
        with pytest.raises(ImportError, match=r"transformers>=5.3,<6"):
            rt._check_transformers_version(bad)


# ----------------------------------------------------------------------------------------------
# fp32: logits, loss, every gradient, hidden states, state_dict, the count of fused adds


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "norms-only"])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_matches_unpatched_fp32(model_type, fuse, monkeypatch):
    ref = tiny(model_type)
    model = copy.deepcopy(ref)
    before = {name: (id(p), p.detach().clone()) for name, p in model.named_parameters()}
    assert rt.apply_resnorm(model, fuse_residual=fuse) is model

    # every norm is resnorm's; the parameters are the very same objects, with the same names
    names = {type(m).__name__ for m in model.modules()}
    assert HF_NORMS[model_type] not in names
    assert names & {"ResnormRMSNorm", "ResnormLayerNorm"}
    assert {n: id(p) for n, p in model.named_parameters()} == {n: i for n, (i, _) in before.items()}
    sd, sd_ref = model.state_dict(), ref.state_dict()
    assert list(sd) == list(sd_ref)
    for key in sd_ref:
        assert torch.equal(sd[key], sd_ref[key]), key

    ids = ids_for()
    calls = AddNormCalls(monkeypatch)
    out = model(ids, output_hidden_states=True)
    monkeypatch.undo()
    assert calls.fused == (FUSED_ADDS[model_type] if fuse else 0)
    expected = ref(ids, output_hidden_states=True)
    assert_rel(out.logits, expected.logits, 1e-5, "logits")
    assert len(out.hidden_states) == len(expected.hidden_states) == N_LAYER + 1
    for i, (h, h_ref) in enumerate(zip(out.hidden_states, expected.hidden_states, strict=True)):
        assert isinstance(h, torch.Tensor), f"hidden_states[{i}] is a {type(h).__name__}"
        assert_rel(h, h_ref, 1e-5, f"hidden_states[{i}]")

    loss_of(out.logits, ids).backward()
    loss_of(expected.logits, ids).backward()
    assert_grads_close(model, ref, 1e-5)


def test_gpt2_cross_attention_fuses_its_add_too(monkeypatch):
    """GPT-2 built with cross-attention: ln_cross_attn reads the self-attention add and ln_2 the
    cross-attention add, so a layer fuses three adds when encoder_hidden_states are given."""
    ref = tiny("gpt2", add_cross_attention=True)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ids = ids_for()
    encoder = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    calls = AddNormCalls(monkeypatch)
    out = model(ids, encoder_hidden_states=encoder).logits
    monkeypatch.undo()
    assert calls.fused == 3 * N_LAYER
    expected = ref(ids, encoder_hidden_states=encoder).logits
    assert_rel(out, expected, 1e-5, "logits with cross-attention")
    assert_rel(model(ids).logits, ref(ids).logits, 1e-5, "logits without encoder states")
    loss_of(out, ids).backward()
    loss_of(expected, ids).backward()
    assert_grads_close(model, ref, 1e-5)


def test_fused_layer_output_is_a_residual_stream_and_materializes():
    model = rt.apply_resnorm(tiny("llama"))
    seen = []
    rt.decoder_layers(model)[0].register_forward_hook(lambda m, a, out: seen.append(out))
    ids = ids_for()
    hidden = model(ids, output_hidden_states=True).hidden_states
    (stream,) = seen
    assert isinstance(stream, rt.ResidualStream)
    assert stream.shape == hidden[1].shape and stream.dtype == hidden[1].dtype
    assert torch.equal(rt.materialize(stream), hidden[1])
    assert rt.materialize(hidden[0]) is hidden[0]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_bare_decoder_model_and_tied_embeddings(model_type, monkeypatch):
    """apply_resnorm on the bare decoder (LlamaModel / GPT2Model, no head): the final norm still takes
    the last add; on a causal LM with tied input and output embeddings the tie survives."""
    ref = tiny(model_type).base_model
    assert type(ref).__name__ in ("LlamaModel", "GPT2Model")
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ids = ids_for()
    calls = AddNormCalls(monkeypatch)
    out = model(ids, output_hidden_states=True)
    monkeypatch.undo()
    assert calls.fused == 2 * N_LAYER
    expected = ref(ids, output_hidden_states=True)
    assert_rel(out.last_hidden_state, expected.last_hidden_state, 1e-5, "last_hidden_state")
    for h, h_ref in zip(out.hidden_states, expected.hidden_states, strict=True):
        assert isinstance(h, torch.Tensor)
        assert_rel(h, h_ref, 1e-5, "hidden state")

    ref = tiny(model_type, tie_word_embeddings=True)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert list(model.state_dict()) == list(ref.state_dict())
    out, expected = model(ids).logits, ref(ids).logits
    assert_rel(out, expected, 1e-5, "tied logits")
    loss_of(out, ids).backward()
    loss_of(expected, ids).backward()
    assert_grads_close(model, ref, 1e-5, "tied grad")


def test_hidden_states_in_tuple_outputs_are_tensors():
    ref = tiny("qwen2")
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ids = ids_for()
    out = model.model(ids, output_hidden_states=True, return_dict=False)
    expected = ref.model(ids, output_hidden_states=True, return_dict=False)
    hidden, hidden_ref = out[-1], expected[-1]
    assert all(isinstance(h, torch.Tensor) for h in hidden)
    for h, h_ref in zip(hidden, hidden_ref, strict=True):
        assert torch.allclose(h, h_ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# bf16


@pytest.mark.parametrize("model_type", FAMILIES)
def test_bf16_autocast_by_tolerance_rule(model_type):
    ref = tiny(model_type)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ref64 = copy.deepcopy(ref).double()
    ids = ids_for()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, expected = model(ids).logits, ref(ids).logits
        loss_of(out, ids).backward()
        loss_of(expected, ids).backward()
    out64 = ref64(ids).logits
    loss_of(out64, ids).backward()
    assert_by_rule(out, expected, out64, "logits")
    g, g_ref, g64 = grads(model), grads(ref), grads(ref64)
    for name in g64:
        assert_by_rule(g[name], g_ref[name], g64[name], f"grad of {name}")


@pytest.mark.parametrize("model_type", FAMILIES)
def test_bf16_weights_norms_match_bit_for_bit(model_type):
    """A model cast to bf16 (a bf16 residual stream): with the norms swapped and the adds left alone,
    every casting rule (Llama's rounding before the weight, Gemma's 1 + w in fp32, OLMo 2's, GPT-2's
    LayerNorm) gives the unpatched model's logits exactly; with the adds fused, the fused norm reads
    the fp32 sum where the unpatched one reads it rounded to bf16: the tolerance rule."""
    ref = tiny(model_type)
    ref64 = copy.deepcopy(ref).double()
    ref16 = ref.to(torch.bfloat16)
    ids = ids_for()
    with torch.no_grad():
        expected = ref16(ids).logits
        norms_only = rt.apply_resnorm(copy.deepcopy(ref16), fuse_residual=False)(ids).logits
        fused = rt.apply_resnorm(copy.deepcopy(ref16))(ids).logits
        out64 = ref64(ids).logits
    assert norms_only.dtype == expected.dtype == torch.bfloat16
    assert torch.equal(norms_only, expected)
    assert_by_rule(fused, expected, out64, "fused logits")


# ----------------------------------------------------------------------------------------------
# the norm modules against the families' formulas, written here in float64


def _formula(kind: str, x: torch.Tensor, w: torch.Tensor, eps: float, b=None) -> torch.Tensor:
    """The family's norm in float64, the roundings it does marked by ``.to(dtype)``."""
    s = x.double()
    if kind == "layer":
        s = s - s.mean(-1, keepdim=True)
    n = s / torch.sqrt((s * s).mean(-1, keepdim=True) + eps)
    if kind == "llama":  # round the normalized value to the input's dtype, then the weight
        return w.double() * n.to(x.dtype).double()
    if kind == "gemma":
        return n * (1.0 + w.double())
    return n * w.double() + (b.double() if b is not None else 0.0)


@pytest.mark.parametrize("casting_mode", ["llama", "gemma", "fp32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_resnorm_rmsnorm_casting_modes(casting_mode, dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 5, 48, generator=g) * 3).to(dtype)
    residual = torch.randn(3, 5, 48, generator=g).to(dtype)
    norm = rt.ResnormRMSNorm(48, 1e-5, casting_mode=casting_mode, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48, generator=g) * 0.5)
    y = norm(x)
    assert y.dtype == dtype and list(norm.state_dict()) == ["weight"]
    expected = _formula(casting_mode, x, norm.weight, 1e-5)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_rel(y, expected, tol, f"{casting_mode} {dtype}")
    # the stream form: Norm(residual + x) and the sum, as the unpatched ``residual + x`` stores it
    y2, s = norm.normalize_stream(rt.ResidualStream(x, residual))
    assert torch.equal(s, residual + x)
    assert_rel(y2, _formula(casting_mode, (residual.double() + x.double()).to(dtype), norm.weight, 1e-5),
               tol, "fused")
    with pytest.raises(ValueError, match="casting_mode"):
        rt.ResnormRMSNorm(8, casting_mode="bf16")


def test_llama_norm_with_fp32_weight_on_bf16_input_returns_fp32_like_llama():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    hf = LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        hf.weight.normal_()
    ours = rt.ResnormRMSNorm.from_module(hf, eps=1e-6, casting_mode="llama")
    assert ours.weight is hf.weight and ours.variance_epsilon == 1e-6
    x = torch.randn(4, 16).to(torch.bfloat16)
    y, y_hf = ours(x), hf(x)
    assert y.dtype == y_hf.dtype == torch.float32
    assert torch.equal(y, y_hf)


def test_resnorm_layernorm_is_a_drop_in_for_torch_layernorm():
    ln = torch.nn.LayerNorm(24, eps=1e-5)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ours = rt.ResnormLayerNorm.from_module(ln)
    assert isinstance(ours, torch.nn.LayerNorm) and ours.weight is ln.weight and ours.bias is ln.bias
    x, residual = torch.randn(2, 3, 24), torch.randn(2, 3, 24)
    assert_rel(ours(x), _formula("layer", x, ln.weight, 1e-5, ln.bias), 1e-5, "layernorm")
    y, s = ours.normalize_stream(rt.ResidualStream(x, residual))
    assert torch.equal(s, residual + x)
    assert_rel(y, ln(residual + x), 1e-5, "fused layernorm")
    with pytest.raises(ValueError, match="last dimension"):
        rt.ResnormLayerNorm.from_module(torch.nn.LayerNorm((3, 4)))


# ----------------------------------------------------------------------------------------------
# generation, checkpoints, dropout, activation checkpointing


@pytest.mark.parametrize("model_type", FAMILIES)
def test_generate_with_kv_cache_gives_the_same_tokens(model_type):
    ref = tiny(model_type)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    prompt = ids_for(shape=(2, 5))
    kw = dict(max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(model.generate(prompt, **kw), ref.generate(prompt, **kw))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_save_pretrained_round_trip(model_type, tmp_path):
    model = rt.apply_resnorm(tiny(model_type))
    ids = ids_for()
    with torch.no_grad():
        logits = model(ids).logits
    model.save_pretrained(tmp_path)
    # nothing in it names resnorm (no auto_map, no custom class): transformers alone loads it
    for path in tmp_path.iterdir():
        assert b"resnorm" not in path.read_bytes().lower(), path.name
    # the checkpoint is the family's own: the unpatched class loads it with nothing missing
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded).__name__ == type(model).__name__
    assert not info["missing_keys"] and not info["unexpected_keys"]
    sd = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, sd[key]), key
    with torch.no_grad():
        assert_rel(loaded.eval()(ids).logits, logits, 1e-5, "the unpatched model from the checkpoint")
        assert torch.equal(rt.apply_resnorm(loaded)(ids).logits, logits)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_torch_save_whole_model_round_trip(model_type, monkeypatch):
    """``torch.save(model)`` / ``torch.load`` of a fused model (pickle): the loaded model is still fused
    (its layers found by name, even when this process never made their fused class) and still returns
    tensors as hidden states."""
    import io

    ref = tiny(model_type)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    monkeypatch.setattr(rt, "_FUSED_CLASSES", {})  # as in a fresh process
    loaded = torch.load(buffer, weights_only=False)
    ids = ids_for()
    calls = AddNormCalls(monkeypatch)
    out = loaded(ids, output_hidden_states=True)
    assert calls.fused == FUSED_ADDS[model_type]
    expected = ref(ids, output_hidden_states=True)
    assert_rel(out.logits, expected.logits, 1e-5, "logits after torch.load")
    for h, h_ref in zip(out.hidden_states, expected.hidden_states, strict=True):
        assert isinstance(h, torch.Tensor)
        assert_rel(h, h_ref, 1e-5, "hidden state after torch.load")


@pytest.mark.parametrize("model_type", ["phi3", "gpt2"])
def test_dropout_in_training_matches_unpatched(model_type):
    """Phi-3's residual dropouts and GPT-2's dropouts are called in the unpatched order: the same
    seed draws the same masks."""
    ref = tiny(model_type, dropout=0.2).train()
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ids = ids_for()
    torch.manual_seed(123)
    out = model(ids).logits
    torch.manual_seed(123)
    expected = ref(ids).logits
    torch.manual_seed(7)
    other = ref(ids).logits
    assert not torch.allclose(expected, other)  # the dropout is on
    assert_rel(out, expected, 1e-5, "train-mode logits")


def enable_checkpointing(model, kwargs=None):
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23's name
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "olmo2", "gpt2"])
def test_activation_checkpointing(model_type):
    ref = tiny(model_type).train()
    model = rt.apply_resnorm(copy.deepcopy(ref))
    enable_checkpointing(ref)
    enable_checkpointing(model)
    ids = ids_for()
    loss_of(model(ids).logits, ids).backward()
    loss_of(ref(ids).logits, ids).backward()
    assert_grads_close(model, ref, 1e-5)
    # reentrant checkpointing cannot carry the stream between layers: a clear error, not wrong grads
    enable_checkpointing(model, {"use_reentrant": True})
    with pytest.raises(ValueError, match="use_reentrant=False"):
        model(ids)
    norms_only = rt.apply_resnorm(copy.deepcopy(tiny(model_type)).train(), fuse_residual=False)
    enable_checkpointing(norms_only, {"use_reentrant": True})
    loss_of(norms_only(ids).logits, ids).backward()


# ----------------------------------------------------------------------------------------------
# torch.compile and the kernels


@pytest.mark.parametrize("model_type", FAMILIES)
def test_compile_fullgraph_traces_every_family(model_type):
    """fullgraph=True fails on any graph break, which Dynamo's trace decides whatever the backend:
    the "eager" backend checks every family, forward and backward, in ~1 s each. Inductor's CPU
    code generation takes ~25 s for one tiny model's forward (~50 s with the backward), so it runs
    on one family only, below."""
    ref = tiny(model_type)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ids = ids_for()
    torch._dynamo.reset()
    out = torch.compile(model, fullgraph=True, backend="eager")(ids).logits
    loss_of(out, ids).backward()
    expected = ref(ids).logits
    loss_of(expected, ids).backward()
    assert_rel(out, expected, 1e-5, "compiled logits")
    assert_grads_close(model, ref, 1e-5, "compiled grad")


@pytest.mark.slow
def test_compile_fullgraph_inductor_llama():
    """Inductor end to end on the Llama family (inference graph); the other families share its norm
    modules and fused forward, traced above."""
    ref = tiny("llama")
    model = rt.apply_resnorm(copy.deepcopy(ref))
    ids = ids_for()
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, fullgraph=True)(ids).logits
        assert_rel(out, ref(ids).logits, 1e-5, "inductor logits")


@pytest.mark.parametrize("model_type", FAMILIES)
def test_triton_kernels_through_the_interpreter(model_type, monkeypatch):
    """The kernel path on CPU (Triton's interpreter, 2 tiny layers), every family (each casting rule
    and norm placement, QK-norms over the head (Qwen 3, Gemma 3 on a transposed view) and over the
    whole projection (OLMo 2), Phi-3's residual dropouts): logits and gradients equal to the unpatched
    model's."""
    pytest.importorskip("triton")
    import resnorm.kernels as kernels

    ref = tiny(model_type, n_head=2, d_model=16, **({} if model_type == "gpt2" else {"n_kv_head": 1}))
    model = rt.apply_resnorm(copy.deepcopy(ref))
    launches = []
    original = kernels.add_norm
    monkeypatch.setattr(kernels, "add_norm", lambda *a, **k: launches.append(1) or original(*a, **k))
    ids = ids_for(shape=(1, 4))
    with resnorm.use_backend("triton"):
        out = model(ids).logits
        loss_of(out, ids).backward()
    expected = ref(ids).logits
    loss_of(expected, ids).backward()
    assert len(launches) > 0
    assert_rel(out, expected, 1e-5, "kernel logits")
    assert_grads_close(model, ref, 1e-4, "kernel grad")


@pytest.mark.parametrize("model_type", ["llama", "gemma"])
def test_triton_kernels_on_a_bf16_model(model_type, monkeypatch):
    """A model cast to bf16 through the kernels: Llama's rounding before the weight
    (casting_mode="llama") and Gemma's 1 + w on a bf16 stream, by the tolerance rule."""
    pytest.importorskip("triton")
    import resnorm.kernels as kernels

    ref = tiny(model_type, n_head=2, n_kv_head=1, d_model=16)
    ref64 = copy.deepcopy(ref).double()
    ref16 = ref.to(torch.bfloat16)
    model = rt.apply_resnorm(copy.deepcopy(ref16))
    launches = []
    original = kernels.add_norm
    monkeypatch.setattr(kernels, "add_norm", lambda *a, **k: launches.append(k.get("casting_mode")) or
                        original(*a, **k))
    ids = ids_for(shape=(1, 4))
    with torch.no_grad():
        with resnorm.use_backend("triton"):
            out = model(ids).logits
        expected, out64 = ref16(ids).logits, ref64(ids).logits
    assert launches and set(launches) == {"llama" if model_type == "llama" else "gemma"}
    assert_by_rule(out, expected, out64, "kernel bf16 logits")


# ----------------------------------------------------------------------------------------------
# Gemma 3 multimodal: the text decoder


def test_gemma3_multimodal_text_decoder(monkeypatch):
    torch.manual_seed(0)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=N_LAYER,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
                max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=16, patch_size=4)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                       image_token_index=99, boi_token_index=97, eoi_token_index=98)
    ref = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = rt.apply_resnorm(copy.deepcopy(ref))
    assert "Gemma3RMSNorm" not in {type(m).__name__ for m in model.modules()}
    ids = torch.randint(1, 90, (1, 10), generator=torch.Generator().manual_seed(0))
    ids[0, 2:6] = 99  # the image's 4 soft tokens
    inputs = dict(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16),
                  token_type_ids=(ids == 99).long())
    calls = AddNormCalls(monkeypatch)
    out = model(**inputs).logits
    monkeypatch.undo()
    assert calls.fused == 2 * N_LAYER
    expected = ref(**inputs).logits
    assert_rel(out, expected, 1e-5, "gemma3 logits")
    out.square().mean().backward()
    expected.square().mean().backward()
    assert_grads_close(model, ref, 1e-5, every_parameter=False)  # the vision pooling head is unused


# ----------------------------------------------------------------------------------------------
# errors and re-application


def _wrap_forward_on_instance(module):
    """What accelerate's add_hook_to_module does (device_map dispatch): the instance's forward becomes
    a wrapper that calls the forward the module had."""
    import functools

    module._old_forward = module.forward
    module.forward = functools.update_wrapper(
        functools.partial(lambda m, *a, **k: m._old_forward(*a, **k), module), module._old_forward)


def test_forward_wrapped_on_the_instance():
    """A wrapper on the decoder stack's forward: hidden states still come back as tensors. A wrapper on a
    decoder layer (before apply_resnorm) would keep calling the unfused forward, mixing a stream and a
    tensor: fusing is refused, naming the layer, and fuse_residual=False (norms only) works."""
    ref = tiny("llama")
    ids = ids_for()
    expected = ref(ids, output_hidden_states=True)

    model = copy.deepcopy(ref)
    _wrap_forward_on_instance(model.model)
    out = rt.apply_resnorm(model)(ids, output_hidden_states=True)
    assert_rel(out.logits, expected.logits, 1e-5, "logits")
    for h, h_ref in zip(out.hidden_states, expected.hidden_states, strict=True):
        assert isinstance(h, torch.Tensor), type(h).__name__
        assert_rel(h, h_ref, 1e-5, "hidden state")

    model = copy.deepcopy(ref)
    _wrap_forward_on_instance(model.model.layers[1])
    with pytest.raises(ValueError, match=r"model\.layers\.1 .*fuse_residual=False"):
        rt.apply_resnorm(model)
    assert type(model.model.layers[0]) is type(ref.model.layers[0])  # nothing changed
    assert type(model.model.norm) is type(ref.model.norm)
    assert_rel(rt.apply_resnorm(model, fuse_residual=False)(ids).logits, expected.logits, 1e-5, "norms only")

    model = rt.apply_resnorm(copy.deepcopy(ref))  # wrapped after fusing: applying again is a no-op
    _wrap_forward_on_instance(model.model.layers[1])
    assert_rel(rt.apply_resnorm(model)(ids).logits, expected.logits, 1e-5, "wrapped after fusing")


def test_unsupported_model_type_lists_the_supported_ones():
    config = transformers.GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32)
    model = transformers.GPTNeoXForCausalLM(config)
    with pytest.raises(ValueError, match="gpt_neox") as info:
        rt.apply_resnorm(model)
    for model_type in rt.SUPPORTED_MODEL_TYPES:
        assert model_type in str(info.value)
    with pytest.raises(ValueError, match="supported model types"):
        rt.causal_lm_from_config("bert", vocab_size=10)


def test_bad_arguments():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        rt.apply_resnorm(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="fuse_residual"):
        rt.apply_resnorm(tiny("llama"), fuse_residual="yes")


def test_apply_twice_is_a_no_op_and_unfusing_is_refused():
    ref = tiny("gemma2")
    model = rt.apply_resnorm(copy.deepcopy(ref), fuse_residual=False)
    rt.apply_resnorm(model)  # norms only -> fused: allowed
    layers_type = type(rt.decoder_layers(model)[0])
    rt.apply_resnorm(model)
    assert type(rt.decoder_layers(model)[0]) is layers_type
    assert type(rt.decoder_layers(model)[0]).__mro__[1].__name__ == "Gemma2DecoderLayer"
    ids = ids_for()
    assert_rel(model(ids).logits, ref(ids).logits, 1e-5, "logits after two applications")
    with pytest.raises(ValueError, match="already fused"):
        rt.apply_resnorm(model, fuse_residual=False)


# ----------------------------------------------------------------------------------------------
# building and probing models for the lab


@pytest.mark.parametrize("model_type", FAMILIES)
def test_causal_lm_from_config_maps_the_sizes(model_type):
    model = rt.causal_lm_from_config(model_type, vocab_size=37, n_layer=3, n_head=4, d_model=48, d_ff=80,
                                     block_size=32)
    c = model.config
    assert model.get_output_embeddings().weight.shape == (37, 48)
    if model_type == "gpt2":
        assert (c.n_layer, c.n_head, c.n_embd, c.n_inner, c.n_positions) == (3, 4, 48, 80, 32)
    else:
        assert (c.num_hidden_layers, c.num_attention_heads, c.hidden_size, c.intermediate_size,
                c.max_position_embeddings) == (3, 4, 48, 80, 32)
        assert c.num_key_value_heads == 4
        assert getattr(c, "head_dim", 12) == 12
    layers = rt.decoder_layers(model)
    assert len(layers) == 3 and len(rt.attention_modules(model)) == 3
    assert rt.fused_add_count(model_type, 3) == (1 if model_type == "olmo2" else 6)


def test_causal_lm_from_config_rejects_bad_sizes():
    with pytest.raises(TypeError, match="n_layer"):
        rt.causal_lm_from_config("llama", vocab_size=10, n_layer=2.0)
    with pytest.raises(ValueError, match="d_model"):
        rt.causal_lm_from_config("llama", vocab_size=10, n_head=3, d_model=32)
    with pytest.raises(ValueError, match="n_kv_head"):
        rt.causal_lm_from_config("llama", vocab_size=10, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="dropout"):
        rt.causal_lm_from_config("llama", vocab_size=10, dropout=1.0)
    with pytest.raises(ValueError, match="not_a_field"):
        rt.causal_lm_from_config("llama", vocab_size=10, not_a_field=1)
    model = rt.causal_lm_from_config("llama", vocab_size=10, rms_norm_eps=1e-3)  # a config field
    assert model.config.rms_norm_eps == 1e-3


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_probes_per_layer_activations_and_attention_probabilities(model_type):
    """What the lab's probes read: each decoder layer's output (materialized), equal to the
    model's hidden states, and with eager attention each layer's attention probabilities."""
    model = rt.apply_resnorm(rt.causal_lm_from_config(model_type, vocab_size=VOCAB, n_layer=2, n_head=2,
                                                      d_model=16, attn_implementation="eager"))
    acts, probs = [], []
    for layer in rt.decoder_layers(model):
        layer.register_forward_hook(lambda m, a, out: acts.append(rt.materialize(out)))
    for attn in rt.attention_modules(model):
        attn.register_forward_hook(lambda m, a, out: probs.append(out[1]))
    ids = ids_for(shape=(2, 6))
    hidden = model(ids, output_hidden_states=True).hidden_states
    assert len(acts) == len(probs) == 2
    assert torch.equal(acts[0], hidden[1])
    for p in probs:
        assert p.shape == (2, 2, 6, 6)
        assert torch.allclose(p.sum(-1), torch.ones(2, 2, 6))
        assert torch.all(p.triu(1) == 0)  # causal

