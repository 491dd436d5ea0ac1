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
JSON record of the step, the config and the run's wall time. Saves are
asynchronous, every ``every`` steps, keeping the last ``keep``; orbax writes
each one to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. Restores always go
against an abstract target (shapes and dtypes from the config), never
against whatever the files hold. orbax joins a tree's keys with ``"."``, so
a key that contains one would be silently merged with another: such trees
are rejected.

Once a save is complete, the writing process seals it: ``manifest.json`` in
the step's directory lists every file with its size and CRC-32. A restore
first checks the newest checkpoint against its manifest (an unsealed one,
from a run killed before sealing, against the files orbax needs) and reads
it; a checkpoint that fails either way is damaged: one log line says which
and why, it is moved to ``<workdir>/damaged_checkpoints/`` (nothing is
deleted) and the previous one is tried. :class:`CheckpointError` says when
none can be read.

A resumed run's config is checked against the one its checkpoint was saved
with (:func:`check_resume`): a changed field that shapes the train state is
a :class:`~experiments.run_spec.ConfigError` naming it with both values;
other changes are logged.
"""

import json
import logging as logging_lib
import os
import shutil
import sys
import threading
from typing import Any, Callable, NamedTuple, Optional
import zlib

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from experiments import builders
from experiments import run_spec as spec_lib

MANIFEST = "manifest.json"
DAMAGED_DIR = "damaged_checkpoints"
# What orbax reads of an unsealed checkpoint (one the run did not seal).
_REQUIRED = ("state/_METADATA", "meta/metadata")
# Config fields that say how long and how visibly a run goes; a resumed run
# may change them without a word beyond the log.
_RUN_LENGTH_FIELDS = (
    "train_steps",
    "log_every",
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "keep_checkpoints",
    "parallel",
    "num_devices",
    "on_nonfinite",
)


class CheckpointError(ValueError):
  """No checkpoint of a work directory can be read."""


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


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(directory: str) -> list[str]:
  """Every file under ``directory`` but the manifest, relative, sorted."""
  out = []
  for root, _, names in os.walk(directory):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), directory)
      if rel != MANIFEST:
        out.append(rel)
  return sorted(out)


def write_manifest(directory: str) -> None:
  """Seals the checkpoint in ``directory``: sizes and CRC-32s of its files."""
  entries = {
      rel: {
          "bytes": os.path.getsize(os.path.join(directory, rel)),
          "crc32": _crc32(os.path.join(directory, rel)),
      }
      for rel in _files(directory)
  }
  tmp = os.path.join(directory, MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"files": entries}, f)
  os.replace(tmp, os.path.join(directory, MANIFEST))


def damage(directory: str) -> Optional[str]:
  """Why the checkpoint in ``directory`` cannot be trusted, or ``None``.

  A sealed checkpoint must hold every file of its manifest with the same
  size and CRC-32; an unsealed one the files orbax reads first.
  """
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    for rel in _REQUIRED:
      if not os.path.exists(os.path.join(directory, rel)):
        return f"{rel} is missing"
    return None
  try:
    with open(path) as f:
      entries = json.load(f)["files"]
  except (OSError, ValueError, KeyError) as e:
    return f"{MANIFEST} cannot be read ({e})"
  for rel, want in sorted(entries.items()):
    full = os.path.join(directory, rel)
    if not os.path.exists(full):
      return f"{rel} is missing"
    size = os.path.getsize(full)
    if size != want["bytes"]:
      return f"{rel} has {size} bytes, {want['bytes']} were written"
    if _crc32(full) != want["crc32"]:
      return f"{rel} differs from what was written (CRC-32)"
  return None


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:300]}"


def _closed_loop_error(error: Optional[BaseException]) -> bool:
  return isinstance(error, RuntimeError) and "Event loop is closed" in str(
      error
  )


class _DropClosedLoopNoise(logging_lib.Filter):
  """Drops the "Event loop is closed" reports of a failed orbax restore.

  When an orbax restore fails, tensorstore's pending reads still complete
  and call back into the event loop that the failed restore closed. Each
  callback's ``RuntimeError`` would print a traceback: as an unraisable
  exception, from a thread, or through the ``asyncio`` logger. Those are
  dropped; every other report goes to the previous hook or handler.
  """

  def __init__(self, unraisable, thread):
    super().__init__()
    self.unraisable = unraisable
    self.thread = thread

  def unraisablehook(self, unraisable):
    if not _closed_loop_error(unraisable.exc_value):
      self.unraisable(unraisable)

  def excepthook(self, args):
    if not _closed_loop_error(args.exc_value):
      self.thread(args)

  def filter(self, record: logging_lib.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not (
        _closed_loop_error(error)
        or "Event loop is closed" in record.getMessage()
    )


_NOISE: list = []


def _drop_closed_loop_noise() -> None:
  if _NOISE:
    return
  noise = _DropClosedLoopNoise(sys.unraisablehook, threading.excepthook)
  sys.unraisablehook = noise.unraisablehook
  threading.excepthook = noise.excepthook
  logging_lib.getLogger("asyncio").addFilter(noise)
  _NOISE.append(noise)


class Restored(NamedTuple):
  """What :meth:`Checkpointer.restore_latest` returns.

  Attributes:
    step: the step of the checkpoint read.
    state: the train state, structured like the target.
    meta: the JSON record saved with it.
    damaged: ``(step, reason)`` of the newer checkpoints that could not be
      read (moved to ``damaged_checkpoints/``).
  """

  step: int
  state: Any
  meta: dict
  damaged: tuple


class Checkpointer:
  """Saves and restores the train state of one work directory.

  Args:
    directory: where the checkpoints live (created if missing; absolute, as
      orbax needs).
    every: save when ``step % every == 0`` (a forced save ignores it).
    keep: how many checkpoints to keep.
    async_save: write in the background (the next save, ``wait`` or
      ``close`` waits for it, then seals it).
  """

  def __init__(
      self, directory: str, every: int, keep: int = 3, async_save: bool = True
  ):
    if not os.path.isabs(directory):
      raise ValueError(
          f"The checkpoint directory must be absolute, got {directory!r}; "
          "pass os.path.abspath(...)."
      )
    self.directory = directory
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=every,
        enable_async_checkpointing=async_save,
    )
    self._manager = self._open()
    self._unsealed: list[int] = []

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory, options=self._options, item_names=("state", "meta")
    )

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

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
    self._seal()
    started = self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
        ),
        force=force,
    )
    if started:
      self._unsealed.append(step)
    return started

  def _seal(self) -> None:
    """Waits for the saves under way and writes their manifests."""
    if not self._unsealed:
      return
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      for step in self._unsealed:
        if os.path.isdir(self.step_directory(step)):
          write_manifest(self.step_directory(step))
    self._unsealed = []

  def _read_meta(self, step: int) -> dict:
    return self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    ).meta

  def _read_state(self, step: int, target: Any) -> Any:
    return self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract(target))
        ),
    ).state

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """The state (structured like ``target``) and meta saved at ``step``."""
    return self._read_state(step, target), self._read_meta(step)

  def _attempt(self, read: Callable[[], Any]) -> tuple[Any, Optional[str]]:
    """``(value, None)``, or ``(None, reason)`` when the files cannot be
    read."""
    try:
      return read(), None
    except Exception as e:  # pylint: disable=broad-except
      # tensorstore and orbax raise many types for damaged files.
      _drop_closed_loop_noise()
      return None, _one_line(e)

  def restore_latest(
      self,
      target: Any,
      check_meta: Optional[Callable[[int, dict], None]] = None,
  ) -> Optional[Restored]:
    """The newest checkpoint that can be read, or ``None`` if there is none.

    Damaged checkpoints (see the module docstring) are logged in one line
    each, moved to ``damaged_checkpoints/`` beside the checkpoint directory
    and skipped.

    Args:
      target: the train state to restore into (shapes and dtypes).
      check_meta: called as ``check_meta(step, meta)`` before the state is
        read; what it raises propagates (a changed config).

    Raises:
      CheckpointError: when there are checkpoints and none can be read.
    """
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      path = self.step_directory(step)
      reason = damage(path) if os.path.isdir(path) else None
      if reason is None:
        meta, reason = self._attempt(lambda: self._read_meta(step))
      if reason is None:
        if check_meta is not None:
          check_meta(step, meta)
        state, reason = self._attempt(lambda: self._read_state(step, target))
        if reason is not None and os.path.exists(os.path.join(path, MANIFEST)):
          # Its files are what was written: the state it holds has another
          # structure than this run's, which an older checkpoint shares.
          raise CheckpointError(
              f"Checkpoint {path} is intact (its manifest checks) but does "
              f"not fit this run's train state: {reason}. Something that "
              "shapes the state changed; train in a new --workdir."
          )
      if reason is None:
        if damaged:
          self._set_aside([s for s, _ in damaged])
        if jax.process_index() == 0 and not os.path.exists(
            os.path.join(path, MANIFEST)
        ):
          write_manifest(path)  # read whole: seal it now
        return Restored(step, state, meta, tuple(damaged))
      logging.warning(
          "Checkpoint %s is damaged (%s); trying the previous one.",
          path,
          reason,
      )  # pyformat: disable
      damaged.append((step, reason))
    if damaged:
      raise CheckpointError(
          f"No checkpoint in {self.directory} can be read: "
          + "; ".join(f"step {s}: {r}" for s, r in damaged)
          + ". Move the directory aside to start over, or train in a new "
          "--workdir."
      )
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged checkpoints out of orbax's directory (kept, not lost)."""
    aside = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        dest, n = os.path.join(aside, str(step)), 1
        while os.path.exists(dest):
          dest, n = os.path.join(aside, f"{step}.{n}"), n + 1
        shutil.move(self.step_directory(step), dest)
        logging.warning("Moved the damaged checkpoint to %s.", dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("haiku_etp_damaged_checkpoints")
    self._manager.close()
    self._manager = self._open()

  def wait(self) -> None:
    """Waits for the saves under way and seals them."""
    self._manager.wait_until_finished()
    self._seal()

  def close(self) -> None:
    self.wait()
    self._manager.close()


_ABSENT = object()  # a config field that one of two configs lacks


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def config_changes(saved: dict, config) -> list[tuple[str, Any, Any]]:
  """``(field, saved value, current value)`` of every field that differs.

  ``saved`` is a config as a checkpoint's JSON record holds it; the current
  ``config`` goes through JSON too, so tuples compare equal to lists.
  """
  now = _flatten(json.loads(json.dumps(config.to_dict())))
  before = _flatten(saved)
  return [
      (k, before.get(k, _ABSENT), now.get(k, _ABSENT))
      for k in sorted(set(now) | set(before))
      if before.get(k, _ABSENT) != now.get(k, _ABSENT)
  ]


def _shape_table(tree) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef, tuple((tuple(l.shape), jnp.dtype(l.dtype)) for l in leaves)


def _config_from(saved: dict, changes=()) -> Any:
  """``saved`` as a ConfigDict, with ``(field, _, value)`` changes applied."""
  config = ml_collections.ConfigDict(saved)
  for field, _, value in changes:
    *parents, name = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    with node.unlocked():
      if value is _ABSENT:
        del node[name]
      else:
        node[name] = value
  return config


def _shaping_fields(saved: dict, changes: list, current) -> list:
  """The changed fields that change the train state's structure."""
  try:
    before = _shape_table(builders.abstract_train_state(_config_from(saved)))
  except Exception:  # pylint: disable=broad-except
    # The saved config no longer builds: every change may be the cause.
    return list(changes)
  if before == _shape_table(current):
    return []
  shaping = []
  for change in changes:
    if change[0] in _RUN_LENGTH_FIELDS:
      continue
    try:
      alone = _shape_table(
          builders.abstract_train_state(_config_from(saved, [change]))
      )
    except Exception:  # pylint: disable=broad-except
      alone = None
    if alone != before:
      shaping.append(change)
  # A combination of changes that only together reshape the state.
  return shaping or [c for c in changes if c[0] not in _RUN_LENGTH_FIELDS]


def _show(value) -> str:
  return "(absent)" if value is _ABSENT else repr(value)


def check_resume(config, workdir: str, template: Any):
  """``check_meta(step, meta)`` for a resume of ``config`` in ``workdir``.

  It raises :class:`ConfigError` when the checkpoint's config differs from
  ``config`` in fields that shape the train state (``template``), naming
  each with both values, and logs the other changes.
  """

  def check(step: int, meta: dict) -> None:
    saved = meta.get("config")
    if not isinstance(saved, dict):
      return
    changes = config_changes(saved, config)
    if not changes:
      return
    shaping = _shaping_fields(saved, changes, template)
    if shaping:
      names = "; ".join(
          f"config.{f}: {_show(a)} in the checkpoint, {_show(b)} now"
          for f, a, b in shaping
      )
      others = [c for c in changes if c not in shaping]
      others = (
          " (Also changed, which alone would be allowed: "
          + "; ".join(
              f"config.{f}: {_show(a)} -> {_show(b)}" for f, a, b in others
          )
          + ".)"
          if others
          else ""
      )
      raise spec_lib.ConfigError(
          f"{workdir} holds a run (checkpoint at step {step}) whose train "
          f"state this config cannot restore; fields that shape it changed: "
          f"{names}. Train in a new --workdir, or drop the override to "
          f"resume.{others}"
      )
    for field, a, b in changes:
      logging.warning(
          "config.%s changed since the checkpoint at step %d: %s -> %s (it "
          "does not shape the train state; the run continues with the new "
          "value).",
          field,
          step,
          _show(a),
          _show(b),
      )  # pyformat: disable

  return check
