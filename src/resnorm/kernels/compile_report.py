"""Compile the kernels for a CUDA target without a GPU and report their resources.

``python -m resnorm.kernels.compile_report [--arch 90]`` runs Triton's full compiler (down to
ptxas, bundled with Triton) for the launch configurations of the benchmark shapes and prints, per
variant: registers per thread, spilled bytes, shared memory, and the widest global load/store in the
PTX (``v4.b32`` = 16-byte accesses). It catches front-end errors in the compiled path (which the CPU
tests, running the interpreter, cannot see) and answers "are the accesses 16 bytes wide, does
anything spill" before any GPU time is spent.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from resnorm.kernels import launch, triton_kernels

_TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass
class Variant:
    name: str
    kernel: object
    signature: dict
    constexprs: dict
    num_warps: int
    options: dict = field(default_factory=dict)


def _ptr(dtype: torch.dtype) -> str:
    return "*" + _TRITON_TYPES[dtype]


def forward_variant(m: int, n: int, dtype: torch.dtype, kind: str, device: torch.device) -> Variant:
    cfg = launch.forward_config(m, n, device)
    p, f32 = _ptr(dtype), "*fp32"
    sig = {"X": p, "R": p, "W": p, "B": p, "RS": f32, "Y": p, "RO": p, "Mean": f32, "Rstd": f32, "Seed": "*i64",
           "stride_x": "i32", "stride_r": "i32", "stride_w": "constexpr", "stride_b": "constexpr",
           "stride_rs": "constexpr", "stride_y": "i32", "stride_ro": "i32",
           "M": "i32", "N": "i32", "eps": "fp32", "dropout_p": "fp32", "dropout_scale": "fp32",
           "weight_offset": "fp32"}
    # contiguous weight / bias / rowscale: Triton specializes a stride of 1 into the code, as here
    const = dict(stride_w=1, stride_b=1, stride_rs=1, IS_RMS=kind == "rms", HAS_RESIDUAL=True, HAS_WEIGHT=True,
                 HAS_BIAS=kind == "layer", HAS_ROWSCALE=False, HAS_WEIGHT_OFFSET=False, HAS_DROPOUT=False,
                 STORE_RESIDUAL=True, CHECK_OVERFLOW=dtype == torch.float16, LLAMA_CAST=False,
                 BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SINGLE_BLOCK=cfg.single_block, SOFT_BF16=False)
    sig.update({k: "constexpr" for k in const})
    return Variant(f"fwd {kind} {m}x{n} bm={cfg.block_m} bn={cfg.block_n} w={cfg.num_warps}",
                   triton_kernels.add_norm_fwd_kernel, sig, const, cfg.num_warps)


def backward_variant(m: int, n: int, dtype: torch.dtype, kind: str, device: torch.device) -> Variant:
    cfg = launch.backward_config(m, n, device)
    p, f32 = _ptr(dtype), "*fp32"
    sig = {"DY": p, "DRO": p, "RO": p, "X": p, "R": p, "W": p, "RS": f32, "Mean": f32, "Rstd": f32, "Shift": f32,
           "C1": f32, "C2": f32, "Seed": "*i64", "DX": p, "DR": p, "DW_part": f32, "DB_part": f32, "DRS_part": f32,
           "stride_dy": "i32", "stride_dro": "i32", "stride_ro": "i32", "stride_x": "i32", "stride_r": "i32",
           "stride_w": "constexpr", "stride_rs": "constexpr", "stride_dx": "i32", "stride_dr": "i32",
           "M": "i32", "N": "i32", "eps": "fp32", "dropout_p": "fp32", "dropout_scale": "fp32",
           "weight_offset": "fp32"}
    # fp16: the stored sum may overflow; the backward then reads x and residual on the flagged rows
    const = dict(stride_w=1, stride_rs=1, CHECK_OVERFLOW=dtype == torch.float16, HAS_RESIDUAL=True,
                 IS_RMS=kind == "rms", HAS_DRO=True, HAS_WEIGHT=True, HAS_ROWSCALE=False,
                 HAS_WEIGHT_OFFSET=False, HAS_DROPOUT=False, STORE_DR=False, COMPUTE_DW=True, COMPUTE_DB=kind == "layer",
                 COMPUTE_DRS=False, RECOMPUTE_STATS=dtype != torch.float32, LLAMA_CAST=False,
                 BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SINGLE_BLOCK=cfg.single_block, SOFT_BF16=False)
    sig.update({k: "constexpr" for k in const})
    return Variant(f"bwd {kind} {m}x{n} bm={cfg.block_m} bn={cfg.block_n} w={cfg.num_warps} "
                   f"grid={cfg.groups}x{cfg.col_blocks}", triton_kernels.add_norm_bwd_kernel, sig, const,
                   cfg.num_warps)


def row_terms_variant(n: int, dtype: torch.dtype, kind: str) -> Variant:
    p, f32 = _ptr(dtype), "*fp32"
    sig = {"DY": p, "RO": p, "W": p, "Mean": f32, "Rstd": f32, "ShiftOut": f32, "MeanOut": f32, "RstdOut": f32,
           "C1": f32, "C2": f32, "X": p, "R": p, "RS": f32, "Seed": "*i64", "stride_dy": "i32", "stride_ro": "i32",
           "stride_w": "constexpr", "stride_x": "i32", "stride_r": "i32", "stride_rs": "constexpr", "M": "i32",
           "N": "i32", "eps": "fp32", "weight_offset": "fp32", "dropout_p": "fp32", "dropout_scale": "fp32"}
    const = dict(stride_w=1, stride_rs=1, IS_RMS=kind == "rms", HAS_WEIGHT=True, HAS_WEIGHT_OFFSET=True,
                 RECOMPUTE_STATS=True, CHECK_OVERFLOW=dtype == torch.float16, HAS_RESIDUAL=True,
                 HAS_ROWSCALE=False, HAS_DROPOUT=False, BLOCK_N=launch.TUNING.wide_bwd_block_n)
    sig.update({k: "constexpr" for k in const})
    return Variant(f"bwd row terms {kind} n={n}", triton_kernels.add_norm_bwd_row_terms_kernel, sig, const, 8)


def sum_partials_variant(dtype: torch.dtype) -> Variant:
    sig = {"Part": "*fp32", "Out": _ptr(dtype), "G": "i32", "N": "i32", "BLOCK_N": "constexpr",
           "SOFT_BF16": "constexpr"}
    return Variant("sum partials", triton_kernels.sum_partials_kernel, sig, dict(BLOCK_N=1024, SOFT_BF16=False), 4)


def with_dropout(v: Variant) -> Variant:
    const = dict(v.constexprs, HAS_DROPOUT=True)
    if "STORE_DR" in const:
        const["STORE_DR"] = True
    return Variant(v.name.replace(" ", " dropout ", 1), v.kernel, v.signature, const, v.num_warps)


def with_rowscale_and_llama(v: Variant) -> Variant:
    """rowscale (with its gradient), the llama cast, a weight offset and, in the backward, a strided weight."""
    const = dict(v.constexprs, HAS_ROWSCALE=True, LLAMA_CAST=True, HAS_WEIGHT_OFFSET=True)
    sig = dict(v.signature)
    if "STORE_DR" in const:
        const.update(STORE_DR=True, COMPUTE_DRS=True)
        del const["stride_w"]
        sig["stride_w"] = "i32"
    options = {} if "STORE_DR" in const else {"enable_fp_fusion": False}  # as launch.forward with a rowscale
    return Variant(v.name.replace(" ", " rowscale llama offset ", 1), v.kernel, sig, const, v.num_warps, options)


def variants(shapes, kinds=("rms", "layer"), dtype=torch.bfloat16, sm_count: int = 132,
             extras: bool = True) -> Iterator[Variant]:
    """The benchmark's launch configurations (assuming ``sm_count`` SMs), plus dropout, the wide-row
    statistics kernel, the fp16 backward (overflowed rows recomputed) and the partial-sum kernel when
    ``extras``."""
    device = torch.device("cuda", 0)
    original = launch._programs_budget
    launch._programs_budget = lambda _device: sm_count  # no GPU here: assume an H100's 132 SMs
    try:
        for m, n in shapes:
            for kind in kinds:
                yield forward_variant(m, n, dtype, kind, device)
                yield backward_variant(m, n, dtype, kind, device)
        if extras:
            m, n = shapes[0]
            yield with_dropout(forward_variant(m, n, dtype, "layer", device))
            yield with_dropout(backward_variant(m, n, dtype, "layer", device))
            yield with_rowscale_and_llama(forward_variant(m, n, dtype, "rms", device))
            yield with_rowscale_and_llama(backward_variant(m, n, dtype, "rms", device))
            yield row_terms_variant(65536, dtype, "layer")
            yield row_terms_variant(65536, dtype, "rms")
            if dtype != torch.float16:  # an fp16 stream: the backward's overflow recompute is compiled in
                v = backward_variant(m, n, torch.float16, "layer", device)
                yield Variant(v.name.replace(" ", " fp16 ", 1), v.kernel, v.signature, v.constexprs, v.num_warps)
                v = row_terms_variant(65536, torch.float16, "layer")
                yield Variant(v.name + " fp16", v.kernel, v.signature, v.constexprs, v.num_warps)
            yield sum_partials_variant(dtype)
    finally:
        launch._programs_budget = original


def compile_variant(v: Variant, arch: int = 90) -> dict:
    """Compile one variant for ``sm_<arch>``; returns registers, spills, shared memory, access widths."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    divisible = [k for k, t in v.signature.items() if t.startswith("*") or k.startswith("stride") or k == "N"]
    attrs = {(list(v.signature).index(k),): [["tt.divisibility", 16]] for k in divisible}
    src = ASTSource(fn=v.kernel, signature=v.signature, constexprs=v.constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": v.num_warps, **v.options})
    ptx = compiled.asm["ptx"]
    widths = {w for w in re.findall(r"ld\.global(?:\.\w+)*\.(v\d)\.b\d+", ptx)}
    store_widths = {w for w in re.findall(r"st\.global(?:\.\w+)*\.(v\d)\.b\d+", ptx)}
    usage = _resource_usage(compiled.asm["cubin"])
    return {"name": v.name, "registers": usage.get("REG"), "stack": usage.get("STACK"), "local": usage.get("LOCAL"),
            "shared": getattr(compiled.metadata, "shared", None), "load_vectors": sorted(widths),
            "store_vectors": sorted(store_widths)}


def _resource_usage(cubin: bytes) -> dict:
    """REG / STACK / LOCAL / SHARED of the kernel in a cubin, from Triton's bundled cuobjdump."""
    import os
    import subprocess
    import tempfile

    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    match = re.search(r"Function \w+:\s*(.*)", out)
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", match[1])} if match else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--shapes", default="65536x1024,16384x4096,16384x5120,8192x8192,4096x16384,1024x65536")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    failed = 0
    for v in variants(shapes):
        try:
            r = compile_variant(v, args.arch)
        except Exception as exc:  # report every variant, then fail
            failed += 1
            print(f"{v.name}: FAILED {type(exc).__name__}: {exc}")
            continue
        print(f"{r['name']}: regs {r['registers']} stack {r['stack']} local {r['local']} smem {r['shared']} "
              f"ld {','.join(r['load_vectors']) or 'scalar'} st {','.join(r['store_vectors']) or 'scalar'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
