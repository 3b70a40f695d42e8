"""Model_dirs written by tfnas before issue 12's move (commit 3e91dfa) resume after it.

tests/testdata/before_the_move/ holds a tiny search and a tiny training, one epoch each, as
that version's tools wrote them (TensorBoard events left out). Running today's tools with
the same flags and a second epoch must pick up their checkpoints, not refuse or restart.
"""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each test runs a tool in its own process

ROOT = pathlib.Path(__file__).resolve().parents[2]
OLD = ROOT / "tests" / "testdata" / "before_the_move"
# The flags the model_dirs were written with, as their params.json records them.
SEARCH = ["--method=fair_darts", "--primitives=skip_connect,sep_conv_3x3,max_pool_3x3",
          "--steps=2", "--layers=3", "--init_channels=4", "--batch_size=32",
          "--train_split=train[:256]", "--val_split=train[256:512]", "--seed=3"]
TRAIN = ["--genotype=DARTS_V2", "--dataset=digits", "--train_split=train[:320]",
         "--test_split=train[1700:]", "--init_channels=4", "--layers=3", "--batch_size=16",
         "--auxiliary_weight=0", "--cutout=2", "--seed=5"]


def _resume(tool, args, kind, tmp_path):
  model_dir = tmp_path / kind
  shutil.copytree(OLD / kind, model_dir)
  result = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args, "--epochs=2",
                           f"--model_dir={model_dir}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  return model_dir, result


def test_a_search_from_before_the_move_resumes(tmp_path):
  model_dir, result = _resume("search.py", SEARCH, "search", tmp_path)
  assert f"Resuming from {model_dir}/checkpoints/ckpt-8 at step 8" in result.stderr
  assert "epoch 2/2 done" in result.stderr and "epoch 1/2 done" not in result.stderr
  assert (model_dir / "checkpoints" / "ckpt-16.index").exists()


def test_a_training_from_before_the_move_resumes(tmp_path):
  model_dir, result = _resume("train.py", TRAIN, "train", tmp_path)
  assert f"Resuming from {model_dir}/checkpoints/ckpt-20" in result.stderr
  history = json.loads((model_dir / "eval.json").read_text())["history"]
  assert sorted(history) == ["1", "2"]  # epoch 1 from the old run, epoch 2 from this one
