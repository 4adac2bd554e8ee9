"""``resnorm bench``: fused add+norm throughput against eager PyTorch, torch.compile and peers.

One run measures the device's copy bandwidth (a large device-to-device copy, bytes read + written),
then for each shape, op and implementation the median time (``triton.testing.do_bench``) of the
forward and of forward+backward in the pre-norm setting (``y`` and the new residual both returned
and both receiving gradients), checks each implementation against resnorm's output in the same run,
and reports GB/s from the minimal-bytes model of docs/kernels.md::

    forward          4 * M * N * e   (read x, residual; write y, residual_out)
    forward+backward 8 * M * N * e   (+ read dy, d_residual_out, residual_out; write dx = d_residual)

Results go to ``benchmarks/results/<gpu-name>.json`` and ``.md`` (or ``--out``).

resnorm is measured through its public API (``resnorm.add_norm`` under ``resnorm.use_backend("triton")``);
only ``--tune`` reaches into the kernels' launch settings (``resnorm.kernels.launch``), which the lab,
above the kernels in resnorm's layering, may import. ``resnorm bench`` and ``benchmarks/add_norm.py``
run ``main``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

OPS = ("add_rmsnorm", "add_layernorm")
IMPLS = ("resnorm", "eager", "compile", "liger", "flashattn")
DEFAULT_SHAPES = ((65536, 1024), (16384, 4096), (16384, 5120), (8192, 8192), (4096, 16384), (1024, 65536),
                  (256, 262144))
DEFAULT_OUT = Path("benchmarks/results")
EPS = 1e-6
# bf16 agreement with resnorm's y, residual_out and gradients (max abs error; values are O(1))
CHECK_ATOL = 0.125


# ----------------------------------------------------------------------------------------------
# pure parts: byte model, rows, arguments, reports


def bytes_moved(m: int, n: int, elem_size: int, kind: str) -> int:
    """Minimal bytes of add+norm with prenorm: 4·M·N·e forward, 8·M·N·e forward+backward."""
    if kind not in ("fwd", "fwdbwd"):
        raise ValueError(f"kind must be 'fwd' or 'fwdbwd'; got {kind!r}")
    return (4 if kind == "fwd" else 8) * m * n * elem_size


def gbps(nbytes: float, ms: float) -> float:
    """Throughput in GB/s (10^9 bytes per second) of ``nbytes`` moved in ``ms`` milliseconds."""
    return nbytes / (ms * 1e-3) / 1e9


def make_row(op: str, impl: str, m: int, n: int, fwd_ms: float | None, fwdbwd_ms: float | None,
             peak_mem_mb: float | None, dtype: torch.dtype = torch.bfloat16) -> dict:
    """One result row in the JSON schema; a time of None (not run or failed) gives GB/s None."""
    e = torch.empty((), dtype=dtype).element_size()
    return {
        "op": op, "impl": impl, "M": m, "N": n, "dtype": str(dtype).removeprefix("torch."),
        "fwd_ms": fwd_ms, "fwdbwd_ms": fwdbwd_ms,
        "fwd_GBps": gbps(bytes_moved(m, n, e, "fwd"), fwd_ms) if fwd_ms else None,
        "fwdbwd_GBps": gbps(bytes_moved(m, n, e, "fwdbwd"), fwdbwd_ms) if fwdbwd_ms else None,
        "peak_mem_MB": peak_mem_mb,
    }


def _shape_list(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", item)
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise argparse.ArgumentTypeError(f"shapes must look like 'MxN,MxN' with M, N >= 1; got {item!r}")
        shapes.append((int(match[1]), int(match[2])))
    return shapes


def _choice_list(allowed: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma list of {', '.join(allowed)}; got {text!r}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    from resnorm.lab.errors import CommandLineParser

    p = CommandLineParser(prog="resnorm bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=_shape_list, default=list(DEFAULT_SHAPES), metavar="MxN,...",
                   help="comma list of row x column shapes, bf16 (default: the 7 shapes of docs/kernels.md, "
                   "65536x1024 ... 256x262144)")
    p.add_argument("--ops", type=_choice_list(OPS, "--ops"), default=list(OPS), metavar="OP,...",
                   help=f"which fused ops to time, comma list of {', '.join(OPS)} (default: both)")
    p.add_argument("--impls", type=_choice_list(IMPLS, "--impls"), default=list(IMPLS), metavar="IMPL,...",
                   help=f"implementations to compare, comma list of {', '.join(IMPLS)} (default: all; one "
                   "that does not import is skipped)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for <gpu-name>.json and .md (default {DEFAULT_OUT})")
    p.add_argument("--warmup", type=float, default=10.0,
                   help="triton.testing.do_bench warm-up time per measurement, in ms (default 10)")
    p.add_argument("--rep", type=float, default=60.0,
                   help="triton.testing.do_bench repetition time per measurement, in ms (default 60)")
    p.add_argument("--tune", action="store_true",
                   help="instead of the comparison: time resnorm under alternative launch settings")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _file_stem(device_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", device_name).strip("_") or "gpu"


def _pct(value: float | None, copy: float) -> str:
    return f"{100 * value / copy:.0f}%" if value and copy else "—"


def format_markdown(result: dict) -> str:
    """The results as a markdown table: times, GB/s and % of the measured copy bandwidth."""
    copy = result["copy_GBps"]
    lines = [
        f"# add+norm benchmark on {result['device']}",
        "",
        f"torch {result['torch']}, triton {result['triton']}; device copy bandwidth {copy:.0f} GB/s "
        "(bytes read + written). Byte model: forward 4·M·N·e, forward+backward 8·M·N·e (prenorm).",
        "",
        "| op | impl | M×N | fwd ms | fwd GB/s | fwd % copy | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd % copy "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(v, fmt):
        return format(v, fmt) if v is not None else "—"

    for r in result["rows"]:
        lines.append(
            f"| {r['op']} | {r['impl']} | {r['M']}×{r['N']} | {num(r['fwd_ms'], '.4f')} | "
            f"{num(r['fwd_GBps'], '.0f')} | {_pct(r['fwd_GBps'], copy)} | {num(r['fwdbwd_ms'], '.4f')} | "
            f"{num(r['fwdbwd_GBps'], '.0f')} | {_pct(r['fwdbwd_GBps'], copy)} | "
            f"{num(r['peak_mem_MB'], '.0f')} |")
    checks = result.get("checks") or []
    if checks:
        lines += ["", "Correctness against resnorm (max abs difference of y, residual_out, gradients):", ""]
        for c in checks:
            lines.append(f"- {c['op']} {c['impl']} {c['M']}×{c['N']}: {c['max_abs_diff']:.3g} "
                         f"({'ok' if c['ok'] else 'MISMATCH'})")
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<gpu-name>.json`` and ``<gpu-name>.md`` under ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(result["device"])
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    from resnorm.lab.runfolder import encode_json

    json_path.write_text(encode_json(result, indent=1) + "\n")  # strict JSON: a NaN is written as null
    md_path.write_text(format_markdown(result))
    return json_path, md_path


# ----------------------------------------------------------------------------------------------
# implementations (each returns (y, residual_out) for bf16 x, residual, weight, bias)


def _resnorm_impl(kind: str):
    from resnorm import add_norm, use_backend

    def run(x, r, w, b):
        with use_backend("triton"):
            return add_norm(x, r, w, b, kind=kind, eps=EPS, prenorm=True)
    return run


def _eager_impl(kind: str):
    import torch.nn.functional as F

    def run(x, r, w, b):
        s = x + r
        if kind == "rms":
            return F.rms_norm(s, (s.shape[-1],), w, EPS), s
        return F.layer_norm(s, (s.shape[-1],), w, b, EPS), s
    return run


def _compile_impl(kind: str):
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 256))
    return torch.compile(_eager_impl(kind), dynamic=False)


def _liger_impl(kind: str):
    if kind != "rms":
        return None  # Liger has no fused add + LayerNorm
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction

    def run(x, r, w, b):
        # in_place=False: in-place would overwrite dy, which the timing loop reuses
        return LigerFusedAddRMSNormFunction.apply(x, r, w, EPS, 0.0, "llama", False)
    return run


def _flashattn_impl(kind: str):
    from flash_attn.ops.triton.layer_norm import layer_norm_fn

    def run(x, r, w, b):
        return layer_norm_fn(x, w, b if kind == "layer" else None, residual=r, eps=EPS, prenorm=True,
                             is_rms_norm=kind == "rms")
    return run


_FACTORIES = {"resnorm": _resnorm_impl, "eager": _eager_impl, "compile": _compile_impl,
              "liger": _liger_impl, "flashattn": _flashattn_impl}


def load_impl(name: str, kind: str):
    """The callable for ``name``, or None when it does not import or lacks this op."""
    try:
        return _FACTORIES[name](kind)
    except Exception as exc:  # a missing or broken peer is skipped, not fatal
        print(f"  {name}: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return None


# ----------------------------------------------------------------------------------------------
# measurement (CUDA; the device is a parameter so that the flow can be dry-run on CPU in tests)


def copy_bandwidth(do_bench, nbytes: int = 2 << 30, device: str = "cuda") -> float:
    """GB/s of a large device-to-device copy, counting bytes read + written."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return gbps(2 * nbytes, ms)


