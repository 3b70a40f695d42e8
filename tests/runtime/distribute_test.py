"""Which workers a multi-worker run has: TF_CONFIG's, a Slurm job step's, or one clear line."""
import json
import re

import pytest

from tfnas.runtime import distribute
from tfnas.runtime.errors import UserInputError

_TWO = {"worker": ["host1:2222", "host2:2222"]}


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
  for name in ("TF_CONFIG", "SLURM_PROCID", "CUDA_VISIBLE_DEVICES"):
    monkeypatch.delenv(name, raising=False)


def test_tf_config_names_the_workers(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": _TWO,
                                              "task": {"type": "worker", "index": 1}}))
  resolver = distribute.cluster_resolver()
  assert resolver.cluster_spec().as_dict() == _TWO
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)


@pytest.mark.parametrize("tf_config, message", [
    (None, "--distribution_strategy=multi_worker needs TF_CONFIG (or a Slurm job step)"),
    ("{'cluster': 1}", "TF_CONFIG is not valid JSON: Expecting property name"),
    (json.dumps({"cluster": _TWO}), 'TF_CONFIG needs "cluster" and "task"'),
    (json.dumps({"cluster": _TWO, "task": {"type": "worker", "index": 2}}),
     "TF_CONFIG's task {\"type\": \"worker\", \"index\": 2} is not one of its cluster"),
    (json.dumps({"cluster": _TWO, "task": {"type": "chief", "index": 0}}),
     "TF_CONFIG's task {\"type\": \"chief\", \"index\": 0} is not one of its cluster"),
    (json.dumps({"cluster": {**_TWO, "ps": ["host3:2222"]},
                 "task": {"type": "worker", "index": 0}}),
     "TF_CONFIG's cluster has ps tasks; tfnas runs only 'chief' and 'worker' tasks"),
])
def test_a_cluster_that_is_not_one_is_one_line(monkeypatch, tf_config, message):
  if tf_config is not None:
    monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(UserInputError, match="^" + re.escape(message)):
    distribute.cluster_resolver()




def test_a_slurm_job_step_names_the_workers(monkeypatch):
  # Two nodes with two tasks each; this process is the job step's task 3.
  for name, value in {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4",
                      "SLURM_STEP_NODELIST": "gpu[07-08]",
                      "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPU
  resolver = distribute.cluster_resolver()
  assert resolver.cluster_spec().as_dict() == {
      "worker": ["gpu07:8888", "gpu07:8889", "gpu08:8888", "gpu08:8889"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 3)


def test_a_broken_slurm_environment_is_one_line(monkeypatch):
  monkeypatch.setenv("SLURM_PROCID", "0")  # and nothing else of a job step
  monkeypatch.setenv("PATH", "/nonexistent")
  with pytest.raises(UserInputError, match="^cannot read the Slurm job's tasks: "):
    distribute.cluster_resolver()
