"""tools/input_benchmark.py end to end on a small generated folder of JPEGs."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow  # runs the tool in its own process

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "input_benchmark.py"), *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_images_per_second_of_a_streamed_folder(tmp_path):
  rng = np.random.default_rng(0)
  for c in ("a", "b"):
    (tmp_path / c).mkdir()
    for i in range(8):
      image = rng.integers(0, 256, (50 + i, 80 - i, 3), dtype=np.uint8)
      tf.io.write_file(str(tmp_path / c / f"{i}.jpg"), tf.io.encode_jpeg(image))
  result = _run(f"--dataset={tmp_path}", "--image_size=72", "--batch_size=4", "--batches=3")
  assert result.returncode == 0, result.stderr
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert line["streamed"] and line["augment"] and line["image_shape"] == [72, 72, 3]
  assert line["images"] == 8 and line["images_per_s"] > 0
  bad = _run(f"--dataset={tmp_path}", "--image_size=72", "--batch_size=100")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      f"error: batch size 100 is larger than {tmp_path} (8 images)"]
