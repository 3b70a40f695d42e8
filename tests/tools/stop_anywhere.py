r"""SIGTERM at random moments of a resumed tiny search: every stop must end as the README says.

  python tests/tools/stop_anywhere.py --runs=30

A run stopped by SIGTERM exits 143 with one line `stopped by SIGTERM ...`: at the step
in flight with its checkpoint written, or, when no step ran since the last checkpoint
(import, build, restore, tracing, the step after a checkpoint), at once. Only a signal
that arrives before the tool installed its handler (the first moments of the
interpreter) or after it finished (while the interpreter shuts down, every file written)
ends the process by the signal itself (-15 here, 143 in a shell). tests/faults_test.py runs a few of these stops; this script runs many.
"""
import argparse
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The tiny search of tests/faults_test.py: 20 steps an epoch, a checkpoint every 2 steps.
# One cell (a reduction cell): each process traces its step, and the tests start many.
TINY_SEARCH = ["--method=noisy_darts", "--primitives=skip_connect,sep_conv_3x3", "--steps=1",
               "--layers=1", "--init_channels=4", "--batch_size=16",
               "--train_split=train[:320]", "--val_split=train[320:640]", "--seed=5",
               "--deterministic", "--checkpoint_every_steps=2", "--log_every_steps=5"]


def command(model_dir, epochs):
  return [sys.executable, str(ROOT / "tools" / "search.py"), *TINY_SEARCH, f"--epochs={epochs}",
          f"--model_dir={model_dir}"]


def checkpoint_steps(model_dir):
  return sorted(int(p.name[len("ckpt-"):-len(".index")])
                for p in (pathlib.Path(model_dir) / "checkpoints").glob("ckpt-*.index"))


def first_epoch(model_dir):
  """A finished one-epoch search: the run that the stopped runs resume (for a second epoch)."""
  subprocess.run(command(model_dir, 1), cwd=ROOT, check=True, capture_output=True, timeout=900)


class Run:
  """The resumed search (epochs=2) in model_dir, its stderr collected line by line."""

  def __init__(self, model_dir):
    self.model_dir = model_dir
    self.started = time.monotonic()
    self.proc = subprocess.Popen(command(model_dir, 2), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    self.lines = []
    self._seen = threading.Event()
    self._marker = None
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.lines.append(line.rstrip("\n"))
      if self._marker and self._marker in line:
        self._seen.set()

  def wait_for(self, marker, timeout=600):
    """Waits until a stderr line contains `marker`."""
    self._marker = marker
    if any(marker in line for line in self.lines):
      return
    assert self._seen.wait(timeout), f"no line with {marker!r}: {self.stderr()[-3000:]}"

  def stop(self, delay=0.0):
    """SIGTERM `delay` seconds from now; returns the exit status."""
    time.sleep(delay)
    self.proc.send_signal(signal.SIGTERM)
    try:
      return self.proc.wait(timeout=300)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
      self._reader.join(timeout=30)
      self.stdout = self.proc.stdout.read()  # a few lines, at the end
      self.proc.stdout.close()
      self.proc.stderr.close()

  def stderr(self):
    return "\n".join(self.lines)


def check_stopped(returncode, stderr, model_dir, stdout=""):
  """Raises AssertionError unless the run stopped as it must; returns how it stopped."""
  if returncode == -signal.SIGTERM:
    if "wall time: " in stdout:  # the search's last lines: the interpreter was shutting down
      return "by the signal, after the run finished"
    assert not stderr.strip(), stderr[-3000:]  # the interpreter was starting
    return "by the signal, before the handler was installed"
  assert returncode == 128 + signal.SIGTERM, f"exit {returncode}: {stderr[-3000:]}"
  assert "Traceback" not in stderr and "SystemError" not in stderr, stderr[-3000:]
  stopped = [line for line in stderr.splitlines() if line.startswith("stopped by SIGTERM")]
  assert len(stopped) == 1, stderr[-3000:]
  assert stopped[0].endswith(": run the same command again to resume"), stopped[0]
  if " at step " in stopped[0]:
    newest = checkpoint_steps(model_dir)[-1]
    assert stopped[0].startswith(f"stopped by SIGTERM at step {newest}; checkpoint "
                                 f"{model_dir}/checkpoints/ckpt-{newest} written"), stopped[0]
    return "after the step in flight, with a checkpoint"
  assert stopped[0].startswith("stopped by SIGTERM with no step since the last checkpoint")
  return "at once, nothing to save"


def phase(stderr):
  """Roughly where the run was: what its last tfnas line says."""
  if "Resuming from" not in stderr:
    return "import/build/restore"
  if "epoch 2/2 step" not in stderr:
    return "tracing, first steps"
  return "stepping, checkpointing, closing"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=30)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  with tempfile.TemporaryDirectory() as tmp:
    base = pathlib.Path(tmp) / "base"
    first_epoch(base)
    # How long an unstopped resumed run takes: the signals fall within it.
    whole = pathlib.Path(tmp) / "whole"
    shutil.copytree(base, whole)
    run = Run(whole)
    assert run.proc.wait(timeout=900) == 0, run.stderr()[-3000:]
    duration = time.monotonic() - run.started
    print(f"an unstopped resumed run: {duration:.1f} s", flush=True)
    outcomes, finished, i = {}, 0, 0
    while i < args.runs:
      model_dir = pathlib.Path(tmp) / f"run{i}"
      shutil.copytree(base, model_dir)
      delay = rng.uniform(0, duration)
      run = Run(model_dir)
      returncode = run.stop(delay)
      if returncode == 0:  # it ended before the signal (a less busy machine): try again
        finished += 1
        shutil.rmtree(model_dir)
        continue
      how = check_stopped(returncode, run.stderr(), model_dir, run.stdout)
      where = phase(run.stderr())
      outcomes[how, where] = outcomes.get((how, where), 0) + 1
      i += 1
      print(f"{i}/{args.runs}: SIGTERM after {delay:.2f} s ({where}): exit {returncode}, "
            f"stopped {how}", flush=True)
      shutil.rmtree(model_dir)
    if finished:
      print(f"({finished} runs ended before their signal and were not counted)")
    print(f"{args.runs} of {args.runs} stopped as they must:")
    for (how, where), n in sorted(outcomes.items()):
      print(f"  {n:3d} during {where}: stopped {how}")


if __name__ == "__main__":
  main()
