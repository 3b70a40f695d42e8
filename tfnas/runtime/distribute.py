"""Choosing a tf.distribute strategy by name, the process-wide runtime settings, sums
over the replicas, a replica function traced once for all the replicas of one machine, the
seeds of each replica's random draws, and the workers of a multi-worker run."""
import hashlib
import itertools
import json
import os
import re
import shutil
import signal

import tensorflow as tf

from tfnas.runtime.errors import RunError
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

  multi_worker must be chosen before TensorFlow runs its first op (it sets up the
  collectives): its workers are TF_CONFIG's, else a Slurm job step's (one worker per
  task); see cluster_resolver().
  """
  if name not in STRATEGIES:
    raise UserInputError(f"unknown distribution strategy '{name}'; "
                         f"choose one of {', '.join(STRATEGIES)}")
  if name == "multi_worker":  # before listing devices, which starts TensorFlow's runtime
    resolver = cluster_resolver()
    # TensorFlow's preemption notifier takes SIGTERM over as the strategy starts (and does
    # nothing a tfnas run sees): the process' own handlers are put back.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
      strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as e:
      raise UserInputError(f"cannot start the multi-worker strategy: {first_line(e)} (choose "
                           "it before TensorFlow runs an op)") from None
    for sig, handler in handlers.items():
      if handler is not None:
        signal.signal(sig, handler)
    return strategy
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  if name in ("auto", "mirrored"):
    devices = gpus or cpus
  elif name == "cpu":
    devices = cpus
  elif name == "one_device":
    return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
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


def cluster_resolver():
  """The workers of a multi-worker run: TF_CONFIG's cluster and task, else a Slurm job step's
  tasks (TensorFlow's SlurmClusterResolver: one worker per task, ports from 8888 up on each
  node, the node's GPUs shared among its tasks). One line (UserInputError) when neither
  describes a cluster of workers."""
  if os.environ.get("TF_CONFIG"):
    try:
      config = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as e:
      raise UserInputError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
      raise UserInputError('TF_CONFIG needs "cluster" and "task", e.g. {"cluster": {"worker": '
                           '["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                           '"index": 0}}')
    tasks = cluster.get(task.get("type"))
    index = task.get("index")
    if (not isinstance(tasks, list) or not isinstance(index, int) or
        not 0 <= index < len(tasks)):
      raise UserInputError(f"TF_CONFIG's task {json.dumps(task)} is not one of its cluster "
                           f"{json.dumps(cluster)}")
    unknown = set(cluster) - {"chief", "worker"}
    if unknown:
      raise UserInputError(f"TF_CONFIG's cluster has {', '.join(sorted(unknown))} tasks; tfnas "
                           "runs only 'chief' and 'worker' tasks")
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if os.environ.get("SLURM_PROCID") is not None:
    gpus = "CUDA_VISIBLE_DEVICES" in os.environ or shutil.which("nvidia-smi")
    try:
      if gpus:
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
      # The resolver shares each node's GPUs among its tasks and fails without one: on CPU
      # nodes only its cluster and task are kept (a dummy GPU per task, not applied).
      slurm = tf.distribute.cluster_resolver.SlurmClusterResolver(
          gpus_per_node=1024, gpus_per_task=1, auto_set_gpu=False)
      return tf.distribute.cluster_resolver.SimpleClusterResolver(
          slurm.cluster_spec(), task_type=slurm.task_type, task_id=slurm.task_id)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
      raise UserInputError(f"cannot read the Slurm job's tasks: {first_line(e)}") from None
  raise UserInputError("--distribution_strategy=multi_worker needs TF_CONFIG (or a Slurm job "
                       "step) to name its workers; see the README's Multi-worker section")


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


class _OneTrace:
  """The replica being traced by ReplicasTracedOnce (`current`, None otherwise): how many
  replicas there are, its id, and its sums over the replicas as collective ops."""
  current = None
  _instance_keys = itertools.count(1)  # unique in the process: each key is one collective

  def __init__(self, num_replicas, replica_id, ordering_token):
    self.num_replicas, self.replica_id, self.ordering_token = (
        num_replicas, replica_id, ordering_token)
    self.group_key = 1000 + num_replicas

  def sum(self, values):
    flat = tf.concat([tf.reshape(v, [-1]) for v in values], 0)
    # The same key on every device: the n-th sum of each device's copy of the step.
    total = tf.raw_ops.CollectiveReduceV2(
        input=flat, group_size=self.num_replicas, group_key=self.group_key,
        instance_key=next(self._instance_keys), ordering_token=[self.ordering_token],
        merge_op="Add", final_op="Id")
    sizes = [v.shape.num_elements() for v in values]
    return [tf.reshape(part, v.shape) for part, v in zip(tf.split(total, sizes), values)]


def num_replicas():
  """The replicas that the calling code runs on (1 outside a strategy's replicas)."""
  if _OneTrace.current is not None:
    return _OneTrace.current.num_replicas
  ctx = tf.distribute.get_replica_context()
  return 1 if ctx is None else ctx.num_replicas_in_sync


def _merge_sum(strategy, *values):
  return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM,
                                           [(v, v) for v in values])


def sum_over_replicas(values):
  """The sums of a list of tensors over the replicas, on every replica (replica context).

  Under MirroredStrategy one merge_call for the list. Not differentiable: the
  synchronized batch norm, which needs the gradient, writes its own (ops.BatchNorm).
  ReplicaContext.all_reduce, which other strategies keep, wraps every call in
  tf.custom_gradient, whose check for variables walks back from the result over every
  replica's ops, once per call: with an all-reduce per batch norm, a 2-replica search
  graph took minutes to build under MirroredStrategy.
  """
  values = list(values)
  if _OneTrace.current is not None:
    return _OneTrace.current.sum(values)
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return values
  if not isinstance(ctx.strategy, tf.distribute.MirroredStrategy):
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)
  return list(ctx.merge_call(_merge_sum, args=values))


