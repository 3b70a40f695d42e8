"""Progress: a bar on a terminal, a compact log line every N steps elsewhere."""
import io

import pytest

from tfnas.runtime import progress


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_format_duration():
  assert progress.format_duration(5) == "0:05"
  assert progress.format_duration(754) == "12:34"
  assert progress.format_duration(3 * 3600 + 62) == "3:01:02"


def test_a_terminal_gets_a_bar_redrawn_in_place(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  stream = _Terminal()
  p = progress.Progress(epochs=2, steps_per_epoch=4, every_steps=1, images_per_step=32,
                        stream=stream)
  assert p.interactive
  p.begin_epoch(0)
  for i in range(4):
    now[0] += 10.0 if i == 0 else 0.5  # the first step traces the graph
    p.step(i, i + 1, {"loss": "1.2345", "acc": "0.5000"})
  p.end_epoch()
  frames = stream.getvalue().split("\r\x1b[K")[1:]
  assert len(frames) == 4 and frames[-1].endswith("\n")
  assert frames[0].startswith("epoch 1/2 [======>.................] 1/4 loss 1.2345 acc 0.5000")
  assert frames[0].rstrip().endswith("-- img/s | ETA --")  # no step timed yet
  # After the tracing step, 0.5 s per step: 64 img/s; two steps left in the epoch.
  assert frames[1].startswith("epoch 1/2 [============>...........] 2/4")
  assert frames[1].endswith("| 64.0 img/s | ETA 0:01")
  assert frames[-1].startswith("epoch 1/2 [========================] 4/4")


def test_the_bar_is_redrawn_at_most_ten_times_a_second(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  stream = _Terminal()
  p = progress.Progress(1, 100, 1, 8, stream=stream)
  p.begin_epoch(0)
  for i in range(100):
    now[0] += 0.01
    p.step(i, i + 1, {})
  assert 10 <= stream.getvalue().count("\r") <= 12  # 1 s of steps, and the last one


def test_elsewhere_one_log_line_every_n_steps(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  lines = []
  monkeypatch.setattr(progress.logging, "info", lambda fmt, *args: lines.append(fmt % args))
  stream = io.StringIO()  # not a terminal: a CI or cluster log
  p = progress.Progress(epochs=3, steps_per_epoch=5, every_steps=2, images_per_step=10,
                        stream=stream)
  assert not p.interactive
  p.begin_epoch(1)
  for i in range(5):
    now[0] += 2.0
    p.step(i, 5 + i + 1, {"loss": "0.5"})
  p.end_epoch()
  assert stream.getvalue() == ""
  # Global steps 6..10: lines at 6, 8, 10 (every 2) and at the epoch's last step (10).
  assert [line.split(" |")[0] for line in lines] == [
      "epoch 2/3 step 1/5", "epoch 2/3 step 3/5", "epoch 2/3 step 5/5"]
  # 2 s per step, 5 steps of the run left after global step 10: ETA 0:10.
  assert lines[-1] == "epoch 2/3 step 5/5 | loss 0.5 | 5.0 img/s | ETA 0:10"
  assert "ETA --" in lines[0]


@pytest.mark.parametrize("isatty,expected", [(True, True), (False, False)])
def test_interactive_follows_the_stream(isatty, expected):
  stream = _Terminal() if isatty else io.StringIO()
  assert progress.Progress(1, 1, 1, 1, stream=stream).interactive == expected
