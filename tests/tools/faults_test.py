"""Real processes killed and preempted: a restarted run is the same run; a full disk is one line.

Each run is a tiny network with a checkpoint every 2 steps, long enough (60 steps) that
the signals arrive in the middle of it.
"""
import json
import os
import pathlib
import pty
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.tools import stop_anywhere

pytestmark = pytest.mark.slow  # real processes started, stopped and killed

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY_SEARCH = [*stop_anywhere.TINY_SEARCH, "--epochs=3"]
TINY_TRAIN = ["--genotype=DARTS_V2", "--dataset=digits", "--train_split=train[:320]",
              "--test_split=train[1700:]", "--init_channels=4", "--layers=1", "--epochs=2",
              "--batch_size=16", "--auxiliary_weight=0", "--cutout=2", "--seed=5",
              "--deterministic", "--checkpoint_every_steps=2", "--log_every_steps=5"]


def _command(tool, args, model_dir):
  return [sys.executable, str(ROOT / "tools" / tool), *args, f"--model_dir={model_dir}"]


def _run(tool, args, model_dir, **kwargs):
  result = subprocess.run(_command(tool, args, model_dir), cwd=ROOT, capture_output=True,
                          text=True, timeout=600, **kwargs)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _checkpoint_steps(model_dir):
  return sorted(int(p.name[len("ckpt-"):-len(".index")])
                for p in (pathlib.Path(model_dir) / "checkpoints").glob("ckpt-*.index"))


