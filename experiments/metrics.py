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
"""Metric records of a run: ``metrics.jsonl`` and, if installed, TensorBoard.

Each line of ``metrics.jsonl`` is one JSON record with ``step``, ``split``
(``"train"`` or ``"eval"``), ``loss``, the task's metric (``accuracy`` or
``mse``), ``wall_time`` (seconds since the run started, summed over its
segments: a resumed run continues from its checkpoint's) and, for training records, ``steps_per_sec``,
``grad_norm``, ``objective`` and ``skipped`` (updates skipped so far for a
non-finite loss). Only the writing
process (process 0) writes.
"""

import json
import math
import os
from typing import Any, Iterator, Optional

from absl import logging

METRICS_FILE = "metrics.jsonl"


def read(workdir: str) -> list[dict]:
  """The records of ``workdir/metrics.jsonl`` (empty if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _clean(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricsWriter:
  """Appends records to ``metrics.jsonl`` and to TensorBoard when present.

  Args:
    workdir: the run's directory.
    enabled: whether this process writes (process 0 only).
    resume_step: drop records after this step (written by a run that was
      killed after its last checkpoint), so a resumed run's file holds each
      step once. A record of a ``(step, split)`` already in the file is not
      written again (a finished run rerun).
  """

  def __init__(
      self,
      workdir: str,
      enabled: bool = True,
      resume_step: Optional[int] = None,
  ):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    self._written = set()
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None:
      kept = [r for r in read(workdir) if r["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
      self._written = {(r["step"], r["split"]) for r in kept}
    elif os.path.exists(self.path):
      os.remove(self.path)
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top

      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))
    except ImportError:
      logging.info(
          "tensorboardX is not installed; metrics go to %s only.", self.path
      )  # pyformat: disable

  def write(self, step: int, split: str, values: dict, wall_time: float):
    """Writes one record (unless the file holds that step's already)."""
    if not self.enabled or (int(step), split) in self._written:
      return
    self._written.add((int(step), split))
    record = {"step": int(step), "split": split, "wall_time": wall_time}
    record.update({k: _clean(v) for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for key, value in values.items():
        if isinstance(record[key], float):
          self._tb.add_scalar(f"{split}/{key}", record[key], int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def records(
    workdir: str, split: str, key: str
) -> Iterator[tuple[int, float, float]]:
  """``(step, wall_time, value)`` of ``key`` in the ``split`` records."""
  for r in read(workdir):
    if r.get("split") == split and isinstance(r.get(key), (int, float)):
      yield r["step"], r["wall_time"], r[key]
