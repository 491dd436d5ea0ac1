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
"""What a run meets: README's command as typed, divergence, damaged
checkpoints, changed configs, a finished run rerun, a bad work directory.

``conftest.py`` gives pytest four host CPU devices.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import chex
import numpy as np

from experiments import builders
from experiments import checkpoints
from experiments import metrics as metrics_lib
from experiments import tasks as tasks_lib
from experiments import training
from experiments.tasks import prefetch as prefetch_lib
from tests.experiments import pipeline_util
from tests import test_util

_ROOT = test_util.REPO_ROOT
_tiny = pipeline_util.tiny_config


def _readme_train_command() -> list[str]:
  """The training command of README's first line, split as a shell would."""
  with open(os.path.join(_ROOT, "README.md")) as f:
    first = next(l for l in f if l.startswith("python3 -m venv"))
  command = shlex.split(first.split("&&")[-1])
  assert command[:3] == ["python", "-m", "experiments.train"], command
  return [sys.executable] + command[1:]


def _run(args, cwd, **env):
  return subprocess.run(
      args,
      cwd=cwd,
      capture_output=True,
      text=True,
      check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT, **env),
  )  # pyformat: disable


def _user_directory(test) -> str:
  """A fresh current directory holding the checkout's ``experiments``, as a
  clone's root does; the package itself is the installed one."""
  cwd = test.create_tempdir().full_path
  os.symlink(
      os.path.join(_ROOT, "experiments"), os.path.join(cwd, "experiments")
  )
  return cwd


class ReadmeCommandTest(absltest.TestCase):

  def test_first_command_trains_then_reruns(self):
    # README's command as written (relative --workdir, default config),
    # from a fresh current directory, with fewer steps; then the same
    # command again, which finds the run finished.
    command = _readme_train_command()
    self.assertIn("--workdir=runs/cue_accumulation", command)
    cwd = _user_directory(self)
    command += [
        "--config.train_steps=4",
        "--config.eval_every=4",
        "--config.eval_batches=1",
        "--config.checkpoint_every=2",
    ]
    first = _run(command, cwd)
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    workdir = os.path.join(cwd, "runs", "cue_accumulation")
    accuracy = re.search(r"test accuracy: (\d\.\d{4})", first.stdout)
    self.assertIsNotNone(accuracy, first.stdout)
    self.assertIn(f"metrics: {workdir}/metrics.jsonl", first.stdout)
    self.assertIn("step 4/4", first.stderr)
    self.assertTrue(os.path.exists(os.path.join(workdir, "curves.png")))
    records = metrics_lib.read(workdir)
    self.assertEqual(
        sorted(os.listdir(os.path.join(workdir, "checkpoints"))), ["2", "4"]
    )
    again = _run(command, cwd)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn(f"Resumed {workdir} from step 4", again.stderr)
    self.assertIn("nothing to train", again.stderr)
    self.assertIn(f"test accuracy: {accuracy.group(1)}", again.stdout)
    self.assertEqual(metrics_lib.read(workdir), records)