def _wait_for_checkpoint(proc, model_dir, after_step, timeout=300):
  """Waits until a checkpoint newer than `after_step` is on disk; returns its step."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert proc.poll() is None, f"the run ended ({proc.returncode}) before it could be stopped"
    newer = [s for s in _checkpoint_steps(model_dir) if s > after_step]
    if newer:
      return newer[-1]
    time.sleep(0.005)
  raise AssertionError(f"no checkpoint after step {after_step} in {timeout} s")


class _Terminal:
  """Runs a command with a pseudo-terminal as its stdout and stderr, collecting the output."""

  def __init__(self, command):
    master, slave = pty.openpty()
    self.proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave,
                                 stderr=slave)
    os.close(slave)
    self._chunks = []
    self._reader = threading.Thread(target=self._read, args=(master,), daemon=True)
    self._reader.start()

  def _read(self, fd):
    while True:
      try:
        data = os.read(fd, 65536)
      except OSError:  # EIO: the terminal's other side closed
        break
      if not data:
        break
      self._chunks.append(data)
    os.close(fd)

  def output(self):
    self._reader.join(timeout=30)
    return b"".join(self._chunks).decode(errors="replace")


def _stop(proc, sig):
  proc.send_signal(sig)
  try:
    return proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()


def _stopped_by_sigterm(stderr, model_dir):
  """Checks the stop's one line; returns the step the next run resumes from.

  Two outcomes are right, depending on when the signal lands: steps ran since the last
  checkpoint, so one of the step in flight is written first; or none did (the signal
  came right after a checkpoint), so there was nothing to save. tests/checkpointing_test.py
  checks each path deterministically.
  """
  stopped = [line for line in stderr.splitlines() if line.startswith("stopped by SIGTERM")]
  assert len(stopped) == 1 and "Traceback" not in stderr, stderr[-3000:]
  newest = _checkpoint_steps(model_dir)[-1]
  if " at step " in stopped[0]:
    assert stopped[0].startswith(f"stopped by SIGTERM at step {newest}; checkpoint "
                                 f"{model_dir}/checkpoints/ckpt-{newest} written")
  else:
    assert stopped[0].startswith("stopped by SIGTERM with no step since the last checkpoint")
  return newest


def _alphas(model_dir):
  with open(os.path.join(model_dir, "alphas.json")) as f:
    return json.load(f)


def _genotype(model_dir):
  with open(os.path.join(model_dir, "genotype.json")) as f:
    return json.load(f)


def test_killed_then_preempted_search_resumes_to_the_uninterrupted_result(tmp_path):
  full, cut = tmp_path / "full", tmp_path / "cut"
  _run("search.py", TINY_SEARCH, full)
  with open(full / "params.json") as f:
    params = json.load(f)
  assert params["search"]["seed"] == 5 and params["search"]["deterministic"] is True

  # SIGKILL at some moment after the 4th step's checkpoint, on a terminal.
  terminal = _Terminal(_command("search.py", TINY_SEARCH, cut))
  seen = _wait_for_checkpoint(terminal.proc, cut, after_step=3)
  assert _stop(terminal.proc, signal.SIGKILL) == -signal.SIGKILL
  shown = terminal.output()
  assert "\r\x1b[Kepoch 1/3 [" in shown and "img/s | ETA" in shown  # the progress bar
  assert "/20 loss/weights" in shown and "acc" in shown
  killed_at = _checkpoint_steps(cut)[-1]
  assert seen <= killed_at < 60

  # SIGTERM (preemption) on the resumed run: exit 143, nothing lost since the last checkpoint.
  proc = subprocess.Popen(_command("search.py", TINY_SEARCH, cut), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(proc, cut, after_step=killed_at)
  assert _stop(proc, signal.SIGTERM) == 128 + signal.SIGTERM
  stderr = proc.stderr.read()
  proc.stdout.close()
  proc.stderr.close()
  assert f"Resuming from {cut}/checkpoints/ckpt-{killed_at} at step {killed_at}" in stderr
  step = _stopped_by_sigterm(stderr, cut)
  assert step < 60

  resumed = _run("search.py", TINY_SEARCH, cut)
  assert f"Resuming from {cut}/checkpoints/ckpt-{step} at step {step}" in resumed.stderr
  a, b = _alphas(full), _alphas(cut)
  for cell in ("normal", "reduce"):
    np.testing.assert_allclose(a[cell], b[cell], rtol=0, atol=1e-7)
  assert _genotype(full) == _genotype(cut)
  # The alphas did move (the reduction cell's: the tiny search has no normal cell).
  assert np.max(np.abs(np.array(a["reduce"]))) > 1e-3


def test_preempted_then_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
  full, cut = tmp_path / "full", tmp_path / "cut"
  _run("train.py", TINY_TRAIN, full)
  proc = subprocess.Popen(_command("train.py", TINY_TRAIN, cut), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(proc, cut, after_step=3)
  assert _stop(proc, signal.SIGTERM) == 128 + signal.SIGTERM
  step = _stopped_by_sigterm(proc.stderr.read(), cut)
  proc.stderr.close()
  proc = subprocess.Popen(_command("train.py", TINY_TRAIN, cut), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_checkpoint(proc, cut, after_step=step)
  assert _stop(proc, signal.SIGKILL) == -signal.SIGKILL
  result = _run("train.py", TINY_TRAIN, cut)
  for line in ("eval.json: ", "checkpoints: ", "tensorboard: ", "wall time: "):
    assert line in result.stdout
  with open(full / "eval.json") as f:
    a = json.load(f)
  with open(cut / "eval.json") as f:
    b = json.load(f)
  assert b["epochs_done"] == 2
  assert a["final_test_accuracy"] == b["final_test_accuracy"]
  np.testing.assert_allclose(a["history"]["2"]["test_loss"], b["history"]["2"]["test_loss"],
                             rtol=1e-6)


def _file_size_limit(limit):
  def apply():
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
  return apply


def test_a_full_disk_is_one_clear_line_and_keeps_what_was_written(tmp_path):
  # No file may grow past 10 kB: params.json (2 kB) fits, a checkpoint (24 kB) does not.
  args = [a for a in TINY_SEARCH if not a.startswith("--epochs")] + ["--epochs=1"]
  result = subprocess.run(_command("search.py", args, tmp_path), cwd=ROOT, capture_output=True,
                          text=True, timeout=600, preexec_fn=_file_size_limit(10_000))
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, result.stderr[-3000:]
  assert errors[0].startswith(f"error: cannot write a checkpoint in {tmp_path}/checkpoints: ")
  assert errors[0].endswith("File too large")
  with open(tmp_path / "params.json") as f:
    assert json.load(f)["search"]["epochs"] == 1


def test_a_stop_before_the_first_step_exits_at_once(tmp_path):
  # While the graph is built there is nothing to save: SIGTERM stops without waiting.
  proc = subprocess.Popen(_command("search.py", TINY_SEARCH, tmp_path), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not (tmp_path / "params.json").exists():  # written just before the network is built
    assert proc.poll() is None and time.monotonic() < deadline
    time.sleep(0.005)
  returncode = _stop(proc, signal.SIGTERM)
  stderr = proc.stderr.read()
  proc.stderr.close()
  assert returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "stopped by SIGTERM with no step since the last checkpoint" in stderr, stderr[-3000:]
  assert "Traceback" not in stderr and _checkpoint_steps(tmp_path) == []


def test_a_model_dir_in_use_is_refused_and_a_killed_holder_does_not_block_its_resume(tmp_path):
  args = [a for a in TINY_SEARCH if not a.startswith("--epochs")] + ["--epochs=1"]
  holder = subprocess.Popen(_command("search.py", args, tmp_path), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for_checkpoint(holder, tmp_path, after_step=1)
    holder.send_signal(signal.SIGSTOP)  # paused, still holding the model_dir, however slow
    params = (tmp_path / "params.json").read_text()
    in_use = (f"error: model_dir {tmp_path} is in use by process {holder.pid} on "
              f"{socket.gethostname()} since ")
    for tool, tool_args in (("search.py", args), ("train.py", TINY_TRAIN)):
      second = subprocess.run(_command(tool, tool_args, tmp_path), cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
      assert second.returncode == 2, second.stderr[-3000:]
      errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
      assert len(errors) == 1 and errors[0].startswith(in_use), second.stderr[-3000:]
      assert "tools/search.py" in errors[0] and "Traceback" not in second.stderr
      assert "Resuming" not in second.stderr
    assert (tmp_path / "params.json").read_text() == params  # nothing of the holder's touched
    assert holder.poll() is None
  finally:
    holder.kill()  # SIGKILL: the OS releases its lock
    holder.wait()
  step = _checkpoint_steps(tmp_path)[-1]
  resumed = _run("search.py", args, tmp_path)
  assert f"Resuming from {tmp_path}/checkpoints/ckpt-{step} at step {step}" in resumed.stderr


# A library that catches whatever reaches it and raises its own error instead, as parts of
# TensorFlow's tracing do (or, from C, leave the interpreter in a broken state).
_INTERRUPTED_LIBRARY = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from tfnas.runtime import cli
from tfnas.runtime.stopping import Stopped

def main(argv):
  cli.STOP.unsaved_steps = {unsaved}
  try:
    for sig in {signals}:
      os.kill(os.getpid(), sig)
      time.sleep(0.2)
  except BaseException as e:
    raise RuntimeError(f"the library's own error ({{type(e).__name__}})") from None
  print("the library was not interrupted", flush=True)
  raise Stopped(cli.STOP.reason, 7, "ckpt-7")  # the training loop, after its step

cli.run(main)
"""


