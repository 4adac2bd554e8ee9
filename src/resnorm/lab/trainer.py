"""One training loop for every model family: ``Trainer(config, out_dir, model=...)``, or ``train(...)``.

``Trainer`` is set up once, then stepped::

    trainer = Trainer(config, "runs/r1")      # or Trainer(config, out, model=my_module)
    trainer.setup()      # checks the run folder, loads the data, builds (or takes) the model
    while trainer.step():    # one optimizer step: logs, probes, evaluates and checkpoints on schedule
        ...
    result = trainer.finish()    # final evaluation, checkpoint, verdict, result.json

``trainer.fit()`` does all of it with Ctrl-C/SIGTERM handling; ``train(config, out_dir, ...)`` is
``Trainer(...).fit()``. ``evaluate(split)`` and ``save(reason)`` can be called in between. A model
passed in replaces the family's builder (``resnorm.lab.registry``); it should list its residual blocks
in ``model.blocks`` for the probes (without them the run trains unprobed). When the model has an
``after_optimizer_step()`` method, it is called (under ``torch.no_grad``) after every optimizer step.

The run folder's files are described in ``resnorm.lab.runfolder``. Nothing is created before
everything that can be checked has been: the folder's state, the checkpoint when resuming, the data
and the model. A run that fails before its first step removes what it wrote.

Determinism: the data order, augmentation and GPT batches are pure functions of ``(seed, step)``;
the checkpoint holds model, optimizer, step, loss history, probe summary and every RNG state, and the
learning rate is a pure function of the step, so ``resume=True`` continues exactly: on CPU a run
stopped after k steps and resumed writes the same metrics as an uninterrupted one. Resuming needs a
checkpoint (there is nothing to continue otherwise) and the config must match the run's own except for
``resnorm.lab.config.MUTABLE_ON_RESUME`` fields; a run already at its last step is left untouched.

Stopping: Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and ends with status
"interrupted" (``RunResult.stop_signal`` says which signal; a second signal stops at once, still
saving). A non-finite loss or gradient norm stops the run before the optimizer applies the step: status
"diverged" at that step, every metric kept, and the last good checkpoint left in place (a checkpoint is
never written from non-finite weights).

Speed and memory: ``result.json`` has ``step_time_s``, the median wall-clock time of this session's
training steps (batch, forward, backward, optimizer step; without the probe steps, evaluations and
checkpoints), and ``peak_memory_mib``, the peak tensor memory of one training step above what was in
use when it began (activations, gradients, temporaries; ``resnorm.lab.memory.StepMemory``: the CUDA
allocator's count on a GPU, a count of every new tensor storage on a CPU), measured on the first step
after the first one that probes nothing (when every later step probes: on the second step, the probe's
bookkeeping not counted on a CPU; None for a one-step run).

Probes (``resnorm.lab.probes``) record per-block gradient norms after the backward pass and *before*
gradient clipping, like the global norm that is logged.

Distributed: under ``torchrun --nproc_per_node=N`` the model is wrapped in DistributedDataParallel
(gloo on CPU, NCCL on GPU), each rank computes its contiguous shard of every global batch of
``batch_size`` (which must divide by N), and rank 0 alone logs and writes files. BatchNorm statistics
stay per rank (no SyncBatchNorm).
"""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnorm.lab import registry
from resnorm.lab.checkpoint import capture_rng, restore_rng, seed_everything
from resnorm.lab.config import TrainConfig, check_resume_compatible, validate
from resnorm.lab.distributed import DistContext, init_distributed
from resnorm.lab.errors import (
    ConfigError,
    NothingToResumeError,
    RunFolderError,
    RunFolderExistsError,
    StopRequested,
)
from resnorm.lab.memory import StepMemory
from resnorm.lab.probes import BlockProbe, SpikeDetector, grad_ratio
from resnorm.lab.runfolder import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    STATUSES,
    MetricsWriter,
    RunResult,
    check_overwritable,
    clear_run_files,
    has_checkpoint,
    is_nonempty_dir,
    load_checkpoint,
    read_config,
    read_metrics,
    read_result,
    read_result_dict,
    remove_stale_temporaries,
    save_checkpoint,
    truncate_metrics,
    write_config,
    write_result,
)
from resnorm.lab.schedule import lr_at, total_steps_for
from resnorm.lab.summary import grad_ratio_summary, verdict
from resnorm.lab.tasks import EVAL_BATCH_SIZE, ImageTask, TextTask, build_task

