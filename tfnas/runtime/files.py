"""Files a run reads and leaves behind: checked JSON reads, atomic JSON writes, the model_dir lock.

Pure Python (no TensorFlow), so every tool can use it cheaply.
"""
import contextlib
import datetime
import fcntl
import json
import os
import secrets
import socket
import sys

from tfnas.runtime.errors import RunError
from tfnas.runtime.errors import UserInputError


def read_json(path, what=None, expect=None):
  """A JSON file's content; one UserInputError line naming the file when it cannot be used.

  what: how the file is named in messages ('genotype file' gives 'genotype file PATH ...').
  expect: dict or list: the type the top level must have.
  """
  label = f"{what} {path}" if what else path
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise UserInputError(f"{what or 'file'} not found: {path}") from None
  except OSError as e:
    raise UserInputError(f"cannot read {label}: {e.strerror}") from None
  except UnicodeDecodeError as e:
    raise UserInputError(f"cannot read {label}: {e}") from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserInputError(f"{label} is not valid JSON: {e.msg} at line {e.lineno} column "
                         f"{e.colno}") from None
  if expect is not None and not isinstance(obj, expect):
    raise UserInputError(f"{label} holds a JSON {_json_type(obj)}, not a JSON "
                         f"{_json_type(expect())}")
  return obj


def _json_type(obj):
  return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
      type(obj), "number")


def write_text(text, path):
  """Writes a file atomically (a temp file renamed over it): a reader never sees half a file.

  The file gets the mode any new file gets (0666 less the umask), as open() would give it.
  """
  directory, name = os.path.split(os.path.abspath(path))
  tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
  try:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
      os.replace(tmp, path)
    except BaseException:
      os.unlink(tmp)
      raise
  except OSError as e:
    raise RunError(f"cannot write {path}: {e.strerror}") from None


def write_json(obj, path, indent=1):
  """Writes JSON atomically (see write_text); RunError when it cannot be written."""
  write_text(json.dumps(obj, indent=indent) + "\n", path)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def model_dir_lock(model_dir):
  """Holds model_dir for one run; UserInputError naming the holder when another process has it.

  An advisory lock (flock) on model_dir/.lock, which also records the holder
  (pid, host, start time, command) for the message a second process gets. The
  operating system drops the lock when its process ends, even by SIGKILL, so a
  killed run never blocks its own resume. Creates model_dir. (In a multi-worker
  run only the chief, which writes model_dir, takes it: loop.model_dir_lock.)
  """
  try:
    os.makedirs(model_dir, exist_ok=True)
    fd = os.open(os.path.join(model_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise UserInputError(f"cannot write to model_dir {model_dir}: {e.strerror}") from None
  with os.fdopen(fd, "r+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserInputError(f"model_dir {model_dir} is in use by {_holder(f.read())}: wait for "
                           "it to end or use another --model_dir") from None
    f.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                        "command": " ".join(sys.argv)}) + "\n")
    f.flush()
    yield  # closing the file releases the lock


def _holder(text):
  """'process 123 on host, started ... (command)' from a lock file's text."""
  try:
    holder = json.loads(text)
    line = f"process {holder['pid']} on {holder['host']} since {holder['started']}"
  except (ValueError, TypeError, KeyError):  # being written this very moment, or not ours
    return "another process"
  command = str(holder.get("command", ""))
  if len(command) > 160:
    command = command[:157] + "..."
  return f"{line} ({command})" if command else line


# The section that tells a search's params.json from a training's.
_KINDS = {"search": "search", "train": "training"}


# A setting added to tfnas is off (None or False) by default, and off it behaves as tfnas did
# before it: a run written before it resumes with it off.
_OFF = (None, False)


def prepare_model_dir(model_dir, params, resumable, what):
  """Writes params.json, refusing a model_dir that holds a run of another kind or configuration.

  `resumable` lists the (section, key) settings that may change on resume; `what`
  names the run ('search' or 'training') in messages. A setting the stored params
  lack is accepted when it is off (None or False). Take files.model_dir_lock first.
  """
  path = os.path.join(model_dir, "params.json")
  if os.path.lexists(path):
    old = read_json(path, expect=dict)
    held = next((name for key, name in _KINDS.items() if key in old), None)
    if held is None:
      raise UserInputError(f"{path} is neither a search's nor a training's: use another "
                           "--model_dir")
    if held != what:
      raise UserInputError(f"{model_dir} holds a {held}, not a {what}: use another --model_dir")
    new = json.loads(json.dumps(params))
    for section, values in new.items():
      if section == "derived":
        continue
      stored = old.get(section) or {}
      if not isinstance(stored, dict):
        raise UserInputError(f"{path}: '{section}' must be a JSON object, not {stored!r}")
      for key in sorted(set(stored) | set(values or {})):
        if (section, key) in resumable:
          continue
        a, b = stored.get(key), (values or {}).get(key)
        if key not in stored and any(b is off for off in _OFF):  # not 0, which == False
          continue  # a setting added since, off: the older run's behaviour
        if key not in stored:
          raise UserInputError(
              f"{model_dir} holds a {what} of an older tfnas, which had no setting "
              f"{section}.{key}: this version cannot resume it; use another --model_dir")
        if a != b:
          raise UserInputError(
              f"{model_dir} holds a {what} with {section}.{key}={a!r}, not {b!r}: "
              f"use another --model_dir, or the same settings to resume")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise UserInputError(f"cannot write to model_dir {model_dir}: {e.strerror}") from None
  try:
    write_json(params, path)
  except RunError as e:
    raise UserInputError(str(e)) from None
  return path
