"""Files a run reads and writes: modes, checked reads, the model_dir lock, params.json checks."""
import json
import os

import pytest

from tfnas.runtime import files
from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import UserInputError
from tfnas.spaces.darts_cell import genotype as genotype_lib
from tfnas.spaces.darts_cell import zoo


@pytest.fixture
def umask():
  def set_umask(mask):
    os.umask(mask)
  previous = os.umask(0o022)
  yield set_umask
  os.umask(previous)


def _put(path, content):
  """Writes `content` to path, or makes path a folder for None."""
  if content is None:
    path.mkdir()
  else:
    path.write_text(content)
  return path


def _mode(path):
  return os.stat(path).st_mode & 0o777


def test_written_files_get_the_mode_of_any_new_file(tmp_path, umask):
  genotype_lib.save(zoo.get("DARTS_V2"), str(tmp_path / "genotype.json"))
  files.write_json({"a": 1}, str(tmp_path / "alphas.json"))
  assert _mode(tmp_path / "genotype.json") == _mode(tmp_path / "alphas.json") == 0o644
  umask(0o077)  # the umask decides, as for open()
  genotype_lib.save(zoo.get("DARTS_V2"), str(tmp_path / "private.json"))
  assert _mode(tmp_path / "private.json") == 0o600
  assert sorted(os.listdir(tmp_path)) == ["alphas.json", "genotype.json", "private.json"]


def test_a_write_that_fails_is_one_run_error_and_leaves_no_temp_file(tmp_path):
  (tmp_path / "taken").mkdir()
  with pytest.raises(RunError, match=f"cannot write {tmp_path}/taken: Is a directory"):
    files.write_json({}, str(tmp_path / "taken"))
  assert os.listdir(tmp_path) == ["taken"]


@pytest.mark.parametrize("content,message", [
    ('{"search": {"epochs": 3', "is not valid JSON: Expecting ',' delimiter at line 1"),
    ("[1, 2]", "holds a JSON list, not a JSON object"),
    ("", "is not valid JSON: Expecting value at line 1 column 1"),
    (None, "cannot read .*: Is a directory"),
])
def test_an_unusable_json_file_is_one_line_naming_it(tmp_path, content, message):
  path = _put(tmp_path / "params.json", content)
  with pytest.raises(UserInputError, match=message) as e:
    files.read_json(str(path), expect=dict)
  assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_the_lock_refuses_a_second_holder_naming_the_first(tmp_path):
  model_dir = str(tmp_path / "run")
  with files.model_dir_lock(model_dir):
    with pytest.raises(UserInputError, match=f"model_dir {model_dir} is in use by process "
                       f"{os.getpid()} on .* since .* UTC \\(.*\\): wait for it to end or use "
                       "another --model_dir"):
      with files.model_dir_lock(model_dir):
        pass
  with files.model_dir_lock(model_dir):  # released at the end of the run
    pass
  assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("content,message", [
    ('{"search": {"epochs": 3', "params.json is not valid JSON"),
    ("[]", "params.json holds a JSON list, not a JSON object"),
    (None, "cannot read .*params.json: Is a directory"),
    ('{"search": 3}', "params.json: 'search' must be a JSON object, not 3"),
    ('{"data": {}}', "params.json is neither a search's nor a training's"),
    ('{"train": {}}', "holds a training, not a search: use another --model_dir"),
    ('{"search": {}}', "holds a search of an older tfnas, which had no setting search.epochs: "
                       "this version cannot resume it"),
])
def test_prepare_model_dir_refuses_an_unusable_params_json(tmp_path, content, message):
  path = _put(tmp_path / "params.json", content)
  with pytest.raises(UserInputError, match=message):
    files.prepare_model_dir(str(tmp_path), {"search": {"epochs": 3}}, set(), "search")
  assert content is None or path.read_text() == content  # nothing overwritten


def test_a_setting_added_since_resumes_an_older_run_only_when_off(tmp_path):
  _put(tmp_path / "params.json", '{"search": {"epochs": 3}}')
  for off in (None, False):
    files.prepare_model_dir(str(tmp_path), {"search": {"epochs": 3, "new": off}}, set(),
                            "search")
    _put(tmp_path / "params.json", '{"search": {"epochs": 3}}')
  for on in (True, 0, "x"):
    with pytest.raises(UserInputError, match="older tfnas, which had no setting search.new"):
      files.prepare_model_dir(str(tmp_path), {"search": {"epochs": 3, "new": on}}, set(),
                              "search")


def test_a_search_model_dir_is_named_a_search_to_train(tmp_path):
  files.prepare_model_dir(str(tmp_path), {"search": {"epochs": 3}}, set(), "search")
  with pytest.raises(UserInputError, match=f"{tmp_path} holds a search, not a training"):
    files.prepare_model_dir(str(tmp_path), {"train": {"epochs": 3}}, set(), "training")
