"""One training step of a Hugging Face causal LM: unpatched, with ``apply_resnorm``, with Liger's norm patch.

A model of one ``transformers`` family (default: a small Llama) is built from a config (no download),
copied three times with the same weights and patched three ways:

- ``hf``: the model as ``transformers`` writes it (its own RMSNorm modules, explicit residual adds);
- ``resnorm``: ``apply_resnorm(model)`` — every norm a resnorm module, every residual add that a norm
  reads next fused into it (``fuse_residual=False`` as ``resnorm-unfused`` with ``--unfused``);
- ``liger``: Liger Kernel's RMSNorm patch on the same instance (``rms_norm=True``, every other Liger
  kernel off, so that the norms are all that differ), when ``liger_kernel`` imports (CUDA only).

The script first checks that the three give the same loss, then times training steps (forward,
backward, AdamW) in interleaved rounds (ABC, then CBA: what one variant gains from a warm cache or a
quiet moment the others gain next) and reports per variant: median step time, tokens per second,
the ratio to ``hf`` (median of the per-round ratios) and the peak memory of one step above what was
in use before it (``resnorm.lab.memory.StepMemory``: the activations, gradients and temporaries).
On CUDA the models train in fp32 under bf16 autocast, the usual mixed-precision recipe; on CPU in fp32
with one intra-op thread.

    PYTHONPATH=src .venv/bin/python benchmarks/hf_step.py --markdown benchmarks/results/hf-step-cpu.md
    python benchmarks/hf_step.py --n-layer 16 --d-model 2048 --n-head 16 --batch 8 --seq 2048 \\
        --json benchmarks/results/hf-step-NVIDIA-H100.json \\
        --markdown benchmarks/results/hf-step-NVIDIA-H100.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def build(args: argparse.Namespace) -> torch.nn.Module:
    from resnorm.integrations.transformers import causal_lm_from_config

    torch.manual_seed(args.seed)
    return causal_lm_from_config(args.model_type, vocab_size=args.vocab, n_layer=args.n_layer,
                                 n_head=args.n_head, n_kv_head=args.n_kv_head, d_model=args.d_model,
                                 block_size=args.seq)


def variants(base: torch.nn.Module, args: argparse.Namespace,
             device: torch.device) -> dict[str, torch.nn.Module]:
    from resnorm.integrations.transformers import apply_resnorm

    out = {"hf": copy.deepcopy(base), "resnorm": apply_resnorm(copy.deepcopy(base))}
    if args.unfused:
        out["resnorm-unfused"] = apply_resnorm(copy.deepcopy(base), fuse_residual=False)
    if device.type == "cuda":
        try:
            import liger_kernel.transformers as liger
        except ImportError:
            print("liger_kernel is not installed: no liger variant")
        else:
            model = copy.deepcopy(base)
            patch = getattr(liger, f"apply_liger_kernel_to_{args.model_type}")
            patch(rope=False, cross_entropy=False, fused_linear_cross_entropy=False, rms_norm=True,
                  swiglu=False, model=model)
            out["liger"] = model
    return {name: model.to(device).train() for name, model in out.items()}


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step() -> None:
        loss = loss_of(model, x, y, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def run(args: argparse.Namespace) -> dict:
    from resnorm.lab.memory import StepMemory

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    models = variants(build(args), args, device)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to(device)
    y = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to(device)
    with torch.no_grad():  # the same weights: the same loss (bf16 autocast: within its rounding)
        losses = {name: loss_of(m, x, y, device).item() for name, m in models.items()}
    rtol = 1e-5 if device.type == "cpu" else 2e-2
    for name, value in losses.items():
        if not math.isclose(value, losses["hf"], rel_tol=rtol):
            raise SystemExit(f"{name}: loss {value} != hf's {losses['hf']}: not the same model")
    steps = {name: make_step(m, x, y, device) for name, m in models.items()}
    memory = {}
    for name, step in steps.items():
        for _ in range(args.warmup):
            step()
        with StepMemory(device) as mem:
            step()
        memory[name] = mem.peak_mib
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        this = {n: timed(steps[n], args.steps, device) for n in order}
        for n in names:
            times[n].append(this[n])
            ratios[n].append(this[n] / this["hf"])
    tokens = args.batch * args.seq
    rows = []
    for n in names:
        ms = 1e3 * statistics.median(times[n])
        rows.append(dict(variant=n, ms=ms, tokens_per_s=tokens / (ms / 1e3),
                         ratio=statistics.median(ratios[n]),
                         ratio_q=statistics.quantiles(ratios[n], n=4) if args.rounds > 3 else None,
                         peak_mib=memory[n], loss=losses[n]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    return dict(device=name, model_type=args.model_type, n_layer=args.n_layer, d_model=args.d_model,
                n_head=args.n_head, n_kv_head=args.n_kv_head or args.n_head, vocab=args.vocab,
                batch=args.batch,
                seq=args.seq, rounds=args.rounds, steps=args.steps, torch=torch.__version__,
                transformers=__import__("transformers").__version__,
                precision="bf16 autocast" if device.type == "cuda" else f"fp32, {args.threads} thread(s)",
                rows=rows)


def markdown(result: dict, note: str) -> str:
    r = result
    lines = [
        f"# One training step of a Hugging Face {r['model_type']}: unpatched vs resnorm vs Liger "
        f"({r['device']})",
        "",
        f"`benchmarks/hf_step.py`: {r['model_type']}, {r['n_layer']} layers, d_model {r['d_model']}, "
        f"{r['n_head']} heads ({r['n_kv_head']} key/value), vocab {r['vocab']}, batch {r['batch']} x "
        f"{r['seq']} tokens; {r['precision']}; AdamW; same weights and loss in every variant; interleaved "
        f"rounds. torch {r['torch']}, transformers {r['transformers']}.",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += ["| variant | ms/step | tokens/s | / hf (median of rounds) | quartiles "
              "| peak step memory (MiB) |",
              "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        q = f"{row['ratio_q'][0]:.3f} – {row['ratio_q'][2]:.3f}" if row["ratio_q"] else "–"
        mem = f"{row['peak_mib']:.1f}" if row["peak_mib"] is not None else "–"
        lines.append(f"| {row['variant']} | {row['ms']:.2f} | {row['tokens_per_s']:,.0f} | "
                     f"{row['ratio']:.3f} | {q} | {mem} |")
    lines += ["", f"{r['rounds']} rounds of {r['steps']} steps per variant."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="llama")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-kv-head", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads on CPU")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    parser.add_argument("--unfused", action="store_true", help="also apply_resnorm(fuse_residual=False)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    result = run(args)
    for row in result["rows"]:
        print(f"{row['variant']:16s} {row['ms']:9.2f} ms/step  {row['tokens_per_s']:12,.0f} tok/s  "
              f"x{row['ratio']:.3f} of hf  peak {row['peak_mib']:.1f} MiB", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.write_text(markdown(result, args.note), encoding="utf-8")


if __name__ == "__main__":
    main()