def _interrupted_library(unsaved, signals):
  script = _INTERRUPTED_LIBRARY.format(root=str(ROOT), unsaved=unsaved,
                                       signals=[int(s) for s in signals])
  return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120)


def test_a_signal_handler_never_raises_into_the_code_it_interrupts():
  # Nothing to save (build, restore, tracing): the process ends at once, with the stop line.
  result = _interrupted_library(False, [signal.SIGTERM])
  assert result.returncode == 128 + signal.SIGTERM, result.stderr
  assert result.stderr.splitlines() == [
      "stopped by SIGTERM with no step since the last checkpoint: run the same command again "
      "to resume"]
  assert result.stdout == ""
  # Unsaved steps: the handler only notes the request; the loop stops after its step.
  result = _interrupted_library(True, [signal.SIGTERM])
  assert result.returncode == 128 + signal.SIGTERM, result.stderr
  assert result.stdout == "the library was not interrupted\n"
  assert result.stderr.splitlines() == [
      "SIGTERM received: stopping after the current step with a checkpoint",
      "stopped by SIGTERM at step 7; checkpoint ckpt-7 written: run the same command again "
      "to resume"]
  # A second Ctrl-C ends the process at once too, without raising.
  result = _interrupted_library(True, [signal.SIGINT, signal.SIGINT])
  assert result.returncode == 128 + signal.SIGINT, result.stderr
  assert result.stdout == "" and "Traceback" not in result.stderr
  assert result.stderr.splitlines()[-1] == (
      "stopped by a second SIGINT: the steps since the last checkpoint are lost")