def can_trace_once(strategy):
  """Whether ReplicasTracedOnce serves the strategy: MirroredStrategy on one machine, more
  than one replica, and called outside a strategy's scope (its ordering tokens are plain
  variables)."""
  return (isinstance(strategy, tf.distribute.MirroredStrategy) and
          strategy.num_replicas_in_sync > 1 and not tf.distribute.has_strategy())


class ReplicasTracedOnce:
  """A replica function of a one-machine MirroredStrategy, traced once for all replicas.

  MirroredStrategy.run traces the function once per replica, one after the other: the
  first step of N replicas took more than N times the first step of one (README,
  Performance, Replicas). This traces it once, on the first device, with every variable
  read and written as the first replica's copy and the sums over the replicas as
  collective ops (sum_over_replicas); then each device calls that one function with its
  own copies of the variables. Same values as strategy.run (tests/search/searcher_test.py).

  It uses TensorFlow's and Keras' private attributes (a Keras variable's `_value`, an
  optimizer's `_distribution_strategy`, a concrete function's captured inputs and
  `_call_flat`); NotTracedOnce when the trace reaches a variable it cannot map (the
  caller then runs strategy.run).
  """

  def __init__(self, strategy, fn, keras_variables, optimizers, trackable):
    self.strategy, self.fn = strategy, fn
    self.keras_variables = list({id(v): v for v in keras_variables}.values())
    self.optimizers = list(optimizers)
    self.devices = strategy.extended.worker_devices
    n = len(self.devices)
    # Orders each device's collectives as its copy of the function makes them.
    self.tokens = []
    for device in self.devices:
      with tf.device(device):
        self.tokens.append(tf.Variable(0.0, trainable=False, name="collective_order"))
    # Each captured handle of the first replica's copies -> the handle of replica i's.
    self.handles = [{} for _ in range(n)]
    distributed = [v for v in tf.train.TrackableView(trackable).descendants()
                   if isinstance(v, tf.distribute.DistributedValues)]
    for value in distributed + [v._value for v in self.keras_variables]:  # pylint: disable=protected-access
      if isinstance(value, tf.distribute.DistributedValues):
        for i in range(n):
          self.handles[i][id(value.values[0].handle)] = value.values[i].handle
    for i in range(n):
      self.handles[i][id(self.tokens[0].handle)] = self.tokens[i].handle
    self.function = None

  def _trace(self, structure, specs):
    def replica(replica_id, *flat):
      _OneTrace.current = _OneTrace(len(self.devices), replica_id, self.tokens[0].handle)
      try:
        return self.fn(*tf.nest.pack_sequence_as(structure, flat))
      finally:
        _OneTrace.current = None

    # pylint: disable=protected-access
    saved = [v._value for v in self.keras_variables]
    strategies = [o._distribution_strategy for o in self.optimizers]
    try:
      for v in self.keras_variables:
        if isinstance(v._value, tf.distribute.DistributedValues):
          v._value = v._value.values[0]
      for o in self.optimizers:
        o._distribution_strategy = tf.distribute.get_strategy()
      with tf.device(self.devices[0]):
        # Called, not inlined: inlined into the caller, each device's copy took longer.
        function = tf.function(replica, experimental_attributes={"_noinline": True}
                               ).get_concrete_function(
                                   tf.TensorSpec([], tf.int32), *specs)
    finally:
      for v, value in zip(self.keras_variables, saved):
        v._value = value
      for o, s in zip(self.optimizers, strategies):
        o._distribution_strategy = s
    unmapped = [c for c in function.captured_inputs
                if c.dtype == tf.resource and id(c) not in self.handles[0]]
    if unmapped:
      raise NotTracedOnce(f"{len(unmapped)} resources of the step are not variables' copies")
    return function

  def __call__(self, *args):
    """The replicas' outputs (a dict of tensors each), summed over the replicas."""
    per_device = [tf.nest.map_structure(
        lambda v, i=i: self.strategy.experimental_local_results(v)[i], args)
        for i in range(len(self.devices))]
    if self.function is None:
      self.function = self._trace(per_device[0], [tf.TensorSpec(t.shape, t.dtype)
                                                  for t in tf.nest.flatten(per_device[0])])
    outputs = []
    for i, device in enumerate(self.devices):
      with tf.device(device):
        captured = [self.handles[i].get(id(c), c) for c in self.function.captured_inputs]
        outputs.append(self.function._call_flat(  # pylint: disable=protected-access
            [tf.constant(i), *tf.nest.flatten(per_device[i])], captured))
    return {k: tf.add_n([out[k] for out in outputs]) for k in outputs[0]}


