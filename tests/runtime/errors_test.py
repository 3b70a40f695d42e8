"""The one-line helpers of tfnas/runtime/errors.py that the library's messages share."""
import numpy as np
import pytest

from tfnas.runtime import errors
from tfnas.runtime.errors import UserInputError


class _TFLike(Exception):
  message = "{{function_node __inference_save_7}} disk full [Op:SaveV2]\nmore detail"


def test_first_line_of_an_exception_a_message_and_stderr():
  assert errors.first_line(ValueError("\n  bad value  \nsecond")) == "bad value"
  assert errors.first_line(_TFLike()) == "disk full"  # its message, without TF's noise
  assert errors.first_line(OSError()) == "OSError"  # no message: at least its type
  assert errors.first_line(b"\ndot: syntax error\nline 2") == "dot: syntax error"
  assert errors.first_line(None) == errors.first_line(b"") == ""
  assert errors.first_line("x" * 300, limit=200) == "x" * 197 + "..."


def test_is_int_and_check_int():
  assert errors.is_int(3) and errors.is_int(np.int64(3))
  assert not errors.is_int(True) and not errors.is_int(3.0)
  errors.check_int("epochs", np.int32(2), minimum=1)
  with pytest.raises(UserInputError, match="epochs must be an integer, got True"):
    errors.check_int("epochs", True)
  with pytest.raises(UserInputError, match="epochs must be at least 1, got 0"):
    errors.check_int("epochs", 0, minimum=1)
