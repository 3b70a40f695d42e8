"""Choosing a tf.distribute strategy by name, the process-wide runtime settings, sums
over the replicas, and the seeds of each replica's random draws."""
import tensorflow as tf
# What tf.custom_gradient records gradients with (see sum_over_replicas).
from tensorflow.python.eager import record

from tfnas.runtime.errors import UserInputError
from tfnas.runtime.errors import first_line

STRATEGIES = ("auto", "mirrored", "one_device", "cpu", "multi_worker", "tpu")


def configure_cpu_devices(n):
  """Splits the CPU into n logical devices (for multi-replica runs without GPUs).

  Must run before TensorFlow initializes its devices (before the first op).
  """
  if n is None or n <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
  except RuntimeError as e:
    current = len(tf.config.list_logical_devices("CPU"))
    if current == n:  # already split this way (e.g. a test that set it up)
      return
    raise UserInputError(
        f"cannot split the CPU into {n} devices after TensorFlow started ({e})") from None


GRAPH_OPTIMIZER_MODES = ("auto", "on", "off")


def configure_graph_optimizer(mode="auto"):
  """Turns TensorFlow's graph optimizer (Grappler) on or off for this process.

  'auto': off when there is no GPU. On the CPU, Grappler spent about 13 s of the
  first search step (C=16, 8 cells) and made the steps no faster (README,
  Performance); on GPUs its layout and fusion passes are kept. Call it before
  the first step. Returns whether the optimizer is on.
  """
  if mode not in GRAPH_OPTIMIZER_MODES:
    raise UserInputError(f"unknown graph optimizer mode '{mode}'; choose one of "
                         f"{', '.join(GRAPH_OPTIMIZER_MODES)}")
  enabled = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
  tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
  return enabled


def graph_optimizer_enabled():
  return not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)


def get_strategy(name="auto", tpu_address=None):
  """A strategy by name.

  auto: mirrored over every GPU if there is one, else over the logical CPU
  devices (one replica unless the CPU was split). mirrored: the same. cpu: the
  logical CPU devices only, even when there are GPUs. one_device: the first GPU,
  else the CPU. multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.
  tpu: TPUStrategy on `tpu_address` (or the local TPU).
  """
  if name not in STRATEGIES:
    raise UserInputError(f"unknown distribution strategy '{name}'; "
                         f"choose one of {', '.join(STRATEGIES)}")
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  if name in ("auto", "mirrored"):
    devices = gpus or cpus
  elif name == "cpu":
    devices = cpus
  elif name == "one_device":
    return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
  elif name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  else:
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
      raise UserInputError(f"no TPU found ({first_line(e)})") from None
    return tf.distribute.TPUStrategy(resolver)
  if len(devices) == 1:
    return tf.distribute.OneDeviceStrategy(devices[0])
  if not gpus or name == "cpu":
    # Over CPU devices MirroredStrategy defaults to collective all-reduces, and
    # with the many all-reduces of a search step (synchronized batch norm) their
    # instance keys got out of step between replicas ("Shape mismatch in the
    # collective instance"). Reducing on one device avoids collectives.
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
  return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy):
  """Whether this process writes the run's files and summaries: on one machine always; in a
  multi-worker run the chief, or worker 0 of a cluster without one."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_batch_size(batch_size, strategy):
  """Refuses a global batch that the strategy's replicas cannot share equally."""
  n = strategy.num_replicas_in_sync
  if batch_size % n:
    raise UserInputError(f"batch_size {batch_size} is not divisible by the {n} replicas")


def _merge_sum(strategy, *values):
  return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM,
                                           [(v, v) for v in values])


def sum_over_replicas(values, differentiable=False):
  """The sums of a list of tensors over the replicas, on every replica (replica context).

  `differentiable`: the gradient of each sum (the sum of its gradients over the
  replicas) reaches the inputs. ReplicaContext.all_reduce wraps every call in
  tf.custom_gradient, whose check for variables walks back from the result over
  every replica's ops, once per call: with an all-reduce per synchronized batch
  norm, a 2-replica search graph took minutes to build. Under MirroredStrategy the
  sum here is one merge_call, and its gradient is recorded on the tape directly.
  """
  values = list(values)
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return values
  if not isinstance(ctx.strategy, tf.distribute.MirroredStrategy):
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)
  sums = list(ctx.merge_call(_merge_sum, args=values))
  if not differentiable:
    return sums
  n = len(values)
  outputs = tf.identity_n(sums + values)  # the sums, as the tape will see them

  def grad(*output_grads):
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(output_grads[:n], values)]
    return [None] * n + sum_over_replicas(grads)

  record.record_operation("SumOverReplicas", outputs, sums + values, grad)
  return outputs[:n]


def fold_seed(seed, value):
  """The stateless [2] seed `seed` folded with `value` (None stays None: drawn fresh later)."""
  return None if seed is None else tf.random.experimental.stateless_fold_in(seed, value)


def fresh_seed():
  """A stateless seed from the global generator, for a draw given no seed."""
  return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)


def replica_seed(seed):
  """The seed of this replica's draws: `seed` (or a fresh one) folded with the replica's id,
  so that replicas draw differently for their different samples, yet reproducibly."""
  ctx = tf.distribute.get_replica_context()
  replica = 0 if ctx is None else ctx.replica_id_in_sync_group
  return fold_seed(fresh_seed() if seed is None else seed, replica)


def input_iterator(dataset, strategy):
  """An iterator over a run's batches that the end of the run need not wait for.

  tf.data's autotuning thread sleeps until its next round (up to a minute apart) and an
  iterator is destroyed only when it wakes: the end of a search waited that long. tfnas'
  pipelines (in-memory images, light augmentation) need no autotuning, and one CPU
  replica reads the batches where they are, without the per-device pipeline that
  distributing the dataset adds (which autotunes too).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  dataset = dataset.with_options(options)
  if strategy.num_replicas_in_sync == 1 and all(
      "CPU" in d.upper() for d in strategy.extended.worker_devices):
    return iter(dataset)
  return iter(strategy.experimental_distribute_dataset(dataset))
