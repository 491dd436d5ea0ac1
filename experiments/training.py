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
"""Online training of a haiku_etp model on a task, on every device.

``train(config, workdir)`` is the whole pipeline: it validates the config,
builds the task, model, learner and optimizer, restores the newest
checkpoint of ``workdir`` if there is one, and runs the update built once
(``pmap`` over the devices, or ``jit`` over a ``Mesh`` of all devices with
the batch axis sharded), with batches produced ahead of the step, absl
logs and ``metrics.jsonl`` records every ``log_every`` steps, evaluation on
held-out batches every ``eval_every`` steps and at the end, and orbax
checkpoints every ``checkpoint_every`` steps. Plots are drawn at the end
when matplotlib is installed.

Config fields: ``task`` (``name`` plus the task's keyword hyperparameters),
``model`` (see :mod:`experiments.models`), ``learner`` (a registered name:
``haiku_etp.learner_names()``; its registered options come from the config
fields of their names, ``form`` from ``es_form``, ``params`` from
``rtrl_params`` and ``n`` from ``snap_n``), ``decay`` and ``es_form``
(ES-D-RTRL: ``window`` or ``fused``), ``max_trace_bytes`` and
``rtrl_params`` (RTRL's budget and the parameters it keeps the full
influence of; empty: all), ``trace_dtype`` (the online learners' trace
storage, ``bfloat16`` or ``float16``; empty: the parameters' dtype),
``window`` (online learners and ``tbptt``; 0 picks it,
:func:`learner_window`), ``update_every`` (apply the optimizer every that
many steps inside a sequence, or a stream task's chunk, which it must not
exceed; 0: once per sequence or chunk), ``optimizer``, ``learning_rate``,
``batch_size`` (global), ``train_steps``, ``eval_every``, ``eval_batches``,
``log_every``, ``checkpoint_every``, ``keep_checkpoints``, ``seed``,
``parallel`` (``pmap`` or ``mesh``), ``num_devices`` (0: all),
``on_nonfinite`` (``stop``: a NaN or infinite loss or gradient norm stops
the run, naming the step and the last good checkpoint; ``skip``: that update
is dropped and counted).

The work directory may be relative; it is made absolute once. A resumed
run checks its config against the checkpoint's: a changed field that shapes
the train state is a :class:`ConfigError` naming it, other changes are
logged. A damaged newest checkpoint is set aside and the previous one used
(``experiments.checkpoints``). A finished run reports its result again
without training or appending records; ``wall_time`` continues across
resumes.

On several processes (after ``jax.distributed.initialize``, see
``experiments/train.py``) the same call runs in each: every process reads
its part of each global batch, the host train state and the checkpoints
hold the whole run's state, and process 0 alone writes metrics and plots.

Whatever ends a run (its end, an exception, :class:`Interrupted`,
:class:`Diverged`), the batch prefetcher is stopped, the metrics writer
closed and the checkpointer closed after it waits for its saves and seals
them.

The pipeline's parts live beside this module, and their names used
elsewhere are importable from it too: :mod:`experiments.run_spec` (the
config's validation, :class:`RunSpec`, the learner's options and window),
:mod:`experiments.builders` (task, model, learner, optimizer, the train
state, the update and evaluation functions), :mod:`experiments.runners` (the
``pmap`` and ``mesh`` runners, each process's part of a batch) and
:mod:`experiments.checkpoints` (checkpoints and the resume checks).
"""

import contextlib
import os
import time
from typing import NamedTuple, Optional
import warnings

from absl import logging
import jax

from experiments import checkpoints as checkpoints_lib
from experiments import metrics as metrics_lib
from experiments import tasks as tasks_lib

