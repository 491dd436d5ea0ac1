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
"""Sequence tasks for the experiments: a common interface and synthetic tasks.

``base`` defines ``Batch``, ``Task``, the seed streams and the losses and
metrics; ``synthetic`` the generated tasks, also reachable by name through
``get_task``; ``prefetch`` a background batch producer. Tasks built from
datasets on disk live in ``experiments.datasets``.
"""

from experiments.tasks import base
from experiments.tasks import prefetch
from experiments.tasks import synthetic
from experiments.tasks.base import Batch
from experiments.tasks.base import eval_seed
from experiments.tasks.base import evaluation_batches
from experiments.tasks.base import mean_metrics
from experiments.tasks.base import Task
from experiments.tasks.base import train_seed


def _dataset(module: str, factory: str):
  """A dataset task's factory, imported when the task is built (the
  dataset modules need optional packages)."""

  def make(**kwargs):
    import importlib  # pylint: disable=g-import-not-at-top

    mod = importlib.import_module(f"experiments.datasets.{module}")
    return getattr(mod, factory)(**kwargs)

  make.__name__ = factory
  return make


# One lookup for every task: generated in code, then read from datasets.
_FACTORIES = {
    "cue_accumulation": synthetic.cue_accumulation,
    "delayed_copy": synthetic.delayed_copy,
    "adding": synthetic.adding,
    "stream_recall": synthetic.stream_recall,
    "digits": _dataset("digits", "digits_task"),
    "shd": _dataset("shd", "shd_task"),
    "nmnist": _dataset("nmnist", "nmnist_task"),
}
TASKS = tuple(_FACTORIES)
SYNTHETIC_TASKS = (
    "cue_accumulation",
    "delayed_copy",
    "adding",
    "stream_recall",
)


def get_task(name: str, **kwargs) -> Task:
  """Builds the task ``name`` with hyperparameters ``kwargs``.

  Args:
    name: One of ``TASKS``: the tasks generated in ``synthetic`` and the
      dataset tasks of ``experiments.datasets`` (``digits``, ``shd``,
      ``nmnist``).
    **kwargs: Keyword hyperparameters of the task's factory.

  Returns:
    The ``Task``.

  Raises:
    ValueError: If ``name`` is unknown, or a hyperparameter is invalid.
    TypeError: If a hyperparameter is unknown or of the wrong type.
  """
  if name not in _FACTORIES:
    raise ValueError(
        f"get_task: unknown task {name!r}; known tasks: {', '.join(TASKS)}."
    )
  return _FACTORIES[name](**kwargs)
