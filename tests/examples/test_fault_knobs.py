"""The example data factory's fault-injection knobs: train mode only, never change a batch, once-markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from saturn_airflow.examples import data


def test_knobs_change_no_batch_and_act_only_in_a_training_run(tmp_path, monkeypatch):
    plain = data.tokens(7, 4, seq_len=8, vocab=32)
    knobs = {"slow_after_step": 0, "slow_factor": 2.0, "fail_at_step": 7, "fault_dir": str(tmp_path)}
    monkeypatch.delenv("SATURN_RUNNER_MODE", raising=False)
    for mode in (None, "trial"):  # the planner's process and the profiler's trials
        if mode:
            monkeypatch.setenv("SATURN_RUNNER_MODE", mode)
        got = data.tokens(7, 4, seq_len=8, vocab=32, **knobs)  # would raise in a training run
        assert all(torch.equal(a, b) for a, b in zip(plain, got))
    assert list(tmp_path.iterdir()) == []


def test_a_failure_fires_on_the_first_fail_times_launches_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SATURN_RUNNER_MODE", "train")
    knobs = {"fail_at_step": 3, "fail_times": 2, "fault_dir": str(tmp_path)}
    data.images(2, 4, image_size=8, **knobs)  # another step: nothing
    for launch in (1, 2):
        with pytest.raises(RuntimeError, match=f"injected failure at step 3 \\(launch {launch} of 2\\)"):
            data.images(3, 4, image_size=8, **knobs)
    x, y = data.images(3, 4, image_size=8, **knobs)  # the third launch gets past it
    assert torch.equal(x, data.images(3, 4, image_size=8)[0])


def test_a_kill_needs_its_marker_folder_and_fires_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SATURN_RUNNER_MODE", "train")
    with pytest.raises(ValueError, match="fault_dir"):
        data.tokens(5, 2, seq_len=8, vocab=32, kill_at_step=5)
    code = ("from saturn_airflow.examples import data; "
            f"data.tokens(5, 2, seq_len=8, vocab=32, kill_at_step=5, fault_dir={str(tmp_path)!r}); print('alive')")
    env = {**os.environ, "SATURN_RUNNER_MODE": "train"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -signal.SIGKILL
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "alive" in again.stdout  # the resumed launch trains on
