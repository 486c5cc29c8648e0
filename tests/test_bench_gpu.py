"""The benchmarks' GPU rules, checked on the CPU (issue 21): the HF Trainer contender stays on
the device asked for, the AMP tolerance rule of the scoring benchmark, the peak-memory counter
reset between contenders, and the GPU check refusing a machine without CUDA."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench import common
from bench.scoring import AMP_TIE_MARGIN, amp_agreement, metric_gap
from bench.training import single_device_arguments


def test_hf_trainer_arguments_honour_cuda_n(tmp_path, monkeypatch):
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # DataParallel bait
    args = single_device_arguments("cuda:2", output_dir=str(tmp_path), report_to="none")
    assert args.device == torch.device("cuda:2") and args.n_gpu == 1
    assert chosen == [torch.device("cuda:2")]


def test_hf_trainer_arguments_leave_the_cpu_alone(tmp_path):
    args = single_device_arguments("cpu", output_dir=str(tmp_path), report_to="none",
                                   use_cpu=True)
    assert args.device == torch.device("cpu") and args.n_gpu == 0


def test_amp_rule_allows_flips_only_at_near_ties():
    plain = torch.tensor([[[2.0, 1.0, 0.0], [1.00, 0.96, 0.0], [0.0, 3.0, 1.0]]])
    same = plain.clone()
    assert amp_agreement(same, plain, 0.1) == {"rows": 3, "ties": 1, "flipped": 0,
                                               "outside_ties": 0}
    tie_flip = plain.clone()
    tie_flip[0, 1] = torch.tensor([0.95, 0.97, 0.0])  # the near tie flips: allowed
    assert amp_agreement(tie_flip, plain, 0.1)["outside_ties"] == 0
    assert amp_agreement(tie_flip, plain, 0.1)["flipped"] == 1
    real_flip = plain.clone()
    real_flip[0, 0] = torch.tensor([0.0, 2.5, 0.0])  # a clear winner changed: not allowed
    assert amp_agreement(real_flip, plain, 0.1)["outside_ties"] == 1
    assert set(AMP_TIE_MARGIN) == {"bfloat16", "float16"}


def test_metric_gap_is_the_largest_difference_to_the_reference():
    reference = [{"accuracy": 0.5, "macro_f1": 0.4}, {"accuracy": 0.7, "macro_f1": 0.6}]
    results = {"plain": [reference],
               "fast": [[{"accuracy": 0.5, "macro_f1": 0.41}, {"accuracy": 0.68, "macro_f1": 0.6}]]}
    assert metric_gap(results, reference) == pytest.approx(0.02)
    assert metric_gap({"plain": [reference]}, reference) == 0.0


def test_gpu_peaks_are_per_contender_not_cumulative(monkeypatch):
    """A counter that, like CUDA's, only grows until it is reset."""
    state = {"peak": 0.0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: state.update(peak=0.0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: state["peak"] * 2**20)
    peaks = common.GpuPeaks("cuda:0")
    with peaks.measure("big"):
        state["peak"] = 900.0
    with peaks.measure("small"):
        state["peak"] = max(state["peak"], 100.0)
    assert peaks.column(["big", "small", "never"]) == ["900", "100", "-"]
    cpu = common.GpuPeaks("cpu")
    with cpu.measure("x"):
        pass
    assert cpu.mib == {} and common.gpu_peak_mib("cpu") is None


def test_gpu_check_fails_in_one_line_without_cuda(tmp_path):
    """This machine has no CUDA device: the check must say so and exit non-zero at once."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    md = tmp_path / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--md", str(md)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu-check: no CUDA device") and "Fix:" in lines[0]
    assert not md.exists()