__all__ = ["Trainer", "train", "RunResult", "load_result", "read_metrics", "config_from_run", "build_model",
           "build_optimizer", "build_task", "evaluate", "STATUSES", "EVAL_BATCH_SIZE"]


def load_result(out_dir: str | Path) -> RunResult:
    """The ``RunResult`` in ``out_dir/result.json``."""
    return read_result(out_dir)


def config_from_run(out_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` saved in a run folder's ``config.yaml``."""
    return read_config(out_dir)


def build_model(config: TrainConfig, task: ImageTask | TextTask) -> nn.Module:
    """The model ``config.model`` names (its family's builder), sized for the task's data."""
    return registry.get(config.model).build(config, task.data)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (decoupled decay, on matrices only, as nanoGPT), Adam or SGD+momentum (L2 decay on all).

    ``foreach=True``: one multi-tensor update instead of a loop over parameters (PyTorch picks it
    itself on CUDA but not on CPU, where it makes 200 steps of the depth-48, width-64 MLP of
    ``resnorm compare`` ~12% faster end to end, median of 5 paired runs)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), foreach=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2),
                                weight_decay=config.weight_decay, foreach=True)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, foreach=True)
    raise ConfigError(f"optimizer={config.optimizer!r}: expected one of adamw, adam, sgd")


# ---------------------------------------------------------------------------------------------- helpers


class _StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM (schedulers, torchrun's shutdown) -> finish the step, save, stop; a
    second signal raises KeyboardInterrupt at once (the run is still saved, without waiting for the step)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, defer: bool = False) -> None:
        self.requested = False
        self.signal: str | None = None
        self.defer = defer  # only note signals (while the run saves itself): never raise
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and not self.defer:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = self.signal or signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    use_bf16 = config.amp == "bf16" or (
        config.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _total_grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients together (``torch.nn.utils.get_total_norm``, foreach kernels)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0).float()


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@torch.no_grad()
def evaluate(model: nn.Module, task: ImageTask | TextTask, config: TrainConfig, ctx: DistContext,
             split: str = "val") -> tuple[float | None, float | None]:
    """(mean loss, accuracy or None) on a split ("val", or "test" for on-disk image datasets), summed
    over ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, count
    try:
        with _autocast(config, ctx.device):
            for x, y in task.eval_batches(ctx.rank, ctx.world_size, split):
                logits = model(x)
                totals[0] += task.loss(logits, y, reduction="sum").double()
                totals[1] += (logits.argmax(-1) == y).sum().double()
                totals[2] += y.numel()
    finally:
        model.train(was_training)
    ctx.all_reduce_sum(totals)
    loss_sum, correct, count = totals.tolist()
    if count == 0:
        return None, None
    return loss_sum / count, (None if task.is_text else correct / count)


def _train_record(step: int, task: ImageTask | TextTask, loss: float, lr: float, norm: float, spike: bool,
                  time_s: float) -> dict[str, Any]:
    return {"kind": "train", "step": step, "epoch": task.epoch_at(step), "loss": loss, "lr": lr,
            "grad_norm": norm, "spike": bool(spike), "time_s": time_s}


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Train ``config`` into the run folder ``out_dir`` (see the module docstring).

    ``model``: train this module instead of building the family's model (it is moved to the run's
    device; its initialization is the caller's). ``resume``: continue the run in ``out_dir`` from its
    checkpoint (``RunFolderError`` when there is none). ``overwrite``: replace the run files of a
    non-empty ``out_dir``; without either, a non-empty ``out_dir`` is a ``RunFolderError``.
    ``on_step(step)`` is called after every completed step (raising KeyboardInterrupt there stops the
    run like a second Ctrl-C).
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, model: nn.Module | None = None,
                 resume: bool = False, overwrite: bool = False, progress: bool = True,
                 on_step: Callable[[int], None] | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if resume and overwrite:
            raise ConfigError("resume=True and overwrite=True exclude each other",
                              cli="--resume and --overwrite exclude each other")
        self.config = config
        self.out_dir = Path(out_dir)
        self.resume = bool(resume)
        self.overwrite = bool(overwrite)
        self.progress = progress
        self.on_step = on_step
        self._given_model = model
        # set by setup()
        self.ctx: DistContext | None = None
        self.task: ImageTask | TextTask | None = None
        self.model: nn.Module | None = None  # the unwrapped model
        self.train_model: nn.Module | None = None  # DDP / compiled wrapper used for the forward
        self.optimizer: torch.optim.Optimizer | None = None
        self.probe: BlockProbe | None = None
        self.spikes = SpikeDetector(config.spike_window, config.spike_sigma)
        self.log: MetricsWriter | None = None
        self.step_count = 0
        self.total_steps = 0
        self.status = "new"  # new -> running -> completed | diverged | interrupted
        self.diverged_step: int | None = None
        self.stop_signal: str | None = None
        self.ratios: list[float] = []
        self.step_times: list[float] = []  # seconds per plain step (no probes, no memory count)
        self._probe_step_times: list[float] = []
        self.peak_memory_mib: float | None = None  # resnorm.lab.memory.StepMemory of one step
        self._memory_measured = False
        self._memory: StepMemory | None = None
        self.last_val: dict[str, Any] | None = None
        self.already_finished: RunResult | None = None
        self._elapsed_before = 0.0
        self._start = 0.0
        self._threads = torch.get_num_threads()
        self._stop: _StopRequest | None = None
        self._bar = None
        self._created_dir = False
        self._wrote_files = False
        self._closed = False

    # ------------------------------------------------------------------------------------ setup

    def setup(self) -> Trainer:
        """Check the folder and the checkpoint, load the data, build the model and optimizer, then (and
        only then) write ``config.yaml`` and open ``metrics.jsonl``. Returns ``self``."""
        config = self.config
        validate(config)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.ctx = ctx = init_distributed(config.device)
        if config.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size={config.batch_size} must be divisible by the number of processes "
                              f"({ctx.world_size}): each rank takes an equal shard of every batch")
        state = self._check_folder_everywhere()
        family = registry.get(config.model)
        if self._given_model is None and family.available is not None:
            family.available()  # a missing optional package, before the data is read

        seed_everything(config.seed)  # identical model init on every rank
        self.task = task = build_task(config, ctx.device)
        self.total_steps = total_steps_for(config, task.steps_per_epoch)
        model = self._given_model if self._given_model is not None else build_model(config, task)
        self.model = model = model.to(ctx.device)
        self.optimizer = build_optimizer(config, model)
        self.probe = self._make_probe(model) if config.probe_every else None
        if ctx.rank:
            seed_everything(config.seed + 1_000_003 * ctx.rank)  # independent dropout streams per rank
        if state is not None:
            self._restore(state)
            if self.step_count > self.total_steps:
                steps = f"epochs={config.epochs:g} ({self.total_steps} steps)" if config.epochs is not None \
                    else f"steps={self.total_steps}"
                raise ConfigError(
                    f"{steps} is below step {self.step_count}, where the run in {self.out_dir} stopped; "
                    f"resuming continues a run and cannot shorten it (give steps={self.step_count} or more)")
            if self.step_count >= self.total_steps:
                finished = self._finished_result()
                if finished is not None:  # nothing left to do: touch nothing
                    self.already_finished = finished
                    self.status = finished.status
                    return self

        if ctx.is_main:
            if not self.out_dir.exists():
                self._created_dir = True
            if self.overwrite:
                clear_run_files(self.out_dir)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if state is not None:
                truncate_metrics(self.out_dir, self.step_count)
                remove_stale_temporaries(self.out_dir)  # a save cut short by SIGKILL
            self._wrote_files = True
            write_config(config, self.out_dir / "config.yaml")
        self.log = MetricsWriter(self.out_dir, enabled=ctx.is_main, tensorboard=config.tensorboard)
        if state is not None:
            self.log.event(self.step_count, "resumed",
                           f"from {CHECKPOINT_FILE} at step {self.step_count} of {self.total_steps}")
        if self._given_model is not None and config.probe_every and self.probe is None:
            self.log.event(self.step_count, "probes off", "the model has no .blocks to probe")

        self.train_model = model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        self._params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        self.status = "running"
        self._start = time.perf_counter()
        return self

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint's state into the model, optimizer, counters and RNGs; a state that does not
        fit this run (another model's weights, a damaged entry) is a ``RunFolderError`` naming the file."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.spikes.load_state_dict(state["spikes"])
            self.ratios = [float(r) for r in state["grad_ratios"]]
            rng_states = state["rng"]
            if self.ctx.rank < len(rng_states):
                restore_rng(rng_states[self.ctx.rank])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            raise RunFolderError(f"{self.out_dir / CHECKPOINT_FILE}: does not fit the run's model and "
                                 f"optimizer or is damaged ({reason})") from None
        self.step_count = int(state["step"])
        self._elapsed_before = float(state["elapsed_s"])
        self.last_val = state.get("last_val")

    def _make_probe(self, model: nn.Module) -> BlockProbe | None:
        blocks = getattr(model, "blocks", None)
        if self._given_model is not None and not (isinstance(blocks, nn.ModuleList) and len(blocks)):
            return None  # a model from outside without blocks: train it unprobed
        return BlockProbe(model)

    def _check_folder(self) -> dict[str, Any] | None:
        """Rank 0: the folder may be used as asked; the checkpoint's state when resuming."""
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise RunFolderExistsError(f"run folder {out} exists and is not a folder")
        if self.resume:
            if not has_checkpoint(out):
                what = "does not exist" if not out.exists() else f"has no {CHECKPOINT_FILE}"
                raise NothingToResumeError(
                    f"nothing to resume: {out} {what}; resume=True continues a run from its checkpoint",
                    cli=f"nothing to resume: {out} {what}; --resume continues a run from its checkpoint "
                        "(drop --resume to start a new run)")
            state = load_checkpoint(out)
            check_resume_compatible(state["config"], self.config)
            metrics = out / METRICS_FILE
            if metrics.exists() and not metrics.is_file():  # found before anything in the run is rewritten
                raise RunFolderError(f"{metrics} is not a file; the run's metrics cannot be continued")
            return state
        if self.overwrite:
            check_overwritable(out, "run")
        if is_nonempty_dir(out) and not self.overwrite:
            raise RunFolderExistsError(
                f"run folder {out} is not empty; pass resume=True to continue the run in it or "
                "overwrite=True to replace it",
                cli=f"run folder {out} is not empty; give --resume to continue the run in it, --overwrite "
                    "to replace it, or another --out")
        return None

    def _check_folder_everywhere(self) -> dict[str, Any] | None:
        ctx = self.ctx
        error: BaseException | None = None
        state = None
        if ctx.is_main:
            try:
                state = self._check_folder()
            except Exception as err:  # let the other ranks stop too
                error = err
        resuming, failed = ctx.broadcast_object((state is not None, error is not None))
        if error is not None:
            raise error
        if failed:
            raise RunFolderError(f"rank 0 could not use the run folder {self.out_dir}")
        if resuming and not ctx.is_main:
            state = load_checkpoint(self.out_dir)
        return state

    def _finished_result(self) -> RunResult | None:
        """The stored result when the run already completed its last step (decided on rank 0)."""
        finished = False
        if self.ctx.is_main:
            data = read_result_dict(self.out_dir)
            finished = data is not None and data.get("status") == "completed" and data.get("steps") == \
                self.step_count
        return read_result(self.out_dir) if self.ctx.broadcast_object(finished) else None

    # ------------------------------------------------------------------------------------ stepping

    @property
    def done(self) -> bool:
        return self.status != "running" or self.step_count >= self.total_steps

    def step(self) -> bool:
        """One optimizer step (with its logging, probe, evaluation and checkpoint when due). Returns
        True while the run should go on; False once it completed its steps, diverged or was asked to
        stop."""
        if self.status == "new":
            self.setup()
        if self.done:
            return False
        config, ctx, task, step = self.config, self.ctx, self.task, self.step_count
        probe, optimizer, log = self.probe, self.optimizer, self.log
        requested = self._stop is not None and self._stop.requested
        started = time.perf_counter()
        lr = lr_at(step, config, self.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = task.train_batch(step, ctx.rank, ctx.world_size)
        probing = self._probes_at(step)
        memory = self._memory_probe(step, probing)
        if probing:
            probe.start()
        with _autocast(config, ctx.device):
            logits = self.train_model(x)
        loss = task.loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        total_norm = _total_grad_norm(self._params)
        if probing:
            with memory.paused() if memory is not None else contextlib.nullcontext():
                probe.after_backward()  # per-block gradient norms before clipping, like total_norm
        stats = torch.stack([loss.detach().float(), total_norm.float(),
                             torch.tensor(float(requested), device=ctx.device)])
        if ctx.distributed:
            finite = torch.isfinite(stats[:2]).all().float()
            stats = torch.cat([stats, (1 - finite).view(1)])
            ctx.all_reduce_sum(stats)
            stats[0] /= ctx.world_size
            stats[1] /= ctx.world_size
        values = stats.tolist()
        loss_value, norm_value, stop_votes = values[0], values[1], values[2]
        bad = (len(values) > 3 and values[3] > 0) or not (math.isfinite(loss_value)
                                                         and math.isfinite(norm_value))
        if bad:
            if memory is not None:
                memory.stop()
            if probing:
                probe.cancel()
            self.status, self.diverged_step = "diverged", step + 1
            log.write(_train_record(step + 1, task, loss_value, lr, norm_value, False, self.elapsed()))
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            log.event(step + 1, "diverged", f"non-finite {what} at step {step + 1} "
                      f"(loss={loss_value}, grad_norm={norm_value}); the update was not applied")
            return False
        if config.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self._params, config.grad_clip, total_norm)
        if probing:
            with memory.paused() if memory is not None else contextlib.nullcontext():
                probe.before_update()
        try:
            optimizer.step()
        finally:
            if memory is not None:
                memory.stop()
        hook = getattr(self.model, "after_optimizer_step", None)
        if callable(hook):
            with torch.no_grad():
                hook()
        if memory is not None:
            self.peak_memory_mib = memory.peak_mib
        else:  # probe steps do more work, and the measured step runs slower
            (self._probe_step_times if probing else self.step_times).append(time.perf_counter() - started)
        self.step_count = step = step + 1
        spike = self.spikes.update(loss_value)
        if probing:
            record = probe.finish(step, norm_value)
            ratio = grad_ratio(record)
            if ratio is not None:
                self.ratios.append(ratio)
            log.write(record)
        if step % config.log_every == 0 or spike or step == self.total_steps or step == 1:
            log.write(_train_record(step, task, loss_value, lr, norm_value, spike, self.elapsed()))
        if self._bar is not None:
            self._bar.update(1)
            if step % max(1, config.log_every) == 0:
                self._bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if config.eval_every and step % config.eval_every == 0:
            self._log_eval()
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < self.total_steps:
            self.save("periodic")
        if self.on_step is not None:
            self.on_step(step)
        requested = self._stop is not None and self._stop.requested
        if stop_votes > 0 or (requested and not ctx.distributed):
            self.status = "interrupted"
            return False
        if step >= self.total_steps:
            self.status = "completed"
            return False
        return True

    def _probes_at(self, step: int) -> bool:
        """Whether the step of index ``step`` (0-based) probes: the first, then every probe_every-th."""
        return self.probe is not None and (step == 0 or (step + 1) % self.config.probe_every == 0)

    def _memory_probe(self, step: int, probing: bool) -> StepMemory | None:
        """A started ``StepMemory`` on the step that measures the run's peak step memory: the first
        step after the first one (which also creates the optimizer's state) that probes nothing, or,
        when every later step probes, this probe step (the probe's own bookkeeping paused); not under
        ``torch.compile`` on CPU (the CPU counter traces every operator in Python)."""
        if self.peak_memory_mib is not None or step < 1 or self._memory_measured:
            return None
        if self.config.compile and self.ctx.device.type != "cuda":
            return None
        # below probe_every = 2 at most one of two neighbouring steps probes: look two steps ahead
        if probing and any(not self._probes_at(i) for i in range(step + 1, min(step + 3, self.total_steps))):
            return None
        self._memory_measured = True
        self._memory = StepMemory(self.ctx.device).start()  # close() stops it if the step fails
        return self._memory

    def step_time(self) -> float | None:
        """The median wall-clock seconds of this session's training steps (batch, forward, backward,
        optimizer), without the probe steps (unless every step probed) and the memory-measuring step;
        None before one."""
        times = self.step_times or self._probe_step_times
        return statistics.median(times) if times else None

    def elapsed(self) -> float:
        """Seconds of training so far, across resumptions."""
        return self._elapsed_before + time.perf_counter() - self._start

    def evaluate(self, split: str = "val") -> tuple[float | None, float | None]:
        """(mean loss, accuracy or None for text) of the current model on ``split``."""
        return evaluate(self.model, self.task, self.config, self.ctx, split)

    def _log_eval(self) -> None:
        loss, acc = self.evaluate()
        if loss is None:
            return
        self.last_val = {"kind": "val", "step": self.step_count, "loss": loss, "acc": acc}
        self.log.write(self.last_val)

    def save(self, reason: str, collective: bool = True) -> None:
        """Write ``checkpoint.pt`` (rank 0; every rank's RNG state is gathered when ``collective``).
        Non-finite weights are never saved: the last good checkpoint stays."""
        ctx = self.ctx
        rng = ctx.all_gather_object(capture_rng()) if collective else [capture_rng()]
        if not ctx.is_main:
            return
        if not _all_finite(self.model):
            self.log.event(self.step_count, "checkpoint", "skipped: non-finite weights")
            return
        save_checkpoint({
            "step": self.step_count, "total_steps": self.total_steps, "config": self.config.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng,
            "spikes": self.spikes.state_dict(), "grad_ratios": self.ratios, "last_val": self.last_val,
            "elapsed_s": self.elapsed(), "world_size": ctx.world_size,
        }, self.out_dir)
        self.log.event(self.step_count, "checkpoint", reason)

    # ------------------------------------------------------------------------------------ the run

    def fit(self) -> RunResult:
        """Set up, step until done (Ctrl-C / SIGTERM stop it gracefully), finish; returns the result."""
        hard_interrupt = False
        try:
            if self.status == "new":
                self.setup()
            if self.already_finished is not None:
                return self.already_finished
            if self.progress and self.ctx.is_main:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total_steps, initial=self.step_count,
                                 desc=self.out_dir.name or "train", dynamic_ncols=True)
            self.model.train()
            try:
                with _StopRequest() as self._stop:
                    while self.step():
                        pass
                    self.stop_signal = self._stop.signal
            except KeyboardInterrupt:  # mid-step (second Ctrl-C, or from on_step): no collective calls now
                self.status = "interrupted"
                self.stop_signal = (self._stop.signal if self._stop is not None else None) or "SIGINT"
                hard_interrupt = True
                if self.probe is not None and self.probe.active:
                    self.probe.cancel()
            finally:
                self._stop = None
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None
            # a signal while the run saves itself must not cut the checkpoint or result.json short
            with _StopRequest(defer=True) as late:
                result = self.finish(collective=not (hard_interrupt and self.ctx.distributed))
            if late.requested and result.status != "interrupted":  # the run ended; the command stops now
                raise StopRequested(late.signal or "SIGINT")
            return result
        except BaseException:
            self._discard_if_nothing_trained()
            raise
        finally:
            self.close()

    def finish(self, collective: bool = True) -> RunResult:
        """End the run: final evaluation and checkpoint (completed), or the interruption's checkpoint;
        the verdict; ``result.json``. Returns the ``RunResult``."""
        if self.already_finished is not None:
            return self.already_finished
        ctx, config = self.ctx, self.config
        if self.status == "running":
            self.status = "completed" if self.step_count >= self.total_steps else "interrupted"
        if self.status == "completed":
            if self.last_val is None or self.last_val["step"] != self.step_count:
                self._log_eval()
            self.save("final")
        elif self.status == "interrupted":
            self.log.event(self.step_count, "interrupted",
                           f"stopped at step {self.step_count} of {self.total_steps}; resume continues")
            self.save("interrupted", collective=collective)
        final = {
            "train_loss": self.spikes.mean(),
            "val_loss": self.last_val["loss"] if self.last_val else None,
            "val_acc": self.last_val["acc"] if self.last_val else None,
        }
        if self.status == "completed" and self.task.has_test:  # the official test split, once at the end
            final["test_loss"], final["test_acc"] = self.evaluate("test")
        baseline = self.task.baseline_loss
        result = RunResult(
            status=self.status, steps=self.step_count, diverged_step=self.diverged_step, final=final,
            out_dir=self.out_dir, wall_s=self.elapsed(), total_steps=self.total_steps,
            config=config.to_dict(), baseline_loss=baseline, stop_signal=self.stop_signal,
            verdict=verdict(self.status, final["train_loss"], baseline, final["val_loss"]),
            step_time_s=self.step_time(), peak_memory_mib=self.peak_memory_mib,
            **grad_ratio_summary(self.ratios))
        if ctx.is_main:
            write_result(result, self.out_dir)
        self.log.close()
        return result

    def close(self) -> None:
        """Release the metrics file, the process group and the thread setting (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._memory is not None:
            self._memory.stop()
        if self.log is not None:
            self.log.close()
        if self.ctx is not None:
            self.ctx.close()
        torch.set_num_threads(self._threads)

    def _discard_if_nothing_trained(self) -> None:
        """A new run that failed before its first step leaves nothing behind to block the retry."""
        if self.resume or self.step_count > 0 or not self._wrote_files:
            return
        if self.log is not None:
            self.log.close()
        if self.out_dir.is_dir():
            clear_run_files(self.out_dir)
            if self._created_dir and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()


def train(config: TrainConfig, out_dir: str | Path, *, model: nn.Module | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True,
          on_step: Callable[[int], None] | None = None) -> RunResult:
    """Train ``config`` into ``out_dir`` and return its ``RunResult``: ``Trainer(...).fit()`` (see
    ``Trainer`` for the arguments)."""
    return Trainer(config, out_dir, model=model, resume=resume, overwrite=overwrite, progress=progress,
                   on_step=on_step).fit()
