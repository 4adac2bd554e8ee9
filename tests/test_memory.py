"""resnorm.lab.memory.StepMemory on a CPU: the peak bytes of tensors created inside the window and
still alive, counted against allocations whose sizes the test knows."""

from __future__ import annotations

import pytest
import torch

from resnorm.lab.memory import MIB, StepMemory


def test_counts_new_storages_until_they_are_freed():
    before = torch.ones(10_000)  # in use before the window: not counted
    with StepMemory("cpu") as m:
        a = torch.empty(1000)  # 4000 bytes
        b = torch.ones(2000)  # 8000: 12000 in use
        view = b.view(10, 200)  # a view: no new memory
        b.add_(1.0)  # in place: none
        before.mul_(2.0)
        del a  # 8000 in use
        c = torch.zeros(500)  # 10000
        d = c.clone()  # 12000 again: the peak is not exceeded
    assert m.peak_bytes == 12_000
    assert m.peak_mib == 12_000 / MIB
    del view, d


def test_counts_the_backward_pass_and_the_gradients():
    w = torch.randn(256, 512, requires_grad=True)
    x = torch.randn(64, 256)
    (x @ w).sum().backward()  # a first step: w.grad exists
    w.grad = None
    with StepMemory("cpu") as m:
        h = x @ w  # 64 x 512 fp32: 128 KiB, kept for nothing (mm saves x and w)
        h.sum().backward()  # w.grad: 256 x 512 fp32, 512 KiB, created by autograd inside the window
    # at least the activation and the gradient were in use together
    assert m.peak_bytes >= 64 * 512 * 4 + 256 * 512 * 4
    assert m.peak_bytes < 64 * 512 * 4 * 3 + 256 * 512 * 4 * 2  # and not everything twice
    del h


def test_stop_is_idempotent_and_start_once():
    m = StepMemory("cpu").start()
    with pytest.raises(RuntimeError, match="twice"):
        m.start()
    t = torch.empty(256)
    assert m.stop() == 1024 and m.stop() == 1024
    del t


def test_paused_leaves_out_what_is_created_inside():
    with StepMemory("cpu") as m:
        a = torch.empty(1000)  # 4000 bytes
        with m.paused():
            copy = torch.empty(5000)  # a probe's snapshot: not counted
        b = torch.empty(500)  # 6000 in use
        del a  # a counted storage freed: 2000
    assert m.peak_bytes == 6000
    del copy, b
