"""A training job killed mid-way (SIGKILL to its whole process group, as Slurm does on preemption or time-out)
resumes from its last complete checkpoint when rerun, and ends where an uninterrupted run ends."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _train_cli import TRAINING, env, make_inputs, read_log, run, train_command, weights
from sftlab.training.launch import CONFIG_DIR, launch_prefix
from sftlab.training.trainer import last_complete_checkpoint

# 24 examples at batch 2 per process; 60 steps with a checkpoint every 10
CFG = {**TRAINING, "batch_size": 2, "epochs": 20, "max_steps": 60, "save_steps": 10, "eval_steps": 30}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), per_family=4)


def complete_steps(checkpoints):
    return sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists())


def kill_after_first_checkpoint(command, checkpoints, timeout=600):
    """Start the job in its own process group; SIGKILL the whole group once a checkpoint is complete."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(),
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not complete_steps(checkpoints):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return proc.returncode


@pytest.mark.parametrize("processes", [1, 2])
def test_killed_run_resumes_from_its_last_checkpoint(inputs, tmp_path, processes):
    prefix = launch_prefix(processes, "ddp", CONFIG_DIR, sys.executable)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    checkpoints = killed / "checkpoints"

    assert kill_after_first_checkpoint(train_command(prefix, inputs, killed, CFG), checkpoints) == -signal.SIGKILL
    assert not (killed / "model").exists() and not (killed / "train_log.csv").exists()  # it did not finish
    done = complete_steps(checkpoints)
    assert done and max(done) < CFG["max_steps"]
    resume_at = max(done)

    rerun = run(train_command(prefix, inputs, killed, CFG))
    assert f"resuming from {checkpoints / f'checkpoint-{resume_at}'}" in rerun.stderr, rerun.stderr[-3000:]
    # only the steps after the checkpoint ran again: the Trainer logs each step's loss once
    assert rerun.stdout.count("{'loss'") == CFG["max_steps"] - resume_at
    log = read_log(killed / "train_log.csv")
    assert sorted(log) == list(range(CFG["max_steps"] + 1))  # the steps before the kill are in the log too
    assert all(log[s]["loss"] != "" for s in range(1, CFG["max_steps"] + 1))
    assert not checkpoints.exists()

    # the same end point as a run that was never interrupted: weights, optimiser, schedule, data order came back
    run(train_command(prefix, inputs, whole, CFG))
    expected, resumed = weights(whole / "model"), weights(killed / "model")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    assert float(log[60]["eval_loss"]) == pytest.approx(float(read_log(whole / "train_log.csv")[60]["eval_loss"]),
                                                        rel=1e-5)


def test_incomplete_checkpoint_is_removed_not_resumed(tmp_path, caplog):
    """A job killed while writing a checkpoint leaves a directory without trainer_state.json (the last file)."""
    for step, complete in ((10, True), (20, True), (30, False)):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"\0")
        if complete:
            (path / "trainer_state.json").write_text("{}")
    caplog.set_level(logging.INFO, logger="sftlab.training")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")
    assert not (tmp_path / "checkpoint-30").exists() and (tmp_path / "checkpoint-10").exists()
    assert any("incomplete checkpoint" in m for m in caplog.messages)
    assert last_complete_checkpoint(tmp_path / "checkpoint-10") is None  # nothing inside
