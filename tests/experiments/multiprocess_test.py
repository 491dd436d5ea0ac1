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
"""Training on two processes (JAX's distributed runtime on 127.0.0.1).

Each process runs ``experiments.train`` with two forced CPU devices; the
collectives are JAX's CPU ones (gloo). The two-process runs end with the
parameters and held-out metrics of one process with the whole batch on four
devices (``conftest.py``), and their checkpoints restore in one process.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from unittest import mock

from absl import app
from absl.testing import absltest
import chex
import jax

from experiments import distributed
from experiments import metrics as metrics_lib
from experiments import training
from experiments.configs import delayed_copy
from tests import test_util

_ROOT = test_util.REPO_ROOT
_TIMEOUT_S = 300
# Plain SGD: Adam's normalization would magnify float32 reduction-order
# noise in near-zero gradients and hide what is compared.
_OVERRIDES = {
    "task.length": 3,
    "task.num_symbols": 3,
    "task.delay": 3,
    "model.hidden_size": 8,
    "batch_size": 8,
    "train_steps": 4,
    "log_every": 2,
    "eval_every": 100,
    "eval_batches": 2,
    "checkpoint_every": 2,
    "optimizer": "sgd",
    "learning_rate": 0.5,
}


def _config(**overrides):
  config = delayed_copy.get_config()
  for key, value in dict(_OVERRIDES, **overrides).items():
    *path, leaf = key.split(".")
    node = config
    for p in path:
      node = node[p]
    node[leaf] = value
  return config


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir: str, **overrides) -> list[str]:
  """Runs the binary on two processes; returns their logs."""
  port = _free_port()
  flags = [
      f"--config.{k}={v}" for k, v in dict(_OVERRIDES, **overrides).items()
  ]
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=2",
  )
  logs, procs = [], []
  for index in range(2):
    log = open(os.path.join(os.path.dirname(workdir), f"log{index}"), "w+")
    logs.append(log)
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.train",
                "--config=experiments/configs/delayed_copy.py",
                f"--workdir={workdir}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={index}",
                "--distributed_timeout=120",
            ]
            + flags,
            cwd=_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )  # pyformat: disable
  codes = []
  try:
    for proc in procs:
      codes.append(proc.wait(timeout=_TIMEOUT_S))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  texts = []
  for log in logs:
    log.seek(0)
    texts.append(log.read())
    log.close()
  if codes != [0, 0]:
    raise AssertionError(
        f"two-process run failed with {codes}:\n"
        + "\n".join(
            f"--- process {i}\n{t[-3000:]}" for i, t in enumerate(texts)
        )
    )
  return texts


def _last_eval(workdir: str) -> dict:
  return [r for r in metrics_lib.read(workdir) if r["split"] == "eval"][-1]


class TwoProcessesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    chex.assert_devices_available(4, "cpu")
    cls.root = tempfile.mkdtemp()
    cls.workdirs, cls.logs = {}, {}
    for parallel in ("pmap", "mesh"):
      os.makedirs(os.path.join(cls.root, parallel))
      workdir = os.path.join(cls.root, parallel, "run")
      cls.logs[parallel] = _launch(workdir, parallel=parallel)
      cls.workdirs[parallel] = workdir
    cls.reference_dir = os.path.join(cls.root, "one")
    cls.reference = training.train(_config(), cls.reference_dir, plot=False)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _restore_in_one(self, parallel, train_steps=4):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    shutil.copytree(self.workdirs[parallel], workdir)
    config = _config(train_steps=train_steps)
    return training.train(config, workdir, plot=False)

  def _check_equals_one_process(self, parallel):
    # A run of 4 steps restored at step 4: the parameters the two
    # processes saved, read by one process.
    restored = self._restore_in_one(parallel)
    self.assertEqual(int(restored.state.step), 4)
    chex.assert_trees_all_close(
        restored.state.params,
        self.reference.state.params,
        rtol=1e-5,
        atol=1e-5,
    )
    # The held-out metrics process 0 wrote are the means over both
    # processes' samples.
    two = _last_eval(self.workdirs[parallel])
    one = _last_eval(self.reference_dir)
    for key in ("loss", "accuracy", "count"):
      self.assertAlmostEqual(two[key], one[key], places=5, msg=key)

  def test_pmap_two_processes_equal_one(self):
    self._check_equals_one_process("pmap")

  def test_mesh_two_processes_equal_one(self):
    self._check_equals_one_process("mesh")

  def test_checkpoint_of_two_processes_resumes_in_one(self):
    resumed = self._restore_in_one("pmap", train_steps=6)
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    shutil.copytree(self.reference_dir, workdir)
    continued = training.train(_config(train_steps=6), workdir, plot=False)
    self.assertEqual(int(resumed.state.step), 6)
    chex.assert_trees_all_close(
        resumed.state.params, continued.state.params, rtol=1e-5, atol=1e-5
    )

  def test_process_zero_alone_reports(self):
    for parallel, (log0, log1) in self.logs.items():
      self.assertIn("step 4/4", log0, parallel)
      self.assertIn("test accuracy:", log0, parallel)
      self.assertNotIn("step 4/4", log1, parallel)
      self.assertNotIn("test accuracy:", log1, parallel)
    records = metrics_lib.read(self.workdirs["pmap"])
    # One record per logged step, not one per process.
    steps = [r["step"] for r in records if r["split"] == "train"]
    self.assertEqual(steps, [2, 4])


class FlagsTest(absltest.TestCase):
  """How a run decides to start JAX's distributed runtime."""

  def _init(self, *args, environ=None, **kwargs):
    """Runs ``distributed.initialize``; returns the mocked JAX call."""
    with mock.patch.object(jax.distributed, "initialize") as init:
      started = distributed.initialize(*args, environ=environ or {}, **kwargs)
    self.assertEqual(started, init.called)
    return init

  def test_single_process_does_not_initialize(self):
    self.assertFalse(self._init(None, None, None).called)

  def test_flags(self):
    init = self._init("127.0.0.1:1234", 2, 1)
    init.assert_called_once_with(
        coordinator_address="127.0.0.1:1234",
        num_processes=2,
        process_id=1,
        initialization_timeout=300,
    )

  def test_environment_fills_what_the_flags_leave_unset(self):
    environ = dict(
        JAX_COORDINATOR_ADDRESS="127.0.0.1:99",
        JAX_NUM_PROCESSES="4",
        JAX_PROCESS_ID="3",
    )
    init = self._init(None, None, None, environ=environ)
    init.assert_called_once_with(
        coordinator_address="127.0.0.1:99",
        num_processes=4,
        process_id=3,
        initialization_timeout=300,
    )
    init = self._init(None, None, 0, environ=environ)
    self.assertEqual(init.call_args.kwargs["process_id"], 0)

  def test_distributed_alone_lets_jax_detect_the_cluster(self):
    init = self._init(None, None, None, distributed=True, timeout_s=7)
    init.assert_called_once_with(
        coordinator_address=None,
        num_processes=None,
        process_id=None,
        initialization_timeout=7,
    )

  def test_inconsistent_settings(self):
    for args, regex in (
        ((None, 2, 0), "need --coordinator_address"),
        (("h:1", None, 0), "needs --num_processes and --process_id"),
        (("h:1", 2, 2), r"--process_id must be in \[0, 2\)"),
        (("h:1", 0, 0), "--num_processes must be >= 1"),
    ):
      with self.assertRaisesRegex(app.UsageError, regex):
        self._init(*args)
    with self.assertRaisesRegex(app.UsageError, "JAX_NUM_PROCESSES must be"):
      self._init(None, None, None, environ={"JAX_NUM_PROCESSES": "two"})

  def test_address_without_process_count_is_a_usage_error(self):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--coordinator_address=127.0.0.1:1",
        ],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )  # pyformat: disable
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("needs --num_processes and --process_id", proc.stderr)


if __name__ == "__main__":
  absltest.main()
