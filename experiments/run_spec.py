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
"""A run's config, validated once into a :class:`RunSpec`.

:func:`validate` checks every field before anything is compiled and raises
:class:`ConfigError` naming the field; :func:`run_spec` turns the config into
the typed :class:`RunSpec` that the rest of the pipeline reads. The
learner's options come from the registry (``haiku_etp.learner_spec(name)
.options``): each is read from the config field of its name, or of its
rename in :data:`OPTION_RENAMES` (``form`` from ``es_form``, ``params`` from
``rtrl_params``, ``n`` from ``snap_n``). :func:`learner_window` says which
window ``config.window = 0`` picks, and :func:`resolve_workdir` checks the
run's directory.
"""

import os
from typing import Any, NamedTuple, Optional

from absl import logging
import jax

from experiments import tasks as tasks_lib
import haiku_etp

ES_FORMS = ("window", "fused")
PARALLEL = ("pmap", "mesh")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
ON_NONFINITE = ("stop", "skip")
# The one table of learner options whose config field has another name. Every
# other option of a registered learner (``haiku_etp.learner_spec(name)
# .options``) is read from the config field of its own name, when the config
# has one.
OPTION_RENAMES = {"form": "es_form", "params": "rtrl_params", "n": "snap_n"}
# The window that config.window = 0 gives the online learners.
AUTO_WINDOW = 32


class ConfigError(ValueError):
  """A config or work directory that the run cannot use."""


def _positive_int(config, name: str, minimum: int = 1) -> int:
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(
        f"config.{name} must be an int >= {minimum}, got {value!r}."
    )
  return value


def device_count(config) -> int:
  """The devices a run uses: ``config.num_devices``, or all (0)."""
  return config.num_devices or jax.device_count()


def validate(config) -> None:
  """Raises :class:`ConfigError` (a ``ValueError``) for a bad config, before
  anything is compiled."""
  if config.learner not in haiku_etp.learner_names():
    raise ConfigError(
        f"config.learner must be one of {haiku_etp.learner_names()}, got "
        f"{config.learner!r}."
    )
  if config.parallel not in PARALLEL:
    raise ConfigError(
        f"config.parallel must be one of {PARALLEL}, got {config.parallel!r}."
    )
  es_form = config.get("es_form", "window")
  if es_form not in ES_FORMS:
    raise ConfigError(
        f"config.es_form must be one of {ES_FORMS}, got {es_form!r}."
    )
  if (
      _takes(config.learner, "form")
      and es_form == "fused"
      and config.window not in (0, 1)
  ):
    raise ConfigError(
        f"config.es_form='fused' computes the gradient step by step, so "
        f"config.window must be 1, got {config.window}; use "
        "config.es_form='window' for longer windows."
    )
  on_nonfinite = config.get("on_nonfinite", "stop")
  if on_nonfinite not in ON_NONFINITE:
    raise ConfigError(
        f"config.on_nonfinite must be one of {ON_NONFINITE}, got "
        f"{on_nonfinite!r}."
    )
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(
        f"config.optimizer must be one of {OPTIMIZERS}, got "
        f"{config.optimizer!r}."
    )
  if config.task.name not in tasks_lib.TASKS:
    raise ConfigError(
        f"config.task.name must be one of "
        f"{tasks_lib.TASKS}, got {config.task.name!r}."
    )
  for name in (
      "batch_size",
      "log_every",
      "eval_every",
      "checkpoint_every",
      "keep_checkpoints",
      "eval_batches",
  ):
    _positive_int(config, name)  # pyformat: disable
  for name in ("window", "train_steps", "update_every", "seed", "num_devices"):
    _positive_int(config, name, minimum=0)
  if jax.process_count() > 1 and config.num_devices:
    raise ConfigError(
        f"config.num_devices is {config.num_devices} but a run on "
        f"{jax.process_count()} processes uses every device of every "
        "process; set config.num_devices=0."
    )
  if config.num_devices > jax.device_count():
    raise ConfigError(
        f"config.num_devices is {config.num_devices} but only "
        f"{jax.device_count()} devices exist; use 0 for all of them."
    )
  num_devices = device_count(config)
  if config.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size {config.batch_size} is not divisible by the "
        f"{num_devices} devices; use a multiple of {num_devices}."
    )
  if not config.learning_rate > 0:
    raise ConfigError(
        f"config.learning_rate must be > 0, got {config.learning_rate!r}."
    )
  if (
      config.learner == "tbptt"  # BPTT within windows: no traces
      and config.update_every
      and config.window > config.update_every
  ):
    logging.warning(
        "config.window=%d is longer than config.update_every=%d: %s keeps "
        "no state across an optimizer update, so its window is in effect %d "
        "steps.",
        config.window,
        config.update_every,
        config.learner,
        config.update_every,
    )  # pyformat: disable


def option_field(option: str) -> str:
  """The config field that holds learner option ``option``."""
  return OPTION_RENAMES.get(option, option)


def option_fields(learner: str) -> dict[str, str]:
  """``{option: config field}`` for every option of the registered
  ``learner``, from the registry (``haiku_etp.learner_spec``) and
  :func:`option_field`."""
  return {
      option: option_field(option)
      for option in haiku_etp.learner_spec(learner).options
  }


def _takes(learner: str, option: str) -> bool:
  """Whether the registered ``learner`` takes ``option``."""
  return option in haiku_etp.learner_spec(learner).options


