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
"""The research pipeline on tiny configs: train, resume, devices, outputs.

``conftest.py`` gives pytest four host CPU devices.
"""

import copy
import os
import struct
import subprocess
import sys
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import checkpoints
from experiments import metrics as metrics_lib
from experiments import training
from experiments.configs import cue_accumulation
from experiments.configs import stream_recall
import haiku_etp
from tests.experiments import pipeline_util
from tests import test_util

_ROOT = test_util.REPO_ROOT


_tiny = pipeline_util.tiny_config


def dict_config(config, **overrides):
  """A copy of ``config`` with top-level ``overrides``."""
  config = copy.deepcopy(config)
  config.update(overrides)
  return config


def _png_size(path: str) -> tuple[int, int]:
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


def _assert_params_close(a, b, rtol=1e-5):
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=1e-6)


class TrainTest(parameterized.TestCase):
  """Every task, learner and parallel mode trains."""

  # Each task, learner and parallel mode at least once (pairwise), one run
  # updating inside the sequence.
  @parameterized.named_parameters(
      ("cue_d_rtrl_pmap", "cue_accumulation", "d_rtrl", "pmap", 0),
      ("copy_bptt_mesh", "delayed_copy", "bptt", "mesh", 0),
      ("copy_tbptt_pmap", "delayed_copy", "tbptt", "pmap", 0),
      ("adding_es_mesh_online", "adding", "es_d_rtrl", "mesh", 4),
      ("cue_es_fused_pmap", "cue_accumulation", "es_fused", "pmap", 0),
      ("copy_rtrl_pmap", "delayed_copy", "rtrl", "pmap", 0),
      # e-prop's network (recurrent ALIF), its recurrent weight under RTRL.
      (
          "cue_eprop_rtrl_w_rec_mesh",
          "cue_accumulation",
          "rtrl_w_rec",
          "mesh",
          0,
      ),
  )
  def test_trains(self, task, learner, parallel, update_every):
    partial = learner == "rtrl_w_rec"
    config = _tiny(
        task,
        learner={"es_fused": "es_d_rtrl", "rtrl_w_rec": "rtrl"}.get(
            learner, learner
        ),
        rtrl_params=("recurrent_alif/w_rec",) if partial else (),
        es_form="fused" if learner == "es_fused" else "window",
        parallel=parallel,
        update_every=update_every,
        decay=0.5,
        window=2 if learner == "tbptt" else 1,
        train_steps=8,
    )
    config.model.recurrent = partial
    workdir = self.create_tempdir().full_path
    result = training.train(config, workdir, plot=False)
    train = [r for r in metrics_lib.read(workdir) if r["split"] == "train"]
    self.assertTrue(np.all(np.isfinite([r["loss"] for r in train])))
    self.assertEqual(int(result.state.step), 8)
    # The held-out loss falls from the initial parameters (a run of 0 steps
    # from the same seed only evaluates them).
    initial = training.train(
        dict_config(config, train_steps=0),
        self.create_tempdir().full_path,
        plot=False,
    )
    self.assertLess(result.eval_metrics["loss"], initial.eval_metrics["loss"])


