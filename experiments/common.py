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


def quiet_library_logs() -> None:
  """Drops the info logs of orbax and its helpers (they log through absl)."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
