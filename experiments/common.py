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
import tempfile
from typing import Any

from absl import logging


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