class WorkdirTest(absltest.TestCase):

  def test_relative_workdir_is_made_absolute(self):
    cwd = self.create_tempdir().full_path
    with mock.patch.object(os, "getcwd", return_value=cwd):
      path = training.resolve_workdir("runs/x")
    self.assertEqual(path, os.path.join(cwd, "runs", "x"))
    self.assertTrue(os.path.isdir(path))

  def test_a_file_is_refused(self):
    path = self.create_tempfile("not_a_dir").full_path
    with self.assertRaisesRegex(
        training.ConfigError, f"--workdir={path} is a file"
    ):
      training.train(_tiny("adding"), path)

  def test_a_directory_that_cannot_be_made(self):
    parent = self.create_tempfile("file").full_path
    with self.assertRaisesRegex(
        training.ConfigError, "--workdir=.*/file/run: cannot create"
    ):
      training.resolve_workdir(os.path.join(parent, "run"))

  def test_an_unwritable_directory(self):
    if os.geteuid() == 0:
      self.skipTest("root writes everywhere")
    path = self.create_tempdir().full_path
    os.chmod(path, 0o500)
    with self.assertRaisesRegex(training.ConfigError, "is not writable"):
      training.resolve_workdir(path)

  def test_a_rejected_config_leaves_no_workdir(self):
    # Fields the task (not the config's own checks) rejects, too.
    path = os.path.join(self.create_tempdir().full_path, "run")
    config = _tiny("adding")
    config.task.num_steps = 0
    with self.assertRaisesRegex(training.ConfigError, "num_steps"):
      training.train(config, path)
    self.assertFalse(os.path.exists(path))

  def test_a_missing_config_file_is_one_error_line(self):
    cwd = self.create_tempdir().full_path
    proc = _run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--config=does_not_exist.py",
            "--workdir=run",
        ],
        cwd,
    )
    self.assertEqual(proc.returncode, 1)
    (line,) = proc.stderr.strip().splitlines()
    self.assertRegex(
        line,
        r"^error: --config=does_not_exist.py: no such file "
        rf"\({re.escape(os.path.join(cwd, 'does_not_exist.py'))}\); give a "
        r"config file",
    )
    self.assertFalse(os.path.exists(os.path.join(cwd, "run")))

  def test_the_binary_prints_one_error_line(self):
    path = self.create_tempfile("not_a_dir").full_path
    proc = _run(
        [sys.executable, "-m", "experiments.train", f"--workdir={path}"],
        _ROOT,
    )
    self.assertEqual(proc.returncode, 1)
    self.assertIn(f"error: --workdir={path} is a file", proc.stderr)
    self.assertNotIn("Traceback", proc.stderr)


def _with_nan_at(step: int):
  """``make_task`` whose training batch of ``step`` holds a NaN input."""
  make_task = builders.make_task

  def make(config):
    task = make_task(config)
    bad_seed = tasks_lib.train_seed(config.seed, step - 1)

    def batch(seed, batch_size, part=None):
      b = task.batch(seed, batch_size, part=part)
      if seed == bad_seed:
        xs = np.array(b.xs)
        xs[0, 0, 0] = np.nan
        b = b._replace(xs=xs)
      return b

    return task._replace(batch=batch)

  return mock.patch.object(builders, "make_task", make)


class DivergenceTest(absltest.TestCase):

  def test_nan_stops_the_run_and_keeps_the_last_checkpoint(self):
    config = _tiny("adding", train_steps=8, checkpoint_every=3, log_every=4)
    workdir = self.create_tempdir().full_path
    with _with_nan_at(5), self.assertRaisesRegex(
        training.Diverged,
        r"diverged at step 5: .*objective nan.*last good checkpoint is step "
        rf"3 in {workdir}/checkpoints",
    ):
      training.train(config, workdir, plot=False)
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 3)
    self.assertEqual(ckpt.all_steps(), [3])
    self.assertIsNone(checkpoints.damage(ckpt.step_directory(3)))
    ckpt.close()
    for r in metrics_lib.read(workdir):
      self.assertTrue(np.isfinite(r["loss"]), r)

  def test_skip_drops_the_update_and_counts_it(self):
    config = _tiny(
        "adding",
        train_steps=6,
        on_nonfinite="skip",
        eval_every=100,
        checkpoint_every=1,
        keep_checkpoints=6,
    )
    with _with_nan_at(3):
      result = training.train(
          config, self.create_tempdir().full_path, plot=False
      )
    self.assertEqual(int(result.state.skipped), 1)
    self.assertEqual(int(result.state.step), 6)
    chex.assert_tree_all_finite(result.state.params)
    train = [
        r for r in metrics_lib.read(result.workdir) if r["split"] == "train"
    ]
    self.assertEqual([r["skipped"] for r in train], [0, 1, 1])
    for r in train:
      self.assertTrue(np.isfinite(r["loss"]), r)
    # The skipped update left the state of step 2 as it was.
    ckpt = checkpoints.Checkpointer(
        os.path.join(result.workdir, "checkpoints"), 1
    )
    (before, _), (after, _) = (ckpt.restore(s, result.state) for s in (2, 3))
    ckpt.close()
    chex.assert_trees_all_equal(
        (before.params, before.opt_state, before.learner_state),
        (after.params, after.opt_state, after.learner_state),
    )
    self.assertEqual((int(before.skipped), int(after.skipped)), (0, 1))