# The pipeline's names, importable from here as before the split.
from experiments.builders import abstract_train_state
from experiments.builders import build
from experiments.builders import init_train_state
from experiments.builders import make_eval_fn
from experiments.builders import make_learner
from experiments.builders import make_optimizer
from experiments.builders import make_task
from experiments.builders import make_update_fn
from experiments.builders import Setup
from experiments.builders import TrainState
from experiments.checkpoints import check_resume
from experiments.checkpoints import config_changes
from experiments.run_spec import AUTO_WINDOW
from experiments.run_spec import ConfigError
from experiments.run_spec import device_count
from experiments.run_spec import ES_FORMS
from experiments.run_spec import learner_options
from experiments.run_spec import learner_window
from experiments.run_spec import ON_NONFINITE
from experiments.run_spec import OPTIMIZERS
from experiments.run_spec import option_field
from experiments.run_spec import option_fields
from experiments.run_spec import OPTION_RENAMES
from experiments.run_spec import PARALLEL
from experiments.run_spec import resolve_workdir
from experiments.run_spec import run_spec
from experiments.run_spec import RunSpec
from experiments.run_spec import validate
from experiments.runners import eval_batches
from experiments.runners import global_learner_state
from experiments.runners import local_learner_state
from experiments.runners import make_parallel
from experiments.runners import process_part
from experiments.runners import process_rows
from experiments.runners import train_batches
from experiments.tasks import prefetch as prefetch_lib
import haiku_etp


class Diverged(FloatingPointError):
  """A training loss or gradient norm was not finite (``on_nonfinite="stop"``)."""


class Interrupted(Exception):
  """Raised by ``train(..., interrupt_after=k)`` as a kill would stop it."""


class Result(NamedTuple):
  """What ``train`` returns.

  Attributes:
    state: the final train state, on the host.
    eval_metrics: the final evaluation's metrics.
    workdir: the run's directory (``metrics.jsonl``, checkpoints, plots).
    plots: paths of the PNG files drawn (empty without matplotlib).
    seconds: wall time of this call.
    metric_name: the task's headline metric in ``eval_metrics``.
  """

  state: TrainState
  eval_metrics: dict
  workdir: str
  plots: tuple
  seconds: float
  metric_name: str


def evaluate(runner, setup: Setup, ts: TrainState, config) -> dict:
  """Mean metrics over the held-out batches (all processes')."""
  results = []
  for batch in eval_batches(setup.task, config):
    out = runner.evaluate(ts.params, ts.learner_state, runner.put_batch(batch))
    results.extend(runner.eval_metrics(out))
  return tasks_lib.mean_metrics(results)


def train(
    config,
    workdir: str,
    *,
    interrupt_after: Optional[int] = None,
    plot: bool = True,
) -> Result:
  """Trains ``config`` in ``workdir``, resuming from its newest checkpoint.

  Args:
    config: an ``ml_collections.ConfigDict`` (see the module docstring).
    workdir: the run's directory, relative or absolute; reusing it resumes
      the run. A finished run reports its result without training.
    interrupt_after: stop abruptly after this many updates of this call,
      without the final checkpoint or evaluation, as a killed process would
      (tests use it); raises :class:`Interrupted`.
    plot: draw the learning curves (and a raster for spiking models) at the
      end when matplotlib is installed.

  Returns:
    A :class:`Result`.

  Raises:
    ConfigError: for a bad config or work directory (before anything is
      compiled), or a resume whose config changed a field that shapes the
      train state.
    experiments.checkpoints.CheckpointError: when the work directory has
      checkpoints and none can be read.
    Diverged: for a non-finite loss or gradient norm with
      ``config.on_nonfinite="stop"``.
  """
  start_time = time.time()
  spec = run_spec(config)  # validated once; everything below reads it
  # The task, model and learner check their fields before the work
  # directory is made: a rejected config leaves nothing behind.
  setup = build(spec)
  workdir = resolve_workdir(workdir)
  # What the run opens is closed on any exit, in the reverse order.
  with contextlib.ExitStack() as stack:
    run = _Run(spec, setup, workdir, start_time, stack)
    final = run.loop(interrupt_after)
    host_state = run.finish(final)
  return _report(run, host_state, final, plot)