def _option_value(config, option: str, value):
  """A config field's value as the learner's factory takes it."""
  if option == "remat" and isinstance(value, str) and value.isdigit():
    return int(value)  # segments of that many steps
  if option == "window":  # tbptt's truncation: 0 picks it
    return _window(config)
  return tuple(value) if isinstance(value, list) else value


def learner_options(config) -> dict:
  """The registered learner's options that ``config`` sets.

  The options are the registry's (:func:`option_fields`). A field that is
  absent, ``None`` or empty leaves the learner's default.
  """
  if isinstance(config, RunSpec):
    return dict(config.learner_options)
  options = {}
  for option, field in option_fields(config.learner).items():
    value = config.get(field)
    if value is None or (isinstance(value, (tuple, list, str)) and not value):
      continue
    options[option] = _option_value(config, option, value)
  return options


class RunSpec(NamedTuple):
  """A config validated once: the typed description of a run.

  :func:`run_spec` builds it from an ``ml_collections`` config; the
  pipeline's functions (``build``, ``make_update_fn``, the runners, the
  batch streams, ``train``) read it instead of the raw config, and accept a
  config too, which they validate into one.

  Attributes:
    task_name: the registered task (``experiments.tasks.get_task``).
    task_options: its hyperparameters.
    model: the ``model`` block, as a dict.
    learner: the registered learner.
    learner_options: the options the config sets for it.
    window: ``sequence_grad``'s window (``None``: the whole sequence).
    update_every: optimizer steps every this many steps (0: per sequence).
    optimizer, learning_rate, clip_norm: the optimizer.
    batch_size, train_steps, eval_every, eval_batches, log_every,
      checkpoint_every, keep_checkpoints, seed: the run's schedule.
    on_nonfinite: ``"stop"`` or ``"skip"``.
    parallel: ``"pmap"`` or ``"mesh"``.
    num_devices: devices asked for (0: all).
    config: the config it came from (the checkpoints' record of the run).
  """

  task_name: str
  task_options: dict
  model: dict
  learner: str
  learner_options: dict
  window: Optional[int]
  update_every: int
  optimizer: str
  learning_rate: float
  clip_norm: float
  batch_size: int
  train_steps: int
  eval_every: int
  eval_batches: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  seed: int
  on_nonfinite: str
  parallel: str
  num_devices: int
  config: Any


def run_spec(config, *, check: bool = True) -> RunSpec:
  """``config`` validated (:func:`validate`) into a :class:`RunSpec`; a
  ``RunSpec`` is returned as it is. ``check=False`` skips the checks that
  depend on this machine (a saved config read back for its shapes).

  Raises:
    ConfigError: for a bad config.
  """
  if isinstance(config, RunSpec):
    return config
  if check:
    validate(config)
  whole = haiku_etp.learner_spec(config.learner).whole_sequence
  return RunSpec(
      task_name=config.task.name,
      task_options={k: v for k, v in config.task.items() if k != "name"},
      model=dict(config.model),
      learner=config.learner,
      learner_options=learner_options(config),
      window=None if whole else _window(config),
      update_every=config.update_every,
      optimizer=config.optimizer,
      learning_rate=config.learning_rate,
      clip_norm=config.get("clip_norm", 0.0) or 0.0,
      batch_size=config.batch_size,
      train_steps=config.train_steps,
      eval_every=config.eval_every,
      eval_batches=config.eval_batches,
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      seed=config.seed,
      on_nonfinite=config.get("on_nonfinite", "stop"),
      parallel=config.parallel,
      num_devices=config.num_devices,
      config=config,
  )


def _window(config) -> int:
  """``config.window``, or with 0 the window picked for the learner: 1 for a
  fused form (step by step), :data:`AUTO_WINDOW` for the others (``tbptt``
  truncates there)."""
  if config.window:
    return config.window
  if config.get("es_form", "window") == "fused" and _takes(
      config.learner, "form"
  ):
    return 1
  return AUTO_WINDOW


def learner_window(config) -> Optional[int]:
  """The ``sequence_grad`` window: the whole sequence for a learner that
  covers it (BPTT), else ``config.window``; ``config.window = 0`` picks
  :data:`AUTO_WINDOW` steps for the online learners and ``tbptt`` (1 for a
  fused form).

  How it is picked: inside a window the gradient is BPTT's over its steps
  (exact through everything), and the traces cross it once, in closed form
  where the learner has it (``report()`` says), so a longer window spends
  less on the traces per step; its memory is that of BPTT over the window's
  steps plus their records, flat in the sequence length. 32 steps keep that
  memory small while the traces' share of the time is within a few percent
  of longer windows on the reference models (``experiments.benchmarks.benchmark
  --bench_windows``). A sequence cut by ``update_every`` into shorter pieces
  takes windows of the piece's length; a stream keeps its traces across
  pieces.
  """
  return run_spec(config, check=False).window


def resolve_workdir(workdir: str) -> str:
  """``workdir`` as an absolute path, created; orbax needs absolute paths.

  Raises:
    ConfigError: if ``workdir`` is empty, a file, or cannot be created or
      written.
  """
  if not workdir:
    raise ConfigError("--workdir is empty; give the run's directory.")
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(
        f"--workdir={workdir} is a file ({path}), not a directory; give a "
        "directory for the run's checkpoints, metrics and plots."
    )
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(
        f"--workdir={workdir}: cannot create {path} ({e.strerror}); give a "
        "directory you can write."
    ) from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise ConfigError(
        f"--workdir={workdir}: {path} is not writable; give a directory you "
        "can write."
    )
  return path