def test_a_stop_while_a_resumed_search_traces_or_steps_exits_143(tmp_path):
  # SIGTERM while the resumed run traces its step once exited 1 (SystemError) in 2 of 5
  # tries. Here: right after the restore (tracing), and at random moments of the tracing
  # and of the steps; tests/tools/stop_anywhere.py does this 30 times over the whole run.
  base = tmp_path / "base"
  stop_anywhere.first_epoch(base)
  rng = random.Random(0)
  for i, (marker, delay) in enumerate([("Resuming from", 0.0),
                                       ("Resuming from", rng.uniform(0, 3)),
                                       ("epoch 2/2 step 5/20", rng.uniform(0, 1))]):
    model_dir = tmp_path / f"run{i}"
    shutil.copytree(base, model_dir)
    run = stop_anywhere.Run(model_dir)
    run.wait_for(marker)
    returncode = run.stop(delay)
    how = stop_anywhere.check_stopped(returncode, run.stderr(), model_dir, run.stdout)
    if i == 0:
      assert how == "at once, nothing to save"


_CYCLE_AT_EXIT = """
import atexit, sys
sys.path.insert(0, {root!r})
from tfnas.runtime import cli

class Graph:  # stands for TensorFlow's objects, which may only be freed while it is whole
  def __del__(self):
    print("freed", flush=True)

def main(argv):
  graph = Graph()
  graph.cycle = graph  # as a Searcher and its traced step function
  atexit.register(print, "interpreter shutting down", flush=True)
  return {status}

cli.run(main)
"""


def test_what_a_tool_built_is_freed_before_the_interpreter_shuts_down():
  # tools/benchmark.py --cpu_devices=3 aborted with "double free or corruption" at exit: its
  # Searcher (in a reference cycle with its step function) was freed only while the
  # interpreter tore its modules down. The tools now free it first, whatever their status.
  for status in (0, 3):
    result = subprocess.run([sys.executable, "-c", _CYCLE_AT_EXIT.format(root=str(ROOT),
                                                                         status=status)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == status, result.stderr
    assert result.stdout.splitlines() == ["freed", "interpreter shutting down"]


# A tiny chain on digits: 20 steps an epoch, a checkpoint every 2 steps.
TINY_CHAIN_SEARCH = ["--search_space=chain", "--method=noisy_darts", "--layout=8:1,8:2",
                     "--kernels=3,5", "--expansions=3", "--stem_channels=8",
                     "--first_channels=8", "--head_channels=8", "--batch_size=16",
                     "--train_split=train[:320]", "--val_split=train[320:640]", "--seed=5",
                     "--deterministic", "--checkpoint_every_steps=2", "--log_every_steps=5",
                     "--epochs=2"]


def test_a_killed_chain_search_resumes_to_the_uninterrupted_result(tmp_path):
  full, cut = tmp_path / "full", tmp_path / "cut"
  _run("search.py", TINY_CHAIN_SEARCH, full)
  proc = subprocess.Popen(_command("search.py", TINY_CHAIN_SEARCH, cut), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_checkpoint(proc, cut, after_step=3)
  assert _stop(proc, signal.SIGKILL) == -signal.SIGKILL
  killed_at = _checkpoint_steps(cut)[-1]
  assert killed_at < 40
  resumed = _run("search.py", TINY_CHAIN_SEARCH, cut)
  assert f"Resuming from {cut}/checkpoints/ckpt-{killed_at} at step {killed_at}" in (
      resumed.stderr)
  a, b = _alphas(full), _alphas(cut)
  np.testing.assert_allclose(np.array(a["alphas"], np.float64),
                             np.array(b["alphas"], np.float64), rtol=0, atol=1e-7)
  assert _genotype(full) == _genotype(cut)