class _Run:
  """One call of :func:`train`: what it opened and the loop's bookkeeping.

  It opens the checkpointer (restoring the newest checkpoint), the metrics
  writer and the batch prefetcher, each closed by ``stack``.
  """

  def __init__(self, spec: RunSpec, setup: Setup, workdir, start_time, stack):
    self.spec, self.setup, self.workdir = spec, setup, workdir
    self.start_time = start_time
    # The host state is the whole run's, the same on every process: the
    # runner places each process's share, checkpoints hold it all.
    host_state = init_train_state(spec, setup, spec.batch_size)
    self.checkpointer = checkpoints_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every=spec.checkpoint_every,
        keep=spec.keep_checkpoints,
    )
    stack.callback(self.checkpointer.close)
    restored = self.checkpointer.restore_latest(
        host_state, check_meta=check_resume(spec.config, workdir, host_state)
    )
    resume, self.wall_offset = None, 0.0
    if restored is not None:
      resume, host_state = restored.step, restored.state
      self.wall_offset = float(restored.meta.get("wall_time", 0.0))
      logging.info("Resumed %s from step %d.", workdir, resume)
    self.writer = metrics_lib.MetricsWriter(
        workdir, enabled=jax.process_index() == 0, resume_step=resume
    )
    stack.callback(self.writer.close)
    self.runner = make_parallel(spec, setup, host_state)
    self.ts = self.runner.put_state(host_state)
    self.start = int(host_state.step)
    self.meta = {"config": spec.config.to_dict()}
    self._log_start()
    # Batches are made ahead on a host thread (NumPy only: device work from a
    # second thread can starve the CPU collectives of the update).
    self.batches = stack.enter_context(
        prefetch_lib.prefetch(
            train_batches(setup.task, spec, self.start), size=2
        )
    )
    self.unread, self.logged = [], []  # device metrics not read; host ones
    self.last_log, self.last_log_time = self.start, time.time()
    self.last_saved, self.skipped = resume, int(host_state.skipped)

  def elapsed(self) -> float:
    """The run's wall time, across resumes."""
    return self.wall_offset + time.time() - self.start_time

  def _log_start(self) -> None:
    spec = self.spec
    if self.start >= spec.train_steps:
      logging.info(
          "%s is trained to step %d (config.train_steps=%d): nothing to "
          "train; evaluating.",
          self.workdir,
          self.start,
          spec.train_steps,
      )  # pyformat: disable
      return
    logging.info(
        "Training %s with %s on %d %s device(s) (%s), steps %d..%d.",
        spec.task_name,
        spec.learner,
        device_count(spec),
        jax.default_backend(),
        spec.parallel,
        self.start,
        spec.train_steps,
    )  # pyformat: disable

  def loop(self, interrupt_after: Optional[int]) -> dict:
    """Runs the remaining updates; returns the final evaluation."""
    done = 0
    with warnings.catch_warnings():
      warnings.simplefilter("once", haiku_etp.ApproximationWarning)
      for batch in self.batches:
        self.ts, m = self.runner.update(self.ts, self.runner.put_batch(batch))
        done += 1
        step = self.start + done
        self.unread.append((step, m))
        if interrupt_after is not None and done >= interrupt_after:
          raise Interrupted(f"interrupted after step {step}")
        self._after_update(step)
      self._read_metrics()
      return evaluate(self.runner, self.setup, self.ts, self.spec)

  def _after_update(self, step: int) -> None:
    """The logs, evaluation and checkpoint due at ``step``."""
    spec = self.spec
    if step % spec.log_every == 0 or step == spec.train_steps:
      self._log(step)
    if step % spec.eval_every == 0 and step != spec.train_steps:
      self._read_metrics()
      values = evaluate(self.runner, self.setup, self.ts, spec)
      self.writer.write(step, "eval", values, self.elapsed())
      logging.info("eval at step %d: %s", step, _fmt(values))
    if step % spec.checkpoint_every == 0:
      self._read_metrics()
      self.checkpointer.save(
          step,
          self.runner.get_state(self.ts),
          dict(self.meta, step=step, wall_time=self.elapsed()),
      )
      self.last_saved = step

  def _read_metrics(self) -> None:
    """Reads the pending metrics; stops a diverged run before it saves."""
    for step, m in self.unread:
      values = self.runner.train_metrics(m)
      if values["nonfinite"]:
        if self.spec.on_nonfinite == "stop":
          raise Diverged(_diverged_message(step, values, self))
        logging.warning(
            "step %d: non-finite loss or gradient norm; the update is "
            "skipped (config.on_nonfinite='skip').",
            step,
        )  # pyformat: disable
        self.skipped += 1
      self.logged.append(values)
    self.unread.clear()

  def _log(self, step: int) -> None:
    """Writes and logs the mean training metrics since the last log."""
    self._read_metrics()
    now = time.time()
    rate = (step - self.last_log) / max(now - self.last_log_time, 1e-9)
    kept = [_weighted(v) for v in self.logged if not v["nonfinite"]]
    if kept:
      values = tasks_lib.mean_metrics(kept)
      del values["nonfinite"]
      values["steps_per_sec"] = rate
      values["skipped"] = self.skipped  # updates skipped so far
      self.writer.write(step, "train", values, self.elapsed())
      _log_progress(
          step,
          self.spec.train_steps,
          values,
          rate,
          self.elapsed(),
          self.setup.task.metric_name,
      )  # pyformat: disable
    self.logged.clear()
    self.last_log, self.last_log_time = step, now

  def finish(self, final: dict):
    """Records the final evaluation and checkpoints the final state (unless
    its step has one); returns the host train state."""
    host_state = self.runner.get_state(self.ts)
    step = int(host_state.step)
    self.writer.write(step, "eval", final, self.elapsed())
    self.checkpointer.wait()
    if step not in self.checkpointer.all_steps():
      meta = dict(self.meta, step=step, wall_time=self.elapsed())
      self.checkpointer.save(step, host_state, meta, force=True)
    return host_state