class NotTracedOnce(Exception):
  """ReplicasTracedOnce cannot run this replica function."""


def first_replica_copier(strategy, variables):
  """A function that gives every replica the first replica's values of `variables` (None
  with one replica).

  Keras keeps a batch norm's moving statistics as mirrored variables that each replica
  updates with its own batch (without synchronized batch norm): the copies drift apart,
  and a checkpoint keeps the first replica's. Copying it to the others before an
  evaluation makes every replica evaluate the network that is saved and exported.
  """
  if strategy.num_replicas_in_sync == 1 or not variables:
    return None

  def copy():
    ctx = tf.distribute.get_replica_context()
    first = tf.equal(ctx.replica_id_in_sync_group, 0)
    values = [tf.where(first, v.value, tf.zeros_like(v.value)) for v in variables]
    for v, value in zip(variables, ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)):
      v.assign(value)

  return tf.function(lambda: strategy.run(copy))


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
  if _OneTrace.current is not None:
    replica = _OneTrace.current.replica_id
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
  # Each worker reads the same batches and keeps its replicas' slices of each, so that the
  # replicas see the examples they would see on one machine (no sharding by files).
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  dataset = dataset.with_options(options)
  if strategy.num_replicas_in_sync == 1 and all(
      "CPU" in d.upper() for d in strategy.extended.worker_devices):
    return iter(dataset)
  return iter(strategy.experimental_distribute_dataset(dataset))


def _in_multi_worker_mode(strategy):
  mode = getattr(getattr(strategy, "extended", None), "_in_multi_worker_mode", None)
  return bool(mode and mode())


def workers(strategy):
  """The Workers of a multi-worker strategy; None for a one-process strategy."""
  return Workers(strategy) if _in_multi_worker_mode(strategy) else None


class WorkerLost(RunError):
  """Another worker stopped answering (it died, or its machine did)."""


# How a collective fails when another worker is gone: TensorFlow aborts the collectives
# once its heartbeats miss a worker (or the connection breaks).
COLLECTIVE_FAILURES = (tf.errors.UnavailableError, tf.errors.CancelledError,
                       tf.errors.InternalError, tf.errors.DeadlineExceededError,
                       tf.errors.AbortedError)


def _digest(value):
  text = json.dumps(value, sort_keys=True, default=str)
  return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)  # fits an int64


class Workers:
  """The processes of one multi-worker run, as each of them sees the others.

  Every worker computes every step; the chief (distribute.is_chief) alone writes the
  run's files. The exchanges below are collectives: every worker makes each of them, in
  the same order.
  """

  def __init__(self, strategy):
    self.strategy = strategy
    resolver = strategy.cluster_resolver
    self.task = f"{resolver.task_type} {resolver.task_id}"
    # The workers in the order of the collectives (the chief first, where there is one).
    cluster = resolver.cluster_spec().as_dict()
    self.names = [f"{job} {i}" for job in ("chief", "worker")
                  for i in range(len(cluster.get(job, [])))]
    self.chief = is_chief(strategy)
    self.scratch_name = f"workertemp_{resolver.task_type}_{resolver.task_id}"

  def gather(self, values):
    """Each worker's list of int64 `values`, in the workers' order (the chief first)."""
    local = tf.constant([values], tf.int64)
    try:
      rows = self.strategy.gather(self.strategy.run(lambda: tf.identity(local)), axis=0)
    except COLLECTIVE_FAILURES as e:
      raise WorkerLost(lost_line(e)) from None
    per_worker = len(self.strategy.extended.worker_devices)
    return rows.numpy()[::per_worker].tolist()

  def check_same(self, values, hint):
    """Refuses (UserInputError, on every worker) a run whose workers differ in one of
    `values` ({what: a JSON-able value}, `what` as messages name it); `hint` says what to
    do."""
    names = sorted(values)
    rows = self.gather([_digest(values[name]) for name in names])
    for k, name in enumerate(names):
      differ = [i for i, row in enumerate(rows) if row[k] != rows[0][k]]
      if differ:
        raise UserInputError(f"{self.names[differ[0]]} differs from {self.names[0]} in {name} "
                             f"(this is {self.task}): {hint}")

  def any(self, flags):
    """Each of `flags` (ints) as the first worker that set it (non-zero) has it; else 0."""
    rows = self.gather(flags)
    return [next((row[k] for row in rows if row[k]), 0) for k in range(len(flags))]


def lost_line(error):
  """What a worker says when a collective failed because another worker is gone."""
  text = getattr(error, "message", None) or str(error)
  # TensorFlow names the tasks whose heartbeats stopped after the word "unhealthy".
  gone = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text.partition("unhealthy")[2])
  who = f"{gone[0][0]} {gone[0][1]}" if gone else "another worker"
  return (f"lost contact with {who} (it stopped or its machine did): start every worker "
          "again to resume from the last checkpoint")
