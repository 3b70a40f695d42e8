"""Multi-worker runs with real processes: two workers on 127.0.0.1, each its own TF_CONFIG.

Two workers with one device each must give what one process with two devices gives
(the same replicas, batches and seeds); a worker started with other flags is refused;
the chief's SIGTERM stops both with the same checkpoint; a killed worker makes the
other stop with one line; and restarting both resumes to the uninterrupted result.
"""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.tools import stop_anywhere

pytestmark = pytest.mark.slow  # real worker processes, each tracing its own step

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The tiny search of faults_test.py on half its data: 10 steps an epoch, a checkpoint every
# 2 steps.
SEARCH = [*stop_anywhere.TINY_SEARCH, "--train_split=train[:160]",
          "--val_split=train[160:320]", "--epochs=2"]
# 97 test images: the last evaluation batch of 16 has one, which the second replica lacks.
TRAIN = ["--genotype=DARTS_V2", "--dataset=digits", "--train_split=train[:160]",
         "--test_split=train[1700:]", "--init_channels=4", "--layers=1", "--epochs=1",
         "--batch_size=16", "--auxiliary_weight=0", "--seed=5", "--deterministic",
         "--log_every_steps=5"]
# A worker must see the other's end within this (TensorFlow's heartbeats, then one line).
LOST_WORKER_SECONDS = 90


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(tool, args, model_dir):
  return [sys.executable, str(ROOT / "tools" / tool), *args, f"--model_dir={model_dir}"]


class _Cluster:
  """Two workers of one run, each with its own stdout and stderr file in `logs`."""

  def __init__(self, tool, args, model_dir, logs, worker_args=((), ())):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in worker_args]}
    self.logs, self.procs = pathlib.Path(logs), []
    self.logs.mkdir(parents=True, exist_ok=True)
    for index, extra in enumerate(worker_args):
      env = {**os.environ, "TF_CONFIG": json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}})}
      with open(self.logs / f"out{index}", "w") as out, open(self.logs / f"err{index}",
                                                              "w") as err:
        self.procs.append(subprocess.Popen(
            _command(tool, [*args, "--distribution_strategy=multi_worker", *extra],
                     model_dir), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=err))

  def wait(self, timeout=600):
    return [proc.wait(timeout=timeout) for proc in self.procs]

  def stderr(self, index):
    return (self.logs / f"err{index}").read_text()

  def last_line(self, index):
    return self.stderr(index).strip().splitlines()[-1]

  def kill(self):
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def cluster():
  """Starts clusters (`cluster(tool, args, model_dir, logs, ...)`) and kills what is left."""
  started = []

  def start(*args, **kwargs):
    started.append(_Cluster(*args, **kwargs))
    return started[-1]

  yield start
  for c in started:
    c.kill()