def _inputs(m: int, n: int, kind: str, requires_grad: bool, device: str):
    g = torch.Generator(device=device).manual_seed(m * 7919 + n)
    dt = torch.bfloat16

    def rand(*shape, scale=1.0, shift=0.0):
        t = torch.randn(*shape, device=device, generator=g) * scale + shift
        return t.to(dt).requires_grad_(requires_grad)

    x, r = rand(m, n), rand(m, n)
    w = rand(n, scale=0.1, shift=1.0)
    b = rand(n, scale=0.1) if kind == "layer" else None
    return x, r, w, b


def _fwd_bwd(fn, x, r, w, b, dy, ds):
    y, s = fn(x, r, w, b)
    torch.autograd.backward((y, s), (dy, ds))


def _outputs_and_grads(fn, m, n, kind, dy, ds):
    x, r, w, b = _inputs(m, n, kind, True, dy.device)
    y, s = fn(x, r, w, b)
    torch.autograd.backward((y, s), (dy, ds))
    leaves = [t for t in (x, r, w, b) if t is not None]
    return [y.detach(), s.detach()] + [t.grad for t in leaves]


def _max_abs_diff(a: list, b: list) -> float:
    worst = 0.0
    for u, v in zip(a, b, strict=True):
        # weight / bias gradients sum M rows: compare relative to their scale
        scale = max(1.0, v.float().abs().max().item()) if u.dim() == 1 else 1.0
        worst = max(worst, ((u.float() - v.float()).abs().max().item()) / scale)
    return worst


