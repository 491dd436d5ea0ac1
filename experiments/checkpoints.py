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
"""Checkpoints of a training run with orbax-checkpoint.

A checkpoint is a ``Composite`` of the train state (``StandardSave``) and a
JSON record of the step and the config. Saves are asynchronous, every
``every`` steps, keeping the last ``keep``; orbax writes each one to a
temporary directory and renames it when complete, so a run killed mid-save
leaves the previous checkpoint intact. Restores always go against an
abstract target (shapes and dtypes from the config), never against whatever
the files hold. orbax joins a tree's keys with ``"."``, so a key that
contains one would be silently merged with another: such trees are rejected.
"""

from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def check_keys(tree: Any, what: str = "state") -> None:
  """Raises ``ValueError`` for a mapping key that contains ``"."``."""
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    for entry in path:
      key = getattr(entry, "key", None)
      if isinstance(key, str) and "." in key:
        raise ValueError(
            f"Cannot checkpoint the {what}: the key {key!r} at "
            f"{jax.tree_util.keystr(path)} contains '.', which orbax uses to "
            "join keys, so it would be merged with another entry. Rename the "
            "module, parameter or state."
        )


def abstract(tree: Any) -> Any:
  """Shapes and dtypes of ``tree`` (the restore target)."""
  return jax.tree_util.tree_map(
      lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), tree
  )


class Checkpointer:
  """Saves and restores the train state of one work directory.

  Args:
    directory: where the checkpoints live (created if missing).
    every: save when ``step % every == 0`` (a forced save ignores it).
    keep: how many checkpoints to keep.
    async_save: write in the background (the next save, ``wait`` or
      ``close`` waits for it).
  """

  def __init__(
      self, directory: str, every: int, keep: int = 3, async_save: bool = True
  ):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=every,
        enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(
        directory, options=options, item_names=("state", "meta")
    )

  def latest_step(self) -> Optional[int]:
    """The step of the newest complete checkpoint, or ``None``."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict, force: bool = False):
    """Saves ``state`` (host arrays) and ``meta`` (JSON) at ``step``.

    Returns:
      Whether a save was started.
    """
    check_keys(state)
    return self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
        ),
        force=force,
    )

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """The state (structured like ``target``) and meta saved at ``step``."""
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract(target)),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return restored.state, restored.meta

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
