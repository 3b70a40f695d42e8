"""tools/search.py end to end: the paper presets on a tiny network, resume, and bad input."""
import dataclasses
import glob
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.runtime import cli_test
from tfnas.methods import presets
from tfnas.spaces.darts_cell import genotype as genotype_lib

pytestmark = pytest.mark.slow  # every test runs tools/search.py in its own process

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The presets' optimization settings, on a tiny network and a slice of the digits.
# One cell (a reduction cell): every test here traces a step in its own process.
TINY = ["--dataset=digits", "--steps=2", "--layers=1", "--init_channels=4", "--epochs=1",
        "--train_split=train[:128]", "--val_split=train[128:256]", "--log_every_steps=1"]


def run_tool(tool, *args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=900)


def _load(model_dir, name):
  with open(os.path.join(model_dir, name)) as f:
    return json.load(f)


@pytest.mark.parametrize("method,expected", [
    ("darts", {"learning_rate": 0.025, "batch_size": 64, "arch_learning_rate": 3e-4,
               "arch_beta1": 0.5}),
    ("fair_darts", {"learning_rate": 0.005, "batch_size": 128, "arch_learning_rate": 3e-3,
                    "arch_beta1": 0.9}),
    ("noisy_darts", {"learning_rate": 0.05, "batch_size": 128, "arch_learning_rate": 3e-4,
                     "arch_beta1": 0.5}),
])
def test_search_tool_runs_each_preset(method, expected, tmp_path):
  model_dir = str(tmp_path / "run")
  result = run_tool("search.py", f"--flagfile=flags/{method}_cifar10.flags", *TINY,
                    f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert cli_test.foreign_lines(result.stderr) == []  # tfnas' own lines only, no TensorFlow's
  assert ("undecided weights: " in result.stdout) == (method == "fair_darts")

  params = _load(model_dir, "params.json")
  for key, value in expected.items():
    assert params["search"][key] == pytest.approx(value), key
  assert params["search"]["weight_decay"] == pytest.approx(3e-4)
  assert params["search"]["arch_weight_decay"] == pytest.approx(1e-3)
  assert params["data"]["seed"] == params["search"]["seed"]  # orders a folder's splits
  primitives = params["search_space"]["primitives"]
  assert ("none" in primitives) == (method == "darts") and len(primitives) == 8 - (
      method != "darts")
  method_params = params["method"]
  assert method_params["relaxation"] == ("sigmoid" if method == "fair_darts" else "softmax")
  assert method_params["zero_one_weight"] == (10.0 if method == "fair_darts" else 0.0)
  if method == "noisy_darts":
    assert method_params["noise"] == {"type": "gaussian", "mixture": "additive", "mean": 0.0,
                                      "factor": 0.2, "cosine_decay": False}
  else:
    assert method_params["noise"] is None
  assert method_params["skip_drop_prob"] == 0.0  # the papers' presets

  # The printed genotype is the file's, and it is what the alphas give under the rule.
  printed = json.loads(result.stdout.splitlines()[0])
  assert printed == _load(model_dir, "genotype.json")
  alphas = _load(model_dir, "alphas.json")
  assert np.array(alphas["normal"]).shape == (5, len(primitives))
  rule = method_params["selection_rule"]
  assert genotype_lib.to_json(genotype_lib.derive_from_alphas_json(alphas, rule)) == printed
  assert os.listdir(os.path.join(model_dir, "train")) and os.listdir(
      os.path.join(model_dir, "validation"))
  assert "genotype.json: " + os.path.join(model_dir, "genotype.json") in result.stdout

  # The closing summary: the derived network's size (or why there is none) and the wall time.
  summary = dict(line.split(": ", 1) for line in result.stdout.splitlines()[1:] if ": " in line)
  assert re.fullmatch(r"\d+:\d\d", summary["wall time"])
  derived = [line for line in result.stdout.splitlines() if line.startswith("derived network")]
  assert len(derived) == 1
  if method == "darts":  # the DARTS rule always keeps two inputs per node
    # 8x8 digits are too small for the auxiliary head: counted without it.
    assert re.fullmatch(r"derived network \(C=36, 20 cells, 8x8 images\): [\d,]+ params, "
                        r"[\d,]+ MACs", derived[0])

  if method == "fair_darts":
    # derive.py re-derives with another rule, without searching again.
    out = run_tool("derive.py", f"--alphas={model_dir}/alphas.json", "--rule=darts")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == genotype_lib.to_json(
        genotype_lib.derive_from_alphas_json(alphas, "darts"))
    # Running again with the same model_dir resumes: the search is already complete.
    again = run_tool("search.py", f"--flagfile=flags/{method}_cifar10.flags", *TINY,
                     f"--model_dir={model_dir}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already complete" in again.stderr
    assert json.loads(again.stdout.splitlines()[0]) == printed
  if method == "darts":
    _check_the_second_order_preset(params, alphas, tmp_path / "v2")


def _check_the_second_order_preset(darts_params, darts_alphas, model_dir):
  """darts_v2_cifar10.flags is the darts preset with --unrolled, and runs."""
  result = run_tool("search.py", "--flagfile=flags/darts_v2_cifar10.flags", *TINY,
                    f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  v2 = _load(model_dir, "params.json")
  assert v2["search"]["unrolled"] is True and darts_params["search"]["unrolled"] is False
  v2["search"]["unrolled"] = False
  for section in ("search", "method", "search_space", "data"):
    assert v2[section] == darts_params[section], section
  assert _load(model_dir, "alphas.json") != darts_alphas


def test_official_noisy_darts_preset_drops_the_skip_and_warns_of_an_ignored_threshold(tmp_path):
  # The official-code preset is the paper's plus drop-path 0.3 on the skip branch; a
  # --threshold under the darts rule has no effect, which one warning line says.
  model_dir = str(tmp_path / "run")
  result = run_tool("search.py", "--flagfile=flags/noisy_darts_official_cifar10.flags", *TINY,
                    "--threshold=0.9", f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  params = _load(model_dir, "params.json")["method"]
  assert params["skip_drop_prob"] == 0.3
  assert {**params, "skip_drop_prob": 0.0, "threshold": 0.85} == json.loads(json.dumps(
      dataclasses.asdict(presets.get_method("noisy_darts"))))
  warnings = [line for line in result.stderr.splitlines() if "threshold=0.9: no effect" in line]
  assert len(warnings) == 1, result.stderr[-3000:]


def _image_folder(root, size, per_class=4):
  from PIL import Image
  rng = np.random.default_rng(0)
  for label in ("a", "b"):
    os.makedirs(root / label)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
          root / label / f"{i}.png")
  return str(root)


def test_search_tool_in_float16_with_loss_scaling(tmp_path):
  model_dir = str(tmp_path / "run")
  result = run_tool("search.py", "--method=darts", *TINY, "--precision=mixed_float16",
                    f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert _load(model_dir, "params.json")["search"]["precision"] == "mixed_float16"
  alphas = _load(model_dir, "alphas.json")
  assert np.all(np.isfinite(alphas["reduce"])) and np.any(np.array(alphas["reduce"]) != 0)
  assert genotype_lib.from_json(_load(model_dir, "genotype.json")).normal
  # Both loss scales are saved (a resumed run goes on with them) and shown in TensorBoard.
  import tensorflow as tf
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
  for name in ("arch_loss_scale", "weight_loss_scale"):
    scale = reader.get_tensor(f"{name}/scale/.ATTRIBUTES/VARIABLE_VALUE")
    assert 1 <= scale <= 2**16 and np.log2(scale) == int(np.log2(scale))
  for split in ("train", "validation"):
    tags = {v.tag for path in glob.glob(os.path.join(model_dir, split, "events.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for v in event.summary.value}
    assert {"loss_scale", "updates_skipped"} <= tags, split


BAD_INPUTS = {
    "unknown dataset": (["--dataset=no_such_dataset_xyz"], "unknown dataset 'no_such_dataset_xyz'"),
    "empty split": (["--train_split=train[:0]"], "is empty"),
    # Refused before the data loads (which would fail here).
    "unknown op": (["--primitives=skip_connect,conv_9x9", "--dataset=cifar10", "--nodownload",
                    "--tfds_data_dir={tmp}/tfds"], "unknown op 'conv_9x9'"),
    "classes": (["--num_classes=5"], "num_classes=5 does not fit digits, which has 10 classes"),
    "no classes": (["--num_classes=0"], "num_classes must be >= 2, got 0"),
    "same splits": (["--val_split=train[:64]"], "are the same images"),
    "batch": (["--batch_size=512"], "512"),
    "not downloaded": (["--dataset=cifar10", "--nodownload", "--tfds_data_dir={tmp}/tfds"],
                       "tfds build cifar10"),
    "too small": (["--dataset={folder}", "--image_size=6", "--train_split=train[:50%]",
                   "--val_split=train[50%:]", "--batch_size=4"],
                  "images of 6x6 do not fit 2 reductions"),
    "model_dir": (["--model_dir=/proc/no/such/dir"], "cannot write to model_dir /proc/no/such/dir"),
    "cell flags for a chain": (["--search_space=chain"], "the chain space has no setting "
                               "init_channels, layers, primitives, steps"),
    "chain flags for a cell": (["--layout=proxy", "--se_ratio=0.25"],
                               "the darts_cell space has no setting layout, se_ratio"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(case, tmp_path):
  args, message = BAD_INPUTS[case]
  folder = _image_folder(tmp_path / "images", 6) if case == "too small" else ""
  args = [a.format(tmp=tmp_path, folder=folder) for a in args]
  if not any(a.startswith("--model_dir") for a in args):
    args.append(f"--model_dir={tmp_path}/run")
  result = run_tool("search.py", "--primitives=skip_connect,sep_conv_3x3", "--steps=1",
                    "--layers=3", "--init_channels=4", "--epochs=1", "--batch_size=16",
                    "--train_split=train[:64]", "--val_split=train[64:128]", *args)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]


def test_a_model_dir_of_another_search_is_refused(tmp_path):
  model_dir = f"--model_dir={tmp_path}"
  small = ["--primitives=skip_connect,sep_conv_3x3", "--steps=1", "--init_channels=4",
           "--epochs=1", "--batch_size=16", "--train_split=train[:16]",
           "--val_split=train[16:32]"]
  first = run_tool("search.py", *small, "--layers=3", model_dir)
  assert first.returncode == 0, first.stderr[-3000:]
  before = _load(tmp_path, "alphas.json")
  second = run_tool("search.py", *small, "--layers=4", model_dir)
  assert second.returncode == 2
  assert "error: " + str(tmp_path) + " holds a search with search_space.layers=3, not 4" in (
      second.stderr)
  assert _load(tmp_path, "alphas.json") == before  # nothing written was lost


# A tiny chain and a small folder in place of ImageNet: the presets' other values hold.
TINY_CHAIN = ["--layout=8:1,8:2", "--kernels=3,5", "--expansions=3", "--stem_channels=8",
              "--first_channels=8", "--head_channels=8", "--width_multiplier=1", "--epochs=1",
              "--batch_size=4", "--log_every_steps=1"]


@pytest.mark.parametrize("preset, expected", [
    ("fair_darts_imagenet", {"method": "fair_darts", "zero_one_weight": 10.0,
                             "arch_learning_rate": 3e-3, "learning_rate": 0.125}),
    ("noisy_darts_imagenet", {"method": "noisy_darts", "noise_factor": 0.2,
                              "arch_learning_rate": 3e-4, "learning_rate": 0.125}),
    ("chain_proxy", {"method": "fair_darts", "arch_learning_rate": 3e-3,
                     "learning_rate": 0.025}),
])
def test_chain_presets_search_and_their_genotype_trains_and_exports(preset, expected, tmp_path):
  # 80 images a class: the ImageNet presets' 10 % and 2.5 % of each class hold a batch.
  folder = _image_folder(tmp_path / "images", 16, per_class=80)
  model_dir = tmp_path / "search"
  result = run_tool("search.py", f"--flagfile=flags/{preset}.flags", *TINY_CHAIN,
                    f"--dataset={folder}", "--image_size=16", f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  params = _load(model_dir, "params.json")
  assert params["data"]["per_class_splits"] is True
  assert params["search_space"]["layout"] == [[8, 1], [8, 2]]
  method = params["method"]
  assert method["relaxation"] == ("sigmoid" if expected["method"] == "fair_darts" else "softmax")
  if "zero_one_weight" in expected:
    assert method["zero_one_weight"] == expected["zero_one_weight"]
  if "noise_factor" in expected:
    assert method["noise"]["factor"] == expected["noise_factor"]
  for key in ("arch_learning_rate", "learning_rate"):
    assert params["search"][key] == pytest.approx(expected[key]), key
  # derive.py gives the search's genotype from its alphas.json and rule.
  derived = run_tool("derive.py", f"--alphas={model_dir}/alphas.json",
                     f"--rule={method['selection_rule']}", f"--threshold={method['threshold']}")
  assert derived.returncode == 0, derived.stderr[-3000:]
  assert json.loads(derived.stdout.splitlines()[-1]) == _load(model_dir, "genotype.json")
  if preset != "chain_proxy":
    return
  # The searched chain retrains with the ImageNet protocol and exports.
  train_dir = tmp_path / "train"
  trained = run_tool("train.py", "--flagfile=flags/train_imagenet.flags",
                     f"--genotype={model_dir}/genotype.json", f"--dataset={folder}",
                     "--image_size=16", "--epochs=1", "--batch_size=4",
                     f"--model_dir={train_dir}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  train_params = _load(train_dir, "params.json")["train"]
  assert (train_params["lr_decay"], train_params["label_smoothing"]) == (0.97, 0.1)
  exported = run_tool("export.py", f"--model_dir={train_dir}", f"--export_dir={tmp_path}/out")
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert "images uint8 [None, 16, 16, 3] -> logits float32 [None, 2]" in exported.stdout