def bench_one(fn, m, n, kind, do_bench, warmup, rep,
              device: str = "cuda") -> tuple[float, float, float | None]:
    """(fwd_ms, fwdbwd_ms, peak_mem_MB) of one implementation at one shape; the peak is the memory
    allocated by one forward+backward above what its inputs and upstream gradients hold."""
    x, r, w, b = _inputs(m, n, kind, False, device)
    fwd_ms = do_bench(lambda: fn(x, r, w, b), warmup=warmup, rep=rep, return_mode="median")
    del x, r, w, b
    x, r, w, b = _inputs(m, n, kind, True, device)
    dy = torch.randn(m, n, device=device, dtype=torch.bfloat16)
    ds = torch.randn(m, n, device=device, dtype=torch.bfloat16)
    leaves = [t for t in (x, r, w, b) if t is not None]
    fwdbwd_ms = do_bench(lambda: _fwd_bwd(fn, x, r, w, b, dy, ds), warmup=warmup, rep=rep,
                         grad_to_none=leaves, return_mode="median")
    for t in leaves:
        t.grad = None
    if torch.device(device).type != "cuda":
        return fwd_ms, fwdbwd_ms, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _fwd_bwd(fn, x, r, w, b, dy, ds)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return fwd_ms, fwdbwd_ms, peak


