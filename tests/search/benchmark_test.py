"""tools/benchmark.py: it times the library's own search step and reports consistent figures."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_tool_reports_the_real_step():
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--method=fair_darts",
       "--init_channels=4", "--layers=3", "--steps=2", "--batch_size=8", "--image_size=8",
       "--timed_steps=3"], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.splitlines()[-1])
  assert out["impl"] == "tfnas" and out["replicas"] == 1 and out["peak_gpu_mb"] is None
  assert out["graph_optimizer"] is False  # auto: off without a GPU
  assert out["first_step_s"] > out["step_s"] > 0  # the first step includes building the graph
  assert out["images_per_s"] == pytest.approx(8 / out["step_s"], rel=1e-2)
  assert out["peak_rss_mb"] > 100  # TensorFlow alone takes more

  # The step it times is the library's search network: same weight count.
  from tfnas.methods import presets
  from tfnas.spaces.darts_cell import genotype
  from tfnas.spaces.darts_cell import space as cell_space
  from tfnas.spaces.darts_cell import supernet
  space = cell_space.SearchSpace(primitives=genotype.FAIR_PRIMITIVES, steps=2, layers=3,
                                   init_channels=4)
  network = supernet.SearchNetwork(space, presets.METHODS["fair_darts"])
  network(np.zeros([1, 8, 8, 3], np.float32))
  assert out["params"] == sum(int(np.prod(v.shape)) for v in network.weight_variables)


@pytest.mark.slow
def test_benchmark_tool_on_three_replicas():
  # Three logical CPU devices once aborted the tool with "double free or corruption".
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--method=fair_darts",
       "--cpu_devices=3", "--init_channels=2", "--layers=1", "--steps=1", "--batch_size=3",
       "--image_size=8", "--timed_steps=1"], cwd=ROOT, capture_output=True, text=True,
      timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.splitlines()[-1])
  assert out["replicas"] == 3 and out["step_s"] > 0


@pytest.mark.slow
def test_benchmark_tool_rejects_settings_it_cannot_run():
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--image_size=6", "--layers=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: images of 6x6 do not fit 2 reductions" in result.stderr
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--jit_compile", "--cpu_devices=2",
       "--distribution_strategy=cpu", "--init_channels=4", "--layers=1", "--image_size=8"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: jit_compile needs one replica, not 2" in result.stderr
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--cpu_devices=3",
       "--batch_size=8", "--init_channels=4", "--layers=1", "--image_size=8"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert errors == ["error: batch_size 8 is not divisible by the 3 replicas"], result.stderr


def test_graph_optimizer_modes():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfnas.runtime import distribute  # pylint: disable=g-import-not-at-top
  from tfnas.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
  before = tf.config.optimizer.get_experimental_options()
  try:
    assert distribute.configure_graph_optimizer("on") and distribute.graph_optimizer_enabled()
    assert not distribute.configure_graph_optimizer("off")
    assert not distribute.graph_optimizer_enabled()
    assert distribute.configure_graph_optimizer("auto") == bool(
        tf.config.list_physical_devices("GPU"))
    with pytest.raises(UserInputError, match="unknown graph optimizer mode 'fast'"):
      distribute.configure_graph_optimizer("fast")
  finally:
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": before.get("disable_meta_optimizer", False)})


@pytest.mark.slow
def test_benchmark_tool_times_a_chain():
  chain = ["--layout=8:1,8:2", "--kernels=3,5", "--expansions=3", "--stem_channels=8",
           "--first_channels=8", "--head_channels=8"]
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--search_space=chain", *chain,
       "--method=noisy_darts", "--batch_size=4", "--image_size=16", "--timed_steps=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.splitlines()[-1])
  assert out["search_space"] == "chain" and out["layout"] == ["8:1", "8:2"]
  assert out["first_step_s"] > out["step_s"] > 0
  from tfnas import spaces
  from tfnas.methods import presets
  space = spaces.make("chain", "noisy_darts", 10, {
      "layout": ["8:1", "8:2"], "kernels": ["3", "5"], "expansions": ["3"], "stem_channels": 8,
      "first_channels": 8, "head_channels": 8})
  network = space.build_supernet(presets.METHODS["noisy_darts"])
  network(np.zeros([1, 16, 16, 3], np.float32))
  assert out["params"] == sum(int(np.prod(v.shape)) for v in network.weight_variables)
