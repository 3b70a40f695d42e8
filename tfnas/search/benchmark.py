"""Timing the library's real search step (an architecture step plus a weight step)."""
import resource
import statistics
import time

import numpy as np
import tensorflow as tf

from tfnas.data import pipeline
from tfnas.data import sources
from tfnas.runtime import distribute
from tfnas.search import searcher as searcher_lib


def benchmark_search_step(space, method, config, image_size, timed_steps, strategy):
  """Times `timed_steps` search steps on random images after a first (tracing) step.

  Returns first_step_s (building the graph and the first step), step_s (the
  median of the timed steps), images_per_s (batch_size / step_s, the PyTorch
  peer's definition), peak_rss_mb, peak_gpu_mb (None without a GPU), replicas
  and the network's weight count.
  """
  distribute.check_batch_size(config.batch_size, strategy)
  start = time.perf_counter()
  rng = np.random.default_rng(0)
  n = config.batch_size * (timed_steps + 1)

  def images():
    return sources.ImageSet(
        rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
        rng.integers(0, space.num_classes, n).astype(np.int64))

  data = sources.SearchData("random", images(), images(), space.num_classes,
                             (image_size, image_size, 3), (0.5,) * 3, (0.25,) * 3, False)
  searcher = searcher_lib.Searcher(space, method, config, strategy, data.image_shape)
  dataset = pipeline.search_input(data, global_batch_size=config.batch_size, seed=0, epochs=1)
  iterator = distribute.input_iterator(dataset, strategy)
  float(searcher.train_step(iterator)["train_loss_sum"])  # the value forces the step to finish
  first_step_s = time.perf_counter() - start
  times = []
  for _ in range(timed_steps):
    t = time.perf_counter()
    float(searcher.train_step(iterator)["train_loss_sum"])
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  gpus = tf.config.list_logical_devices("GPU")
  peak_gpu_mb = None
  if gpus:
    peak_gpu_mb = max(tf.config.experimental.get_memory_info(d.name)["peak"]
                      for d in gpus) / 2**20
  return {
      "first_step_s": round(first_step_s, 3),
      "step_s": round(step_s, 4),
      "images_per_s": round(config.batch_size / step_s, 2),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "peak_gpu_mb": None if peak_gpu_mb is None else round(peak_gpu_mb, 1),
      "replicas": strategy.num_replicas_in_sync,
      "traced_once": searcher.traced_once,
      "graph_optimizer": distribute.graph_optimizer_enabled(),
      "params": int(sum(np.prod(v.shape) for v in searcher.weight_variables)),
  }