def run_sweep(args: argparse.Namespace, device: str = "cuda", do_bench=None) -> dict:
    """The whole measurement: copy bandwidth, then every (op, shape, implementation)."""
    import triton

    if do_bench is None:
        from triton.testing import do_bench
    on_cuda = torch.device(device).type == "cuda"
    device_name = torch.cuda.get_device_name(device) if on_cuda else f"{device} (dry run)"
    copy = copy_bandwidth(do_bench, device=device) if on_cuda else copy_bandwidth(do_bench, 1 << 20, device)
    print(f"{device_name}: copy bandwidth {copy:.0f} GB/s (read + write)")
    rows, checks = [], []
    kinds = {"add_rmsnorm": "rms", "add_layernorm": "layer"}
    for op in args.ops:
        kind = kinds[op]
        impls = {name: load_impl(name, kind) for name in args.impls}
        reference = impls.get("resnorm") or _resnorm_impl(kind)
        for m, n in args.shapes:
            dy = torch.randn(m, n, device=device, dtype=torch.bfloat16)
            ds = torch.randn(m, n, device=device, dtype=torch.bfloat16)
            expected = _outputs_and_grads(reference, m, n, kind, dy, ds)
            for name, fn in impls.items():
                if fn is None:
                    continue
                try:
                    if name != "resnorm":
                        diff = _max_abs_diff(_outputs_and_grads(fn, m, n, kind, dy, ds), expected)
                        checks.append({"op": op, "impl": name, "M": m, "N": n, "max_abs_diff": diff,
                                       "ok": bool(diff <= CHECK_ATOL)})
                    fwd_ms, fwdbwd_ms, peak = bench_one(fn, m, n, kind, do_bench, args.warmup, args.rep,
                                                        device)
                except Exception as exc:  # e.g. a peer's width limit or out of memory: record and go on
                    reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
                    print(f"  {op} {name} {m}x{n}: failed ({reason})")
                    if on_cuda:
                        torch.cuda.empty_cache()
                    rows.append(make_row(op, name, m, n, None, None, None))
                    continue
                row = make_row(op, name, m, n, fwd_ms, fwdbwd_ms, peak)
                rows.append(row)
                print(f"  {op:13s} {name:9s} {m:>6}x{n:<6} fwd {fwd_ms:.4f} ms "
                      f"{_pct(row['fwd_GBps'], copy):>4} | fwd+bwd {fwdbwd_ms:.4f} ms "
                      f"{_pct(row['fwdbwd_GBps'], copy):>4} | peak {peak or 0:.0f} MB", flush=True)
            del expected, dy, ds
            if on_cuda:
                torch.cuda.empty_cache()
    return {"device": device_name, "torch": torch.__version__, "triton": triton.__version__,
            "copy_GBps": copy, "rows": rows, "checks": checks}


# ----------------------------------------------------------------------------------------------
# tuning: resnorm alone under alternative launch settings (resnorm.kernels.launch.GpuTuning)

