"""Export: a trained model_dir to a SavedModel that serves uint8 images without tfnas."""
import json
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas import spaces
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.chain import genotype as chain_genotype
from tfnas.spaces.chain import zoo as chain_zoo
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import networks
from tfnas.spaces.darts_cell import space as cell_space
from tfnas.spaces.darts_cell import zoo
from tfnas.train import export

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Small, with the aux head (32x32 is the least it takes); not the CIFAR
# constants, so the test sees that params.json's mean and std are used.
NETWORK = {"kind": "cifar", "init_channels": 8, "layers": 5, "num_classes": 10,
           "auxiliary": True, "drop_path": "node", "image_shape": [32, 32, 3],
           "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
GENOTYPE = "FairDARTS_a"

# Runs in a fresh interpreter: only TensorFlow and numpy, as a serving client.
_CLIENT = textwrap.dedent("""\
    import json, sys
    import numpy as np
    import tensorflow as tf
    saved_model, images_path, out_path = sys.argv[1:]
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    images = np.load(images_path)
    out = {}
    for n in (1, 5):
      result = serve(images=tf.constant(images[:n]))
      for key, value in result.items():
        out[f"{key}_{n}"] = value.numpy()
    assert "tfnas" not in sys.modules, "loading the export imported tfnas"
    np.savez(out_path, **out)
    _, kwargs = serve.structured_input_signature
    spec = lambda s: [s.dtype.name, s.shape.as_list()]
    print(json.dumps({"inputs": {k: spec(s) for k, s in kwargs.items()},
                      "outputs": {k: spec(s) for k, s in serve.structured_outputs.items()}}))
""")


def _perturb(network, rng):
  """Moves every weight and BN statistic away from its initial value."""
  for v in network.variables:
    if "moving_variance" in v.path:
      v.assign(v * rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    elif v.trainable or "moving_mean" in v.path:
      v.assign_add(rng.normal(0.0, 0.05, v.shape).astype(np.float32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A model_dir laid out as tools/train.py writes it, two checkpoints; the network at the last."""
  model_dir = tmp_path_factory.mktemp("model_dir")
  g = zoo.get(GENOTYPE)
  net = networks.NetworkCIFAR(g, init_channels=8, layers=5, num_classes=10, auxiliary=True,
                                drop_path="node")
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  x = tf.random.stateless_normal([2, 32, 32, 3], seed=[3, 4])
  labels = tf.constant([1, 7])
  with tf.GradientTape() as tape:
    logits, logits_aux = net(x, training=True)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        + 0.4 * tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits_aux))
  optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                net.trainable_variables))
  step = tf.Variable(1, dtype=tf.int64)
  ckpt = tf.train.Checkpoint(model=net, optimizer=optimizer, global_step=step,
                             epoch=tf.Variable(0, dtype=tf.int64))
  manager = tf.train.CheckpointManager(ckpt, str(model_dir / "checkpoints"), max_to_keep=3)
  manager.save(checkpoint_number=1)
  _perturb(net, np.random.default_rng(0))  # the export must take the latest checkpoint
  step.assign(2)
  manager.save(checkpoint_number=2)
  params = {"genotype": genotype_lib.to_json(g), "network": NETWORK,
            "train": {"epochs": 1}, "data": {"dataset": "digits"}}
  (model_dir / "params.json").write_text(json.dumps(params))
  return model_dir, net, g


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  """The trained network, reloaded with load_trained and exported by the library."""
  model_dir, _, _ = trained
  spec, network, params = export.load_trained(str(model_dir))
  export_dir = tmp_path_factory.mktemp("export") / "out"
  paths = export.export(spec, network, params["network"]["mean"], params["network"]["std"],
                        params["network"]["image_shape"], str(export_dir))
  return network, params, paths, spec


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
  """The export run by a client process that has no tfnas: (images, outputs, signature,
  the client's stderr)."""
  images = np.random.default_rng(1).integers(0, 256, [5, 32, 32, 3], dtype=np.uint8)
  return (images, *_serve(exported[2]["saved_model"], images,
                          tmp_path_factory.mktemp("client")))


def _serve(saved_model, images, tmp):
  """(outputs, signature, stderr) of _CLIENT serving `images` from saved_model in a fresh
  process, its files in tmp."""
  np.save(tmp / "images.npy", images)
  result = subprocess.run(
      [sys.executable, "-c", _CLIENT, saved_model, str(tmp / "images.npy"),
       str(tmp / "out.npz")], cwd=tmp, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  signature = json.loads(result.stdout.strip().splitlines()[-1])
  return dict(np.load(tmp / "out.npz")), signature, result.stderr


def test_load_trained_restores_the_latest_checkpoint(trained, exported):
  _, net, g = trained
  network, params, _, spec = exported
  assert isinstance(network, networks.NetworkCIFAR)
  assert spec.settings_json() == {k: NETWORK[k] for k in spec.settings_json()}
  assert params["genotype"] == g
  assert network.auxiliary_head is not None and network.cells[0].drop_path_style == "node"
  assert len(network.variables) == len(net.variables)
  for restored, original in zip(network.variables, net.variables):
    np.testing.assert_array_equal(restored.numpy(), original.numpy())


@pytest.mark.slow
def test_fresh_process_serves_what_the_keras_model_computes(trained, served):
  _, net, _ = trained
  images, out, _, _ = served
  x = (images.astype(np.float32) / 255.0 - np.float32(NETWORK["mean"])) \
      / np.float32(NETWORK["std"])
  expected = net(tf.constant(x), training=False).numpy()
  for n in (1, 5):
    assert out[f"logits_{n}"].shape == (n, 10)
    np.testing.assert_allclose(out[f"logits_{n}"], expected[:n], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[f"probabilities_{n}"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[f"probabilities_{n}"], tf.nn.softmax(expected[:n]),
                               atol=1e-6)
  # Trained-looking weights: the logits are not all alike.
  assert np.ptp(expected) > 1e-3


@pytest.mark.slow
def test_loading_the_export_warns_of_nothing(served):
  """The network has 5x5 separable convs, which train with custom gradients: the
  SavedModel is traced without them, so its loader has none to warn about."""
  _, _, _, stderr = served
  assert "custom gradients" not in stderr and "WARNING:" not in stderr.replace(
      "WARNING: All log messages before absl::InitializeLog()", "")


@pytest.mark.slow
def test_signature_takes_uint8_images_of_any_batch(served, exported):
  _, _, signature, _ = served
  paths = exported[2]
  assert signature == {
      "inputs": {"images": ["uint8", [None, 32, 32, 3]]},
      "outputs": {"logits": ["float32", [None, 10]], "probabilities": ["float32", [None, 10]]},
  }
  assert paths["signature"] == ("images uint8 [None, 32, 32, 3] -> logits float32 [None, 10], "
                                "probabilities float32 [None, 10]")


def test_genotype_and_describe_files_agree_with_the_network(trained, exported):
  _, net, g = trained
  paths = exported[2]
  saved_model = pathlib.Path(paths["saved_model"])
  assert (saved_model / "saved_model.pb").is_file()
  assert pathlib.Path(paths["genotype"]).parent == saved_model.parent
  assert pathlib.Path(paths["describe"]).parent == saved_model.parent
  assert genotype_lib.load(paths["genotype"]) == g
  describe = json.loads(pathlib.Path(paths["describe"]).read_text())
  assert describe == {
      "params": networks.count_params(net, include_aux=False),
      "params_with_aux": networks.count_params(net, include_aux=True),
      "macs": networks.count_macs(net, (32, 32)),
      "ops": genotype_lib.count_ops(g, built_only=True),
  }


def test_export_refuses_to_overwrite(exported):
  network, _, paths, spec = exported
  export_dir = str(pathlib.Path(paths["saved_model"]).parent)
  with pytest.raises(UserInputError, match="already holds saved_model, genotype.json"):
    export.export(spec, network, NETWORK["mean"], NETWORK["std"], (32, 32, 3), export_dir)


@pytest.mark.parametrize("mean,std,shape,message", [
    ((0.5, 0.5), (0.2, 0.2, 0.2), (32, 32, 3), "mean must be 3 finite numbers"),
    ((0.5,) * 3, (0.2, 0.0, 0.2), (32, 32, 3), "std must be positive"),
    ((0.5,) * 3, (0.2,) * 3, (32, 32, 1), r"image_shape must be \[height, width, 3\]"),
    ((0.5,) * 3, (0.2,) * 3, (16, 16, 3), "16x16 is too small for the auxiliary head"),
])
def test_serving_module_bad_input_is_user_error(mean, std, shape, message):
  net = networks.NetworkCIFAR(zoo.get("DARTS_V2"), init_channels=4, layers=3)
  with pytest.raises(UserInputError, match=message):
    export.serving_module(net, mean, std, shape)


def _params(**changes):
  """params.json text: a small DARTS_V2 network with `changes` (None drops a key)."""
  params = {"genotype": genotype_lib.to_json(zoo.get("DARTS_V2")), "network": NETWORK}
  params.update(changes)
  return json.dumps({k: v for k, v in params.items() if v is not None})


@pytest.mark.parametrize("text,message", [
    ("{not json", "params.json is not valid JSON"),
    (_params(genotype=None), "params.json: missing key 'genotype'"),
    (_params(network={**NETWORK, "kind": "mobile"}), "params.json: network.kind must be one of"),
    (_params(network={**NETWORK, "layers": 2.5}), "params.json: network.layers must be an int"),
    (_params(network={**NETWORK, "std": [1, 1]}), "params.json: network.std must be 3 finite"),
    (_params(genotype={"normal": []}), "params.json: genotype is missing key 'reduce'"),
])
def test_malformed_params_is_user_error_naming_the_file(tmp_path, text, message):
  (tmp_path / "params.json").write_text(text)
  with pytest.raises(UserInputError, match=message) as e:
    export.load_trained(str(tmp_path))
  assert str(tmp_path / "params.json") in str(e.value)


def test_missing_checkpoint_is_user_error(tmp_path):
  (tmp_path / "params.json").write_text(
      _params(network={**NETWORK, "init_channels": 4, "layers": 3}))
  with pytest.raises(UserInputError, match=r"no checkpoint in .*checkpoints: train first, or "
                     "export an untrained network with --genotype"):
    export.load_trained(str(tmp_path))


@pytest.mark.parametrize("change", [{"init_channels": 12}, {"layers": 6}])
def test_checkpoint_of_another_network_is_user_error(trained, tmp_path, change):
  model_dir, _, g = trained
  (tmp_path / "checkpoints").symlink_to(model_dir / "checkpoints")
  (tmp_path / "params.json").write_text(
      _params(genotype=genotype_lib.to_json(g), network={**NETWORK, **change}))
  with pytest.raises(UserInputError, match="does not fit the network in .*incompatible tensor"):
    export.load_trained(str(tmp_path))


def test_checkpoint_without_the_aux_head_is_user_error(tmp_path):
  small = {**NETWORK, "init_channels": 4, "layers": 3}
  net = spaces.network_spec(zoo.get("DARTS_V2"), init_channels=4, layers=3,
                            auxiliary=False).build()
  net(tf.zeros([1, 32, 32, 3]))
  tf.train.Checkpoint(model=net).save(str(tmp_path / "checkpoints" / "ckpt"))
  (tmp_path / "params.json").write_text(_params(network=small))
  with pytest.raises(UserInputError, match="the network has variables the checkpoint lacks"):
    export.load_trained(str(tmp_path))
  # As it was trained, without the head, it loads.
  (tmp_path / "params.json").write_text(_params(network={**small, "auxiliary": False}))
  _, network, _ = export.load_trained(str(tmp_path))
  assert network.auxiliary_head is None


class _ListModel(keras.Model):
  """Keeps a layer in a list, which Keras 3 leaves out of tf.train.Checkpoint."""

  def __init__(self):
    super().__init__()
    self.parts = [keras.layers.Dense(2)]

  def call(self, x):
    return self.parts[0](x)


def test_variables_missing_from_checkpoints_are_caught():
  model = _ListModel()
  model(tf.zeros([1, 3]))
  with pytest.raises(RuntimeError, match="2 of the network's variables are not in its"):
    export._check_all_in_checkpoint(model)  # pylint: disable=protected-access


def _tool(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_tool_exports_a_model_dir(trained, exported, tmp_path):
  model_dir, _, g = trained
  out = tmp_path / "out"
  result = _tool(f"--model_dir={model_dir}", f"--export_dir={out}")
  assert result.returncode == 0, result.stderr
  assert "trained: restored" in result.stdout and "ckpt-2" in result.stdout
  assert "untrained" not in result.stdout
  for name in ("saved_model", "genotype.json", "describe.json"):
    assert f"{out / name}" in result.stdout
  assert ("signature serving_default: images uint8 [None, 32, 32, 3] -> logits float32 "
          "[None, 10], probabilities float32 [None, 10]") in result.stdout
  assert (out / "saved_model" / "saved_model.pb").is_file()
  assert genotype_lib.load(str(out / "genotype.json")) == g
  library = pathlib.Path(exported[2]["describe"]).read_text()
  assert (out / "describe.json").read_text() == library


@pytest.mark.slow
def test_tool_exports_an_untrained_genotype(tmp_path):
  out = tmp_path / "out"
  result = _tool("--genotype=DARTS_V2", "--init_channels=8", "--layers=5",
                 f"--export_dir={out}")
  assert result.returncode == 0, result.stderr
  assert "untrained: random weights" in result.stdout
  assert "images uint8 [None, 32, 32, 3] -> logits float32 [None, 10]" in result.stdout
  assert genotype_lib.load(str(out / "genotype.json")) == zoo.get("DARTS_V2")
  describe = json.loads((out / "describe.json").read_text())
  assert describe["ops"] == genotype_lib.count_ops(zoo.get("DARTS_V2"), built_only=True)
  assert (out / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_tool_exports_small_images_without_the_auxiliary_head(tmp_path):
  out = tmp_path / "out"
  result = _tool("--genotype=DARTS_V2", "--init_channels=4", "--layers=3", "--image_size=8",
                 "--noauxiliary", f"--export_dir={out}")
  assert result.returncode == 0, result.stderr
  assert "images uint8 [None, 8, 8, 3] -> logits float32 [None, 10]" in result.stdout
  describe = json.loads((out / "describe.json").read_text())
  assert "params_with_aux" not in describe and describe["params"] > 0


@pytest.mark.parametrize("args,message", [
    (["--genotype=DARTS_V2", "--init_channels=4", "--layers=3", "--image_size=8"],
     "too small for the auxiliary head: it needs at least 32x32; leave the head out with "
     "--noauxiliary"),
    (["--model_dir={tmp}/empty", "--noauxiliary"], "--auxiliary only go with --genotype"),
    (["--model_dir={tmp}/empty", "--genotype=DARTS_V2"], "give exactly one of --model_dir"),
    ([], "give exactly one of --model_dir"),
    (["--model_dir={tmp}/empty"], "no params.json in"),
    (["--genotype=NOT_A_GENOTYPE"], "'NOT_A_GENOTYPE' is neither a zoo name"),
    (["--model_dir={tmp}/empty", "--layers=5"], "--layers only go with --genotype"),
    (["--genotype=DARTS_V2", "--export_dir={tmp}/a_file"], "is a file, not a directory"),
])
@pytest.mark.slow
def test_tool_bad_input_is_one_error_line(tmp_path, args, message):
  empty = tmp_path / "empty"
  empty.mkdir()
  (tmp_path / "a_file").write_text("")
  args = [a.format(tmp=tmp_path) for a in args]
  if not any(a.startswith("--export_dir") for a in args):
    args.append(f"--export_dir={tmp_path / 'out'}")
  result = _tool(*args)
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


def test_untrained_network_takes_the_papers_setting_of_its_kind():
  # One library choice for export and describe: the kind picks the class, the defaults and
  # (for export) the mean and std; flags left unset (None) keep the defaults.
  assert cell_space.network_settings("imagenet") == dict(init_channels=48, layers=14,
                                                         num_classes=1000, image_size=224)
  assert cell_space.network_settings("cifar", layers=5, num_classes=None)["layers"] == 5
  spec = spaces.network_spec(zoo.get("DARTS_V2"), None, kind="imagenet", init_channels=8,
                             layers=3, auxiliary=False)
  network, mean, std, shape = export.untrained_network(spec)
  assert isinstance(network, networks.NetworkImageNet) and network.auxiliary_head is None
  assert (mean, std, shape) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (224, 224, 3))
  assert spec.num_classes == 1000 and spec.init_channels == 8
  with pytest.raises(UserInputError, match="unknown network kind 'mnist'"):
    cell_space.network_settings("mnist")


@pytest.mark.slow
def test_a_trained_chain_exports_and_serves_without_tfnas(tmp_path):
  # A model_dir as tools/train.py writes it for a chain; its network perturbed, then exported.
  g = chain_genotype.ChainGenotype(
      layers=(chain_genotype.ChainLayer(((3, 3), (5, 6)), 8, 1),
              chain_genotype.ChainLayer((), 8, 1), chain_genotype.ChainLayer(((7, 3),), 16, 2)),
      activation="swish", outer_activation="relu", se_ratio=0.25, stem_channels=8,
      first_channels=8, head_channels=16)
  spec = spaces.network_spec(g, 5)
  net = spec.build()
  net(tf.zeros([1, 24, 24, 3]))
  _perturb(net, np.random.default_rng(2))
  tf.train.Checkpoint(model=net).save(str(tmp_path / "run" / "checkpoints" / "ckpt"))
  settings = {**spec.settings_json(), "image_shape": [24, 24, 3], "mean": [0.4] * 3,
              "std": [0.3] * 3}
  (tmp_path / "run" / "params.json").write_text(json.dumps(
      {"genotype": spec.genotype_json(), "network": settings}))
  loaded_spec, network, params = export.load_trained(str(tmp_path / "run"))
  assert loaded_spec == spec and params["genotype"] == g
  paths = export.export(loaded_spec, network, settings["mean"], settings["std"], (24, 24, 3),
                        str(tmp_path / "out"))
  assert chain_genotype.load(paths["genotype"]) == g
  assert json.loads(pathlib.Path(paths["describe"]).read_text()) == spec.counts((24, 24))
  images = np.random.default_rng(3).integers(0, 256, [5, 24, 24, 3], dtype=np.uint8)
  served, _, _ = _serve(paths["saved_model"], images, tmp_path)
  x = (images.astype(np.float32) / 255.0 - 0.4) / 0.3
  np.testing.assert_allclose(served["logits_5"], net(x, training=False), rtol=1e-4, atol=1e-4)
  assert served["probabilities_1"].shape == (1, 5)


@pytest.mark.slow
def test_tool_exports_an_untrained_chain(tmp_path):
  result = _tool("--genotype=MobileNetV2", "--image_size=64", "--num_classes=5",
                 f"--export_dir={tmp_path / 'out'}")
  assert result.returncode == 0, result.stderr
  assert "untrained: random weights (the chain network of MobileNetV2" in result.stdout
  assert "images uint8 [None, 64, 64, 3] -> logits float32 [None, 5]" in result.stdout
  describe = json.loads((tmp_path / "out" / "describe.json").read_text())
  assert describe == spaces.network_spec(chain_zoo.get("MobileNetV2"), 5).counts((64, 64))
  refused = _tool("--genotype=MobileNetV2", "--layers=5", f"--export_dir={tmp_path / 'no'}")
  assert refused.returncode == 2
  assert "error: --layers applies to DARTS cells, not to the chain MobileNetV2" in refused.stderr