def _report(run: _Run, host_state, final: dict, plot: bool) -> Result:
  """Logs the end of a finished run, draws its plots; its :class:`Result`."""
  if int(host_state.skipped):
    logging.warning(
        "%d update(s) of this run were skipped for a non-finite loss or "
        "gradient norm.",
        int(host_state.skipped),
    )  # pyformat: disable
  plots = ()
  if plot and jax.process_index() == 0:
    plots = _plots(run.workdir, run.spec.config, run.setup, host_state)
  metric_name = run.setup.task.metric_name
  logging.info(
      "Done: test %s %.4f, loss %.4f. Metrics: %s%s",
      metric_name,
      final[metric_name],
      final["loss"],
      run.writer.path,
      "".join(f", {p}" for p in plots),
  )  # pyformat: disable
  return Result(
      host_state,
      final,
      run.workdir,
      plots,
      time.time() - run.start_time,
      metric_name,
  )


def _diverged_message(step, values, run: _Run) -> str:
  if run.last_saved is None:
    where = "No checkpoint was written before it."
  else:
    where = (
        f"The last good checkpoint is step {run.last_saved} in "
        f"{run.checkpointer.directory}; it is kept, and rerunning resumes "
        "from it."
    )
  return (
      f"Training diverged at step {step}: the loss or the gradient norm is "
      f"not finite (objective {values['objective']}, gradient norm "
      f"{values['grad_norm']}). {where} Lower config.learning_rate, set "
      "config.clip_norm, or set config.on_nonfinite='skip' to drop such "
      "updates and go on."
  )


def _log_progress(step, total, metrics, rate, elapsed, name):
  eta = (total - step) / rate if rate > 0 else float("nan")
  logging.info(
      "step %d/%d  loss %.4f  %s %.4f  %.2f steps/s  elapsed %.0fs  ETA %.0fs",
      step,
      total,
      metrics["loss"],
      name,
      metrics[name],
      rate,
      elapsed,
      eta,
  )  # pyformat: disable


def _weighted(m: dict) -> dict:
  return dict(m, count=m.get("count", 1.0))


def _fmt(values: dict) -> str:
  return ", ".join(
      f"{k} {v:.4f}"
      for k, v in values.items()
      if isinstance(v, float) and k != "count"
  )


def _plots(workdir, config, setup, host_state) -> tuple:
  try:
    from experiments import plotting  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.info("matplotlib is not installed: no plots.")
    return ()
  return plotting.plot_run(workdir, config, setup, host_state)