TUNE_CANDIDATES = (
    {}, {"fwd_tile": 8192}, {"fwd_tile": 2048}, {"fwd_warp_elems": 256}, {"fwd_warp_elems": 1024},
    {"bwd_tile": 4096}, {"bwd_tile": 1024}, {"bwd_warp_elems": 256}, {"bwd_warp_elems": 1024},
    {"bwd_warps_per_sm": 32}, {"bwd_warps_per_sm": 8}, {"max_single_block_n_bwd": 8192},
    {"wide_fwd_programs_per_sm": 2}, {"wide_fwd_programs_per_sm": 0.5}, {"wide_fwd_programs_per_sm": 0.25},
    {"wide_fwd_block_n": 4096}, {"wide_fwd_warps": 8},
    {"wide_bwd_programs_per_sm": 8}, {"wide_bwd_programs_per_sm": 2}, {"wide_bwd_block_n": 8192},
)


def tune_candidates(m: int, n: int, device: str) -> list[dict]:
    """The candidates that give this shape a launch configuration of its own (default first)."""
    from resnorm.kernels import launch

    seen, chosen = set(), []
    for cand in TUNE_CANDIDATES:
        with launch.tuned(**cand):
            key = (launch.forward_config(m, n, torch.device(device)),
                   launch.backward_config(m, n, torch.device(device)))
        if key not in seen:
            seen.add(key)
            chosen.append(cand)
    return chosen


def run_tuning(args: argparse.Namespace, device: str = "cuda", do_bench=None) -> list[dict]:
    """Time resnorm (forward, forward+backward) for each shape under each distinct candidate."""
    from resnorm.kernels import launch

    if do_bench is None:
        from triton.testing import do_bench
    results = []
    kinds = {"add_rmsnorm": "rms", "add_layernorm": "layer"}
    for op in args.ops:
        fn = _resnorm_impl(kinds[op])
        for m, n in args.shapes:
            for cand in tune_candidates(m, n, device):
                with launch.tuned(**cand):
                    fwd_ms, fwdbwd_ms, _ = bench_one(fn, m, n, kinds[op], do_bench, args.warmup, args.rep,
                                                     device)
                results.append({"op": op, "M": m, "N": n, "tuning": cand, "fwd_ms": fwd_ms,
                                "fwdbwd_ms": fwdbwd_ms})
                print(f"  {op:13s} {m:>6}x{n:<6} {json.dumps(cand):40s} fwd {fwd_ms:.4f} ms | "
                      f"fwd+bwd {fwdbwd_ms:.4f} ms", flush=True)
            here = [r for r in results if (r["op"], r["M"], r["N"]) == (op, m, n)]
            best_f = min(here, key=lambda r: r["fwd_ms"])
            best_b = min(here, key=lambda r: r["fwdbwd_ms"])
            print(f"  best: fwd {json.dumps(best_f['tuning'])}, fwd+bwd {json.dumps(best_b['tuning'])}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``resnorm bench`` and ``benchmarks/add_norm.py``; returns the exit status."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("resnorm: error: bench: no CUDA device found; the benchmark needs an NVIDIA GPU "
              "(nothing was run)", file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("resnorm: error: bench: Triton is not installed; pip install 'resnorm[triton]'",
              file=sys.stderr)
        return 2
    if args.tune:
        import triton

        tuning = run_tuning(args)
        out = Path(args.out) / f"{_file_stem(torch.cuda.get_device_name())}-tuning.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                                   "rows": tuning}, indent=1) + "\n")
        print(f"wrote {out}")
        return 0
    result = run_sweep(args)
    json_path, md_path = write_results(result, args.out)
    print()
    print(format_markdown(result))
    print(f"wrote {json_path} and {md_path}")
    bad = [c for c in result["checks"] if not c["ok"]]
    if bad:
        print(f"warning: {len(bad)} implementation(s) disagree with resnorm beyond {CHECK_ATOL}",
              file=sys.stderr)
    if math.isnan(result["copy_GBps"]):  # the resnorm command's statuses: 0, 2, 130, 143
        print("resnorm: error: bench: the copy-bandwidth reference could not be measured (NaN); the "
              "percentages of it are missing", file=sys.stderr)
        return 2
    return 0