def _one_process(tool, args, model_dir):
  """The same run in one process with two logical CPU devices (two replicas)."""
  result = subprocess.run(_command(tool, [*args, "--cpu_devices=2"], model_dir), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference_search(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("reference") / "search"
  _one_process("search.py", SEARCH, model_dir)
  return model_dir


def _alphas(model_dir):
  alphas = json.loads((pathlib.Path(model_dir) / "alphas.json").read_text())
  return np.array(alphas["normal"] + alphas["reduce"])


def _genotype(model_dir):
  return json.loads((pathlib.Path(model_dir) / "genotype.json").read_text())


def _checkpoint_steps(model_dir):
  return sorted(int(p.name[len("ckpt-"):-len(".index")])
                for p in (pathlib.Path(model_dir) / "checkpoints").glob("ckpt-*.index"))


def test_a_worker_started_with_other_flags_is_refused(cluster, tmp_path):
  model_dir = tmp_path / "run"
  run = cluster("search.py", SEARCH, model_dir, tmp_path / "logs",
                worker_args=((), ("--learning_rate=0.1",)))
  assert run.wait() == [2, 2]
  for index in (0, 1):
    assert run.last_line(index) == (
        f"error: worker 1 differs from worker 0 in the search settings (this is worker "
        f"{index}): start every worker with the same flags"), run.stderr(index)[-2000:]
  assert not (model_dir / "checkpoints").exists()


def _wait_for_checkpoint(model_dir, after_step, procs, timeout=300):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert all(p.poll() is None for p in procs), "a worker ended before it could be stopped"
    newer = [s for s in _checkpoint_steps(model_dir) if s > after_step]
    if newer:
      return newer[-1]
    time.sleep(0.01)
  raise AssertionError(f"no checkpoint after step {after_step} in {timeout} s")


def test_two_workers_stopped_killed_and_resumed_end_as_one_process_with_two_devices(
    cluster, reference_search, tmp_path):
  # (Each start of the cluster traces the step again: one search covers the stop, the lost
  # worker and the resume, and ends where the uninterrupted one-process search ends.)
  model_dir = tmp_path / "run"
  # SIGTERM on the chief: both workers stop after the same step, with its checkpoint.
  run = cluster("search.py", SEARCH, model_dir, tmp_path / "logs1")
  _wait_for_checkpoint(model_dir, 4, run.procs)
  run.procs[0].send_signal(signal.SIGTERM)
  assert run.wait() == [143, 143], run.stderr(0)[-2000:] + run.stderr(1)[-2000:]
  lines = [run.last_line(i) for i in (0, 1)]
  assert all(line.startswith("stopped by SIGTERM at step ") for line in lines), lines
  step = int(lines[0].split()[5].rstrip(";"))
  assert lines[1] == lines[0]  # the checkpoint named is the chief's
  assert f"ckpt-{step}" in lines[0] and step in _checkpoint_steps(model_dir)
  assert step < 20

  # Both again; then worker 1 killed: worker 0 stops with one line, in bounded time.
  run = cluster("search.py", SEARCH, model_dir, tmp_path / "logs2")
  _wait_for_checkpoint(model_dir, step + 2, run.procs)
  run.procs[1].kill()
  killed = time.monotonic()
  assert run.procs[0].wait(timeout=LOST_WORKER_SECONDS) == 1
  assert time.monotonic() - killed < LOST_WORKER_SECONDS
  # The worker is named when TensorFlow's heartbeats found it gone, not when a broken
  # connection failed the step first.
  assert re.fullmatch(r"error: lost contact with (worker 1|another worker) \(it stopped or its "
                      r"machine did\): start every worker again to resume from the last "
                      r"checkpoint", run.last_line(0)), run.stderr(0)[-2000:]
  assert "Traceback" not in run.stderr(0)

  # Both again: they resume from the last checkpoint to the one-process run's end.
  logs = tmp_path / "logs3"
  run = cluster("search.py", SEARCH, model_dir, logs)
  assert run.wait() == [0, 0], run.stderr(0)[-2000:] + run.stderr(1)[-2000:]
  assert "Resuming from" in run.stderr(1)
  np.testing.assert_allclose(_alphas(model_dir), _alphas(reference_search), rtol=0, atol=1e-6)
  assert _genotype(model_dir) == _genotype(reference_search)
  # Both workers end with the genotype that the chief wrote.
  outputs = [(logs / f"out{i}").read_text().splitlines()[0] for i in (0, 1)]
  assert [json.loads(line) for line in outputs] == [_genotype(model_dir)] * 2
  params = json.loads((model_dir / "params.json").read_text())
  assert params["derived"]["num_replicas"] == 2
  # The chief alone wrote the run's files: one events file per TensorBoard run and start of
  # the cluster, no scratch checkpoint folder of the other worker left behind.
  assert len(list((model_dir / "train").glob("events.*"))) == 3
  assert not list(model_dir.rglob("workertemp*"))


def test_two_workers_train_as_one_process_with_two_devices(cluster, tmp_path):
  reference = tmp_path / "reference"
  _one_process("train.py", TRAIN, reference)
  model_dir = tmp_path / "run"
  run = cluster("train.py", TRAIN, model_dir, tmp_path / "logs")
  assert run.wait() == [0, 0], run.stderr(0)[-2000:] + run.stderr(1)[-2000:]
  ours, theirs = (json.loads((d / "eval.json").read_text()) for d in (model_dir, reference))
  np.testing.assert_allclose(ours["final_test_accuracy"], theirs["final_test_accuracy"])
  assert ours["history"].keys() == theirs["history"].keys()
  for epoch, figures in theirs["history"].items():
    for key, value in figures.items():
      if isinstance(value, float) and "seconds" not in key and "per_second" not in key:
        np.testing.assert_allclose(ours["history"][epoch][key], value, rtol=1e-5, err_msg=key)