def _truncate(path: str) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _largest_file(directory: str) -> str:
  files = [
      os.path.join(root, n)
      for root, _, names in os.walk(directory)
      for n in names
      if n != checkpoints.MANIFEST
  ]
  return max(files, key=os.path.getsize)


class UnexpectedErrorTest(absltest.TestCase):

  def test_an_error_mid_run_closes_what_the_run_opened(self):
    # An update that fails at its fifth call, after checkpoints 2 and 4.
    config = _tiny(
        "adding", train_steps=8, checkpoint_every=2, log_every=2, eval_every=9
    )
    workdir = self.create_tempdir().full_path
    make_parallel = training.make_parallel

    def failing_runner(*args):
      runner = make_parallel(*args)
      update, calls = runner.update, []

      def fail_at_fifth(ts, batch):
        calls.append(1)
        if len(calls) == 5:
          raise RuntimeError("update failed")
        return update(ts, batch)

      runner.update = fail_at_fifth
      return runner

    spies = [
        mock.patch.object(
            cls, "close", autospec=True, side_effect=cls.close
        )  # pyformat: disable
        for cls in (
            checkpoints.Checkpointer,
            metrics_lib.MetricsWriter,
            prefetch_lib.Prefetcher,
        )
    ]
    with mock.patch.object(training, "make_parallel", failing_runner):
      with spies[0] as ckpt_close, spies[1] as writer_close:
        with spies[2] as prefetch_close:
          with self.assertRaisesRegex(RuntimeError, "update failed"):
            training.train(config, workdir, plot=False)
    ckpt_close.assert_called_once()
    writer_close.assert_called_once()
    prefetch_close.assert_called()
    # The checkpointer waited for its saves and sealed them.
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
    self.assertEqual(ckpt.all_steps(), [2, 4])
    for step in (2, 4):
      manifest = os.path.join(ckpt.step_directory(step), checkpoints.MANIFEST)
      self.assertTrue(os.path.exists(manifest), manifest)
    ckpt.close()
    records = [(r["step"], r["split"]) for r in metrics_lib.read(workdir)]
    self.assertEqual(records, [(2, "train"), (4, "train")])


class DamagedCheckpointTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = _tiny("delayed_copy", train_steps=7, eval_every=100)
    cls.straight = training.train(cls.config, tempfile.mkdtemp(), plot=False)

  def _interrupted_run(self) -> str:
    """A work directory with checkpoints 3 and 6, killed after step 7."""
    workdir = self.create_tempdir().full_path
    with self.assertRaises(training.Interrupted):
      training.train(self.config, workdir, interrupt_after=7)
    return workdir

  def test_damaged_newest_falls_back_bit_identical(self):
    for damage in ("truncated", "metadata_deleted", "unsealed_truncated"):
      with self.subTest(damage):
        workdir = self._interrupted_run()
        newest = os.path.join(workdir, "checkpoints", "6")
        if damage == "metadata_deleted":
          os.remove(os.path.join(newest, "state", "_METADATA"))
        else:
          if damage == "unsealed_truncated":
            # As a kill between the save and its seal leaves it.
            os.remove(os.path.join(newest, checkpoints.MANIFEST))
          _truncate(_largest_file(os.path.join(newest, "state", "d")))
        with self.assertLogs(level="WARNING") as logs:
          resumed = training.train(self.config, workdir, plot=False)
        chex.assert_trees_all_equal(resumed.state, self.straight.state)
        self.assertTrue(
            any(f"Checkpoint {newest} is damaged (" in l for l in logs.output),
            logs.output,
        )
        self.assertTrue(
            os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "6"))
        )
        steps = [(r["step"], r["split"]) for r in metrics_lib.read(workdir)]
        self.assertEqual(
            steps,
            [
                (r["step"], r["split"])
                for r in metrics_lib.read(self.straight.workdir)
            ],
        )

  def test_none_readable_is_an_error_naming_the_directory(self):
    workdir = self._interrupted_run()
    for step in ("3", "6"):
      _truncate(
          _largest_file(
              os.path.join(workdir, "checkpoints", step, "state", "d")
          )
      )
    with self.assertRaisesRegex(
        checkpoints.CheckpointError,
        rf"No checkpoint in {workdir}/checkpoints can be read: step 6: .*; "
        "step 3: .*new --workdir",
    ):
      training.train(self.config, workdir, plot=False)

  def test_the_binary_says_it_in_one_line_each(self):
    # An unsealed damaged checkpoint is read by orbax, whose failure must
    # not print asyncio's "Event loop is closed" tracebacks.
    workdir = self._interrupted_run()
    newest = os.path.join(workdir, "checkpoints", "6")
    os.remove(os.path.join(newest, checkpoints.MANIFEST))
    _truncate(_largest_file(os.path.join(newest, "state", "d")))
    overrides = [
        f"--config.{k}={v}"
        for k, v in (
            ("task.length", 3),
            ("task.num_symbols", 3),
            ("task.delay", 3),
            ("model.hidden_size", 8),
            ("batch_size", 8),
            ("train_steps", 7),
            ("log_every", 2),
            ("eval_every", 100),
            ("eval_batches", 2),
            ("checkpoint_every", 3),
            ("learning_rate", 0.1),
        )
    ]
    proc = _run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--config=experiments/configs/delayed_copy.py",
            f"--workdir={workdir}",
        ]
        + overrides,
        _ROOT,
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f"Checkpoint {newest} is damaged (", proc.stderr)
    self.assertIn("Resumed", proc.stderr)
    self.assertNotIn("Event loop is closed", proc.stderr, proc.stderr)
    self.assertNotIn("Traceback", proc.stderr, proc.stderr)


class ChangedConfigTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = _tiny("delayed_copy", train_steps=4, eval_every=100)
    cls.workdir = tempfile.mkdtemp()
    training.train(cls.config, cls.workdir, plot=False)
    cls.records = metrics_lib.read(cls.workdir)

  def test_a_field_that_shapes_the_state_is_named(self):
    for field, value, regex in (
        (
            "model.hidden_size",
            16,
            "config.model.hidden_size: 8 in the " "checkpoint, 16 now",
        ),
        (
            "optimizer",
            "sgd",
            "config.optimizer: 'adam' in the checkpoint, " "'sgd' now",
        ),
        ("learner", "bptt", "config.learner: 'd_rtrl' in the checkpoint"),
        ("batch_size", 16, "config.batch_size: 8 in the checkpoint, 16 now"),
    ):
      with self.subTest(field):
        config = _tiny("delayed_copy", train_steps=6, eval_every=100)
        *parents, name = field.split(".")
        node = config
        for p in parents:
          node = node[p]
        node[name] = value
        with self.assertRaisesRegex(
            training.ConfigError, f"step 4.*{regex}.*new --workdir"
        ):
          training.train(config, self.workdir, plot=False)
    self.assertEqual(metrics_lib.read(self.workdir), self.records)

  def test_other_changes_are_logged_and_the_run_continues(self):
    workdir = self.create_tempdir().full_path
    training.train(self.config, workdir, plot=False)
    config = _tiny(
        "delayed_copy", train_steps=6, eval_every=100, learning_rate=0.05
    )
    with self.assertLogs(level="WARNING") as logs:
      result = training.train(config, workdir, plot=False)
    self.assertEqual(int(result.state.step), 6)
    self.assertTrue(
        any(
            "config.learning_rate changed" in l and "0.1 -> 0.05" in l
            for l in logs.output
        ),
        logs.output,
    )
    self.assertTrue(any("config.train_steps changed" in l for l in logs.output))
    # wall_time continues from the checkpoint's.
    times = [r["wall_time"] for r in metrics_lib.read(workdir)]
    self.assertEqual(times, sorted(times))

  def test_a_finished_run_rerun_adds_no_record(self):
    result = training.train(self.config, self.workdir, plot=False)
    self.assertEqual(metrics_lib.read(self.workdir), self.records)
    self.assertEqual(
        result.eval_metrics["accuracy"], self.records[-1]["accuracy"]
    )


if __name__ == "__main__":
  absltest.main()
