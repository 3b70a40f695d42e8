"""What every tool shares (tfnas/runtime/cli.py): --help, and TensorFlow's log lines hidden."""
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test runs a tool in its own process

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ("search.py", "train.py", "derive.py", "describe.py", "draw_cells.py", "export.py",
         "benchmark.py")
# tfnas logs through absl: "I1130 04:11:09.012465 140559154748288 searcher.py:344] ..."
_ABSL_LINE = re.compile(r"[DIWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([\w.]+):\d+\] ")


def run_tool(tool, *args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def foreign_lines(stderr):
  """The stderr lines that tfnas did not write (e.g. TensorFlow's): tfnas' own log lines
  come from its files through absl, its other lines say `error:` or `warning:`."""
  own = {p.name for d in ("tfnas", "tools") for p in (ROOT / d).rglob("*.py")}
  lines = []
  for line in stderr.splitlines():
    m = _ABSL_LINE.match(line)
    if not (m and m.group(1) in own) and not line.startswith(("error: ", "warning: ")):
      lines.append(line)
  return lines


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_exits_0(tool, flag):
  result = run_tool(tool, flag)
  assert result.returncode == 0, result.stderr
  assert "tf_logs:" in result.stdout and not result.stderr
  assert ("absl.logging:" in result.stdout) == (flag == "--helpfull")


def test_search_help_lists_the_flags_in_the_readme_groups():
  out = run_tool("search.py", "--help").stdout
  titles = re.findall(r"^(\S[^\n]*):$", out, re.M)
  assert titles == ["data", "space", "method", "optimization", "runtime", "every tool"]
  flags_in = {}
  for title, body in re.findall(r"^(\S[^\n]*):\n((?:  [^\n]*\n?)*)", out, re.M):
    flags_in[title] = re.findall(r"^  --(?:\[no\])?(\w+):", body, re.M)
  assert flags_in["data"][:3] == ["dataset", "train_split", "val_split"]
  assert flags_in["method"][0] == "method" and "zero_one_weight" in flags_in["method"]
  assert "arch_learning_rate" in flags_in["optimization"]
  assert {"model_dir", "precision", "jit_compile"} <= set(flags_in["runtime"])
  assert "other" not in flags_in  # every flag of the tool is in a group


def _flag_help(out):
  """{flag name: its help paragraph, without the default line} of a --help output."""
  found = re.findall(r"^  --(?:\[no\])?(\w+):(.*?)(?=^  --|^\S|\Z)", out, re.M | re.S)
  return {name: re.sub(r"\(default: .*?\)", "", text).split() for name, text in found}


def test_the_flags_tools_share_are_the_same_flags():
  # Defined once (tools/flags_common.py): the same help in every tool that takes them.
  search, train, benchmark = (_flag_help(run_tool(t, "--help").stdout)
                              for t in ("search.py", "train.py", "benchmark.py"))
  shared = ("dataset", "tfds_data_dir", "download", "image_size", "seed", "deterministic",
            "model_dir", "distribution_strategy", "cpu_devices", "tpu", "graph_optimizer",
            "checkpoint_every_steps", "checkpoint_every_secs")
  assert {n: search[n] for n in shared} == {n: train[n] for n in shared}
  step = ("cpu_devices", "graph_optimizer", "precision", "jit_compile")
  assert {n: search[n] for n in step} == {n: benchmark[n] for n in step}
  train_groups = re.findall(r"^(\S[^\n]*):$", run_tool("train.py", "--help").stdout, re.M)
  assert train_groups == ["run", "data", "network", "optimization", "runtime", "every tool"]


def test_describe_prints_no_tensorflow_line():
  result = run_tool("describe.py", "--genotype=DARTS_V2")
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""


def test_tf_logs_brings_tensorflow_lines_back():
  result = run_tool("describe.py", "--genotype=DARTS_V2", "--tf_logs")
  assert result.returncode == 0, result.stderr
  assert foreign_lines(result.stderr)  # e.g. oneDNN's banner as TensorFlow loads


# A module whose import is stopped by SIGTERM, imported as tensorflow is: its stderr held
# back by cli's import hook.
_STOPPED_IMPORT = """
import os, signal, sys, time
sys.path[:0] = [{root!r}, {modules!r}]
from tfnas.runtime import cli

def main(argv):
  cli._hide_tensorflow_logs()  # pylint: disable=protected-access
  sys.meta_path.insert(0, cli._QuietImport("stopped_module"))  # pylint: disable=protected-access
  import stopped_module  # noqa: F401
  print("the import was not stopped", flush=True)

cli.run(main)
"""


def test_a_stop_while_tensorflow_loads_still_prints_the_stop_line(tmp_path):
  (tmp_path / "stopped_module.py").write_text(
      "import os, signal, sys, time\n"
      "print('chatter of the import', file=sys.stderr, flush=True)\n"
      "os.kill(os.getpid(), signal.SIGTERM)\n"
      "time.sleep(30)\n")
  script = _STOPPED_IMPORT.format(root=str(ROOT), modules=str(tmp_path))
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 143, result.stderr
  assert result.stdout == ""
  assert result.stderr.splitlines() == [
      "stopped by SIGTERM with no step since the last checkpoint: run the same command again "
      "to resume"]
