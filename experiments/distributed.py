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
"""Starting JAX's distributed runtime for a run on several processes.

``experiments.train`` reads ``--coordinator_address``, ``--num_processes``,
``--process_id`` and ``--distributed`` and hands them to :func:`initialize`;
unset values fall back to ``$JAX_COORDINATOR_ADDRESS``,
``$JAX_NUM_PROCESSES`` and ``$JAX_PROCESS_ID``. Nothing set means one
process, and nothing is initialized.
"""

import os
from typing import Mapping, Optional

from absl import app
import jax


def _env_int(environ: Mapping[str, str], name: str) -> Optional[int]:
  value = environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise app.UsageError(
        f"${name} must be an integer, got {value!r}."
    ) from None


def settings(
    coordinator_address: Optional[str],
    num_processes: Optional[int],
    process_id: Optional[int],
    distributed: bool = False,
    environ: Optional[Mapping[str, str]] = None,
) -> Optional[tuple]:
  """``(coordinator_address, num_processes, process_id)`` to initialize with.

  Args:
    coordinator_address: ``HOST:PORT`` of process 0, or ``None``.
    num_processes: the number of processes, or ``None``.
    process_id: this process's index, or ``None``.
    distributed: initialize even without an address (a cluster that JAX
      detects by itself); the missing values stay ``None``.
    environ: where the fallbacks are read (default ``os.environ``).

  Returns:
    The triple, or ``None`` for a single-process run.

  Raises:
    app.UsageError: for an incomplete or inconsistent setting.
  """
  environ = os.environ if environ is None else environ
  address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
  num = num_processes
  num = num if num is not None else _env_int(environ, "JAX_NUM_PROCESSES")
  index = process_id
  index = index if index is not None else _env_int(environ, "JAX_PROCESS_ID")
  if address is None and num is None and index is None:
    return (None, None, None) if distributed else None
  if address is not None and (num is None or index is None):
    raise app.UsageError(
        "--coordinator_address needs --num_processes and --process_id too "
        "(or $JAX_NUM_PROCESSES and $JAX_PROCESS_ID)."
    )
  if address is None and not distributed:
    raise app.UsageError(
        "--num_processes/--process_id need --coordinator_address=HOST:PORT "
        "(process 0's address), or --distributed on a cluster JAX detects."
    )
  if num is not None and num < 1:
    raise app.UsageError(f"--num_processes must be >= 1, got {num}.")
  if num is not None and index is not None and not 0 <= index < num:
    raise app.UsageError(
        f"--process_id must be in [0, {num}) for --num_processes={num}, got "
        f"{index}."
    )
  return address, num, index


def initialize(
    coordinator_address: Optional[str],
    num_processes: Optional[int],
    process_id: Optional[int],
    distributed: bool = False,
    timeout_s: int = 300,
    environ: Optional[Mapping[str, str]] = None,
) -> bool:
  """Calls ``jax.distributed.initialize`` when the settings ask for it.

  Call it before anything else touches JAX's devices.

  Returns:
    Whether the distributed runtime was initialized.

  Raises:
    app.UsageError: as :func:`settings`.
  """
  found = settings(
      coordinator_address, num_processes, process_id, distributed, environ
  )
  if found is None:
    return False
  address, num, index = found
  jax.distributed.initialize(
      coordinator_address=address,
      num_processes=num,
      process_id=index,
      initialization_timeout=timeout_s,
  )
  return True