class DevicesTest(absltest.TestCase):
  """Four devices, one device, pmap and mesh end with the same parameters."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    chex.assert_devices_available(4, "cpu")
    cls.results = {}
    for key, overrides in (
        ("pmap4", dict(parallel="pmap")),
        ("pmap1", dict(parallel="pmap", num_devices=1)),
        ("mesh4", dict(parallel="mesh")),
    ):
      workdir = os.path.join(tempfile.mkdtemp(), key)
      config = _tiny("cue_accumulation", train_steps=4, **overrides)
      cls.results[key] = training.train(config, workdir, plot=False)

  def test_four_devices_equal_one(self):
    _assert_params_close(
        self.results["pmap4"].state.params, self.results["pmap1"].state.params
    )

  def test_pmap_equals_mesh(self):
    _assert_params_close(
        self.results["pmap4"].state.params, self.results["mesh4"].state.params
    )


class RunnerChecksTest(parameterized.TestCase):
  """The runners check the devices they need and the batches they place."""

  @parameterized.parameters("pmap", "mesh")
  def test_too_many_devices_say_what_to_do(self, parallel):
    spec = training.run_spec(_tiny("adding", parallel=parallel))
    setup = training.build(spec)
    state = training.init_train_state(spec, setup, spec.batch_size)
    with self.assertRaisesRegex(
        AssertionError,
        rf"the {parallel} runner needs 64 cpu device\(s\); set "
        r"config.num_devices .*xla_force_host_platform_device_count=64",
    ):
      training.make_parallel(spec._replace(num_devices=64), setup, state)

  @parameterized.parameters("pmap", "mesh")
  def test_a_batch_of_another_size_says_what_to_do(self, parallel):
    spec = training.run_spec(_tiny("adding", parallel=parallel))
    setup = training.build(spec)
    state = training.init_train_state(spec, setup, spec.batch_size)
    runner = training.make_parallel(spec, setup, state)
    batch = setup.task.batch(0, spec.batch_size)
    steps = batch.xs.shape[0]
    # pmap: (devices, steps, samples per device); mesh: (steps, samples).
    want = (4, steps, 2) if parallel == "pmap" else (steps, 8)
    self.assertEqual(runner.put_batch(batch)[0].shape[: len(want)], want)
    with self.assertRaisesRegex(
        AssertionError, r"\(steps, 8 samples, \.\.\.\).*part=process_part"
    ):
      runner.put_batch(setup.task.batch(0, spec.batch_size // 2))


class ResumeTest(absltest.TestCase):

  def test_resumed_run_is_bit_identical(self):
    # Killed after step 4, between the checkpoints at 3 and 6: the resumed
    # run restores step 3 and redoes step 4.
    interrupt_after = 4
    config = _tiny("delayed_copy", train_steps=7, eval_every=100)
    straight = training.train(
        config, self.create_tempdir().full_path, plot=False
    )
    workdir = self.create_tempdir().full_path
    with self.assertRaises(training.Interrupted):
      training.train(config, workdir, interrupt_after=interrupt_after)
    resumed = training.train(config, workdir, plot=False)
    chex.assert_trees_all_equal(resumed.state, straight.state)
    steps = [(r["step"], r["split"]) for r in metrics_lib.read(workdir)]
    self.assertEqual(len(steps), len(set(steps)), "a step logged twice")
    self.assertEqual(
        steps,
        [(r["step"], r["split"]) for r in metrics_lib.read(straight.workdir)],
    )  # pyformat: disable


class ConfigErrorsTest(parameterized.TestCase):
  """Bad values fail before anything is compiled."""

  @parameterized.named_parameters(
      ("learner", dict(learner="rtrl_typo"), "config.learner must be one of"),
      ("parallel", dict(parallel="tpu"), "config.parallel must be one of"),
      ("window", dict(window=-1), r"config.window must be an int >= 0"),
      (
          "steps",
          dict(train_steps=-1),
          r"config.train_steps must be an int >= 0",
      ),
      ("batch", dict(batch_size=6), "not divisible by the 4 devices"),
      ("devices", dict(num_devices=9), "only 4 devices exist"),
      ("optimizer", dict(optimizer="lion"), "config.optimizer must be one of"),
      ("rate", dict(learning_rate=0.0), "config.learning_rate must be > 0"),
      ("es_form", dict(es_form="step"), "config.es_form must be one of"),
      (
          "fused_window",
          dict(learner="es_d_rtrl", es_form="fused", window=3),
          "config.window must be 1, got 3",
      ),
  )
  def test_bad_value(self, overrides, regex):
    config = _tiny("adding", **overrides)
    with self.assertRaisesRegex(ValueError, regex):
      training.validate(config)

  def test_fields_the_builders_reject(self):
    # The learner's and the task's ValueErrors, as the binary's one line.
    config = _tiny("adding", learner="es_d_rtrl", decay=1.5)
    with self.assertRaisesRegex(
        training.ConfigError, r"config.decay=1.5.*: Decays .*\[0, 1\)"
    ):
      training.train(config, self.create_tempdir().full_path)
    config = _tiny("adding")
    config.task.num_steps = 0
    with self.assertRaisesRegex(training.ConfigError, "num_steps"):
      training.train(config, self.create_tempdir().full_path)

  def test_update_every_longer_than_a_stream_chunk(self):
    config = stream_recall.get_config()
    config.task.update(dict(lag=3, chunk=8))
    config.model.hidden_size = 4
    config.update_every = 8  # one chunk: allowed
    training.build(config)
    config.update_every = 9
    with self.assertRaisesRegex(
        training.ConfigError,
        r"config.update_every=9 is longer than a training batch of the "
        r"stream task 'stream_recall' \(config.task.chunk=8 steps\).*Set "
        r"config.update_every <= 8 .*or raise config.task.chunk",
    ):
      training.build(config)

  def test_bad_model_fields(self):
    for field, value, regex in (
        ("kind", "transformer", "config.model.kind must be one of"),
        ("neuron", "izh", "config.model.neuron must be one of"),
        ("recurrent", "yes", "config.model.recurrent must be True or False"),
    ):
      config = _tiny("cue_accumulation")
      # A new block: the config's own fields are typed.
      config.model = ml_collections.ConfigDict(
          dict(config.model.to_dict(), **{field: value})
      )
      with self.assertRaisesRegex(training.ConfigError, regex):
        training.train(config, self.create_tempdir().full_path)
    config = _tiny("cue_accumulation")
    config.model.kind = "conv_snn"
    config.model.recurrent = True
    with self.assertRaisesRegex(training.ConfigError, "needs kind='snn'"):
      training.build(config)

  def test_recurrent_snn_is_eprops_network(self):
    config = _tiny("cue_accumulation")
    config.model.recurrent = True
    params = training.abstract_train_state(config).params
    self.assertEqual(params["recurrent_alif"]["w_rec"].shape, (16, 16))

  def test_unknown_task(self):
    config = _tiny("adding")
    config.task.name = "mnist"
    with self.assertRaisesRegex(ValueError, "config.task.name must be one of"):
      training.train(config, self.create_tempdir().full_path)

  def test_extra_arguments_are_a_usage_error(self):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "extra"],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )  # pyformat: disable
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("Unexpected arguments: ['extra']", proc.stderr)


class DefaultModelTest(absltest.TestCase):

  def test_d_rtrl_equals_bptt_on_the_default_network(self):
    # README's first command: the cue config's ALIF network and leaky
    # readout, where D-RTRL is exact (float64, every parameter).
    config = cue_accumulation.get_config()
    config.model.hidden_size = 8
    with jax.enable_x64(True):
      setup = training.build(config)
      task = setup.task
      b = task.batch(0, 4)
      xs = jnp.asarray(b.xs[:40], jnp.float64)
      ys, mask = jnp.asarray(b.ys[:40]), jnp.asarray(b.mask[:40], jnp.float64)
      loss = task.loss
      grads = {}
      for name, learner in (
          ("d_rtrl", setup.learner),
          ("bptt", haiku_etp.bptt(setup.model)),
      ):
        with warnings.catch_warnings():
          warnings.simplefilter("error", haiku_etp.ApproximationWarning)
          params, state = learner.init(jax.random.PRNGKey(0), xs[0])
          fn = jax.jit(learner.sequence_grad(loss))
          grads[name] = fn(params, state, None, xs, ys, mask).grads
      chex.assert_trees_all_close(
          grads["d_rtrl"], grads["bptt"], rtol=1e-8, atol=1e-12
      )


class CheckpointKeysTest(absltest.TestCase):

  def test_dotted_key_is_rejected(self):
    with self.assertRaisesRegex(ValueError, "'lin.ear'.*contains '.'"):
      checkpoints.check_keys({"params": {"lin.ear": {"w": np.ones(2)}}})
    checkpointer = checkpoints.Checkpointer(
        self.create_tempdir().full_path, every=1
    )
    with self.assertRaisesRegex(ValueError, "'a.b'"):
      checkpointer.save(1, {"a.b": np.ones(2)}, {})
    checkpointer.close()


class OutputsTest(absltest.TestCase):
  """metrics.jsonl and plots (the comparison table: protocol_test)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp()
    cls.result = training.train(_tiny("cue_accumulation"), cls.workdir)

  def test_metrics_schema(self):
    records = metrics_lib.read(self.workdir)
    self.assertEqual(
        [(r["step"], r["split"]) for r in records],
        [(2, "train"), (4, "train"), (4, "eval"), (6, "train"), (6, "eval")],
    )
    for r in records:
      for key in ("step", "split", "loss", "accuracy", "wall_time"):
        self.assertIn(key, r)
      self.assertTrue(np.isfinite(r["loss"]))
      self.assertBetween(r["accuracy"], 0.0, 1.0)
      if r["split"] == "train":
        self.assertGreater(r["steps_per_sec"], 0.0)
    self.assertEqual(
        records[-1]["accuracy"], self.result.eval_metrics["accuracy"]
    )

  def test_plots_are_pngs(self):
    names = sorted(os.path.basename(p) for p in self.result.plots)
    self.assertEqual(names, ["curves.png", "raster.png"])
    for path in self.result.plots:
      self.assertEqual(
          _png_size(path), (1000, 700) if "curves" in path else (900, 800)
      )  # pyformat: disable


if __name__ == "__main__":
  absltest.main()
