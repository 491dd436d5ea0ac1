# Copyright 2026 The haiku_etp Authors. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""Helpers shared by the experiment binaries."""

import ctypes
import ctypes.util
import json
import os
import sys
import tempfile
from typing import Any

from absl import flags
from absl import logging
from ml_collections import config_flags


def write_json(path: str, payload: Any) -> None:
  """Writes ``payload`` as JSON to ``path`` atomically (temp file + rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as f:
    json.dump(payload, f, indent=2)
  os.replace(f.name, path)


class _QuietLibraries(logging.logging.Filter):
  """Keeps checkpointing libraries' info chatter out of the progress log."""

  def filter(self, record) -> bool:
    quiet = ("/orbax/", "/etils/", "/tensorstore/")
    # absl's own WARNING constant is its verbosity (1), not Python's level.
    return record.levelno >= logging.logging.WARNING or not any(
        q in record.pathname for q in quiet
    )


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
  """Lets glibc's malloc serve allocations up to ``limit_bytes`` from its
  heap and keep what is freed there, for the rest of the process.

  XLA:CPU allocates a compiled program's temporaries at every call; above
  malloc's default threshold (at most 32 MiB) each is a fresh mapping whose
  pages fault in again (for one sequence gradient of D-RTRL with windows of
  32 on the benchmark's LIF model, a quarter of the call's time). Every
  learner's program gets the same allocator. Returns whether it applied
  (not on other C libraries).
  """
  name = ctypes.util.find_library("c")
  if name is None:
    return False
  try:
    libc = ctypes.CDLL(name)
    ok = libc.mallopt(_M_MMAP_THRESHOLD, limit_bytes) == 1
    return ok and libc.mallopt(_M_TRIM_THRESHOLD, limit_bytes) == 1
  except (OSError, AttributeError):
    return False


def quiet_library_logs() -> None:
  """Drops the info logs of orbax and its helpers (they log through absl)."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


def flag_config(holder) -> Any:
  """The config of a config-file flag (``holder``: what
  ``config_flags.DEFINE_config_file`` returned).

  Raises:
    SystemExit: with one ``error:`` line naming the file when it could not
      be loaded (``ml_collections`` defers that error to the config's first
      use, where it reads as two chained tracebacks).
  """
  config = holder.value
  try:
    getattr(config, "get")  # a config that failed to load raises here
  except OSError as e:
    flag = flags.FLAGS[holder.name]
    given = config_flags.get_config_filename(flag)
    path = given.split(":", 1)[0]
    if not path:
      why = "the path is empty"
    elif not os.path.exists(path):
      why = f"no such file ({os.path.abspath(path)})"
    else:
      cause = e.__cause__ or e
      why = f"cannot load it ({getattr(cause, 'strerror', None) or cause})"
    sys.exit(
        f"error: --{holder.name}={given}: {why}; give a config file, e.g. "
        f"--{holder.name}={flag.default}."
    )
  return config
