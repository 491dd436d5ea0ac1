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
"""The learners through the training pipeline: every registered learner
trained and compared, options and configs validated into run specs, adaptive
feedback and low-precision traces across checkpoints, the long-range task
configs."""

import json
import tempfile
import warnings

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from experiments import compare
from experiments import metrics
from experiments import metrics as metrics_lib
from experiments import tasks as tasks_lib
from experiments import training
from experiments.configs import copy_long
from experiments.configs import cue_accumulation_1ms
from experiments.configs import digits_lru
from experiments.configs import haiku_rnn
from experiments.configs import stream_recall
import haiku_etp
from tests.experiments import pipeline_util
from tests import test_util

_FIRST_HALF = ("d_rtrl", "es_d_rtrl", "rtrl", "rflo", "bptt")
_SECOND_HALF = ("uoro", "snap", "eprop", "tbptt", "immediate")


class RegistryPipelineTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.config = pipeline_util.tiny_config("delayed_copy")

  def _compare(self, learners, repeats=1):
    """Rows of ``experiments.compare`` training ``learners`` on a tiny
    config, with the checks every row passes (``repeats=0``: the update is
    not timed; measuring it is the same code for every learner, so one
    half does)."""
    haiku_etp.extend.register_learner("immediate", test_util.make_immediate)
    self.addCleanup(haiku_etp.extend.unregister_learner, "immediate")
    config = pipeline_util.tiny_config(
        "delayed_copy", train_steps=2, eval_every=2, log_every=1
    )
    config.model.hidden_size = 4
    config.window = 1  # the toy is the one-step truncation
    rows = compare.compare(
        config, self.create_tempdir().full_path, learners, repeats=repeats
    )
    self.assertEqual([r["learner"].split("(")[0] for r in rows], list(learners))
    for r in rows:
      records = metrics_lib.read(r["workdir"])
      self.assertTrue(np.all(np.isfinite([x["loss"] for x in records])))
      if repeats:
        self.assertGreater(r["ms_per_update"], 0.0)
        self.assertGreater(r["update_mib"], 0.0)
      else:
        self.assertNotIn("ms_per_update", r)
      # The exact reference is RTRL's (it fits).
      self.assertEqual(r["exact"], "rtrl")
    text = compare.markdown(rows, "title")
    self.assertLen(text.strip().splitlines(), 4 + len(rows))
    if not repeats:
      self.assertIn(" | - | - | ", text)
    json.dumps(rows)
    return {r["learner"]: r for r in rows}

  # 'all' is every registered name, the toy one included; the two tests
  # below train all of them through the pipeline between them (in two
  # halves, which the test workers run side by side).
  def test_all_is_every_registered_learner(self):
    haiku_etp.extend.register_learner("immediate", test_util.make_immediate)
    self.addCleanup(haiku_etp.extend.unregister_learner, "immediate")
    self.assertEqual(compare.expand(["all"]), list(haiku_etp.learner_names()))
    self.assertIn("immediate", compare.expand(["all"]))
    trained = set(_FIRST_HALF) | set(_SECOND_HALF)
    self.assertEqual(trained, set(haiku_etp.learner_names()))

  def test_first_half_trains_and_is_compared(self):
    by = self._compare(_FIRST_HALF)
    # BPTT's and RTRL's first gradients are the reference, every
    # parameter; RFLO's random feedback is far from it.
    for name in ("bptt", "rtrl"):
      self.assertAlmostEqual(by[name]["cosine_vs_exact"], 1.0, places=5)
      self.assertAlmostEqual(by[name]["norm_ratio_vs_exact"], 1.0, places=5)
      for cos, ratio in by[name]["per_parameter_vs_exact"].values():
        self.assertAlmostEqual(cos, 1.0, places=5)
        self.assertAlmostEqual(ratio, 1.0, places=4)
    self.assertLess(by["rflo"]["cosine_vs_exact"], 0.99)
    # At the trained parameters too, every parameter (float32).
    self.assertAlmostEqual(by["rtrl"]["final_cosine_vs_bptt"], 1.0, places=5)
    self.assertLess(max(by["rtrl"]["final_relative_error"].values()), 1e-4)

  def test_second_half_trains_and_is_compared(self):
    by = self._compare(_SECOND_HALF, repeats=0)
    # The toy's gradient is the one-step truncation's.
    self.assertAlmostEqual(
        by["immediate"]["cosine_vs_exact"],
        by["tbptt(window=1)"]["cosine_vs_exact"],
        places=6,
    )

  def test_options_are_labelled(self):
    labels = [
        compare.learner_label(compare.learner_config(self.config, text))
        for text in compare.DEFAULT_LEARNERS
    ]
    self.assertEqual(
        labels,
        [
            "d_rtrl",
            "es_d_rtrl(decay=0.9)",
            "es_d_rtrl(decay=0.9, form=fused)",
            "rtrl",
            "bptt",
            "tbptt(window=10)",
        ],
    )

  def test_the_pipeline_rejects_an_unknown_learner(self):
    config = pipeline_util.tiny_config("adding", learner="nope")
    with self.assertRaisesRegex(
        training.ConfigError, r"config.learner must be one of \('d_rtrl'"
    ):
      training.validate(config)


class TraceDtypePipelineTest(absltest.TestCase):

  def test_pipeline_trains_and_resumes_with_bfloat16_traces(self):
    config = pipeline_util.tiny_config("delayed_copy", trace_dtype="bfloat16")
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      result = training.train(config, workdir, plot=False)
      self.assertTrue(np.isfinite(result.eval_metrics["loss"]))
      dtypes = {
          v.dtype
          for k, v in jax.tree_util.tree_leaves_with_path(result.state)
          if "~etp/d_rtrl" in jax.tree_util.keystr(k)
      }
      self.assertEqual(dtypes, {jnp.dtype(jnp.bfloat16)})
      config.trace_dtype = ""
      with self.assertRaisesRegex(training.ConfigError, "trace_dtype"):
        training.train(config, workdir, plot=False)


class AdaptiveFeedbackPipelineTest(absltest.TestCase):

  def test_adaptive_feedback_survives_a_checkpoint_round_trip(self):
    config = pipeline_util.tiny_config(
        "delayed_copy",
        learner="eprop",
        feedback="adaptive",
        feedback_rate=0.05,
        feedback_seed=2,
    )
    label = "shared:feedback:"

    def feedback(state):
      (entry,) = [v for k, v in state["~etp/eprop"].items() if label in k]
      return np.asarray(entry)

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
        whole = training.train(config, a, plot=False)
        with self.assertRaises(training.Interrupted):
          training.train(config, b, interrupt_after=4, plot=False)
        resumed = training.train(config, b, plot=False)
    setup = training.build(config)
    start = training.init_train_state(config, setup, config.batch_size)
    self.assertFalse(
        np.allclose(
            feedback(whole.state.learner_state), feedback(start.learner_state)
        )
    )
    np.testing.assert_allclose(
        feedback(resumed.state.learner_state),
        feedback(whole.state.learner_state),
        rtol=1e-6,
    )
    self.assertTrue(np.isfinite(resumed.eval_metrics["loss"]))


class HaikuModelConfigTest(absltest.TestCase):

  def test_haikus_own_rnn_trains_and_resumes(self):
    # configs/haiku_rnn.py: hk.DeepRNN of two hk.LSTMs and an hk.Linear,
    # unmodified, through RNNCoreStep.
    config = haiku_rnn.get_config()
    config.task.update(dict(length=3, num_symbols=3, delay=3))
    config.model.hidden_size = 8
    config.update(
        dict(
            batch_size=8,
            train_steps=40,
            eval_every=40,
            log_every=10,
            checkpoint_every=20,
            learning_rate=0.05,
        )
    )
    workdir = self.create_tempdir().full_path
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      result = training.train(config, workdir, plot=False)
      hidden = result.state.learner_state["rnn_core_step"]
      self.assertEqual(
          sorted(hidden),
          [
              "0_cell:hidden",
              "0_hidden:hidden",
              "1_cell:hidden",
              "1_hidden:hidden",
          ],
      )
      records = metrics_lib.read(workdir)
      losses = [r["loss"] for r in records if "loss" in r]
      self.assertTrue(np.all(np.isfinite(losses)))
      self.assertLess(np.mean(losses[-2:]), losses[0])
      # Resumed from its last checkpoint, the run is finished: same state.
      again = training.train(config, workdir, plot=False)
    self.assertEqual(int(again.state.step), 40)
    chex_params = jax.tree_util.tree_leaves(again.state.params)
    for a, b in zip(
        chex_params, jax.tree_util.tree_leaves(result.state.params)
    ):
      np.testing.assert_array_equal(a, b)


class LongRangeConfigsTest(absltest.TestCase):

  def test_chunks_continue_the_stream(self):
    task = tasks_lib.get_task("stream_recall", num_symbols=3, lag=4, chunk=10)
    self.assertTrue(task.stream)
    first = task.batch(tasks_lib.train_seed(7, 0), 5)
    second = task.batch(tasks_lib.train_seed(7, 1), 5)
    self.assertEqual(first.xs.shape, (10, 5, 3))
    self.assertEqual(first.ys.shape, (10, 5))
    symbols = lambda b: np.argmax(b.xs, axis=-1)
    # Targets are the symbols 4 steps before, across the chunk boundary.
    np.testing.assert_array_equal(first.ys[4:], symbols(first)[:-4])
    np.testing.assert_array_equal(second.ys[:4], symbols(first)[-4:])
    np.testing.assert_array_equal(second.ys[4:], symbols(second)[:-4])
    # The stream's start has no history: masked; the sums are one per lane.
    np.testing.assert_array_equal(first.mask[:4], 0.0)
    np.testing.assert_allclose(first.mask.sum(0), 1.0, 1e-6)
    np.testing.assert_allclose(second.mask.sum(0), 1.0, 1e-6)
    again = task.batch(tasks_lib.train_seed(7, 1), 5)
    np.testing.assert_array_equal(again.xs, second.xs)
    held_out = task.batch(tasks_lib.eval_seed(7, 1), 5)
    np.testing.assert_array_equal(held_out.mask[:4], 0.0)
    self.assertFalse(np.array_equal(held_out.xs, second.xs))
    with self.assertRaisesRegex(ValueError, "chunk"):
      tasks_lib.get_task("stream_recall", lag=10, chunk=10)

  def test_tiny_run_learns_and_keeps_the_stream_state(self):
    config = stream_recall.get_config()
    config.task.update(dict(num_symbols=2, lag=2, chunk=24))
    config.model.update(dict(hidden_size=8, width=8))
    config.update(
        dict(
            batch_size=8,
            train_steps=30,
            update_every=6,
            eval_every=10,
            log_every=10,
            checkpoint_every=30,
            learning_rate=0.02,
        )
    )
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      result = training.train(config, workdir, plot=False)
      records = [r for r in metrics.read(workdir) if r["split"] == "eval"]
    self.assertLen(records, 3)
    self.assertEqual(int(result.state.step), 30)
    self.assertLess(records[-1]["loss"], records[0]["loss"] - 0.05)

  def test_configs_build(self):
    for module in (copy_long, cue_accumulation_1ms, stream_recall):
      with self.subTest(module.__name__):
        config = module.get_config()
        setup = training.build(config)
        self.assertGreater(setup.task.num_steps, 100)
    config = cue_accumulation_1ms.get_config()
    self.assertBetween(training.build(config).task.num_steps, 2200, 2300)
    self.assertGreaterEqual(copy_long.get_config().task.delay, 500)
    self.assertEqual(digits_lru.get_config().task.mode, "pixels")


class RunSpecTest(absltest.TestCase):

  def test_config_is_validated_once_into_a_typed_spec(self):
    config = copy_long.get_config()
    config.learner = "bptt"
    config.remat = "16"
    spec = training.run_spec(config)
    self.assertIsInstance(spec, training.RunSpec)
    self.assertIs(training.run_spec(spec), spec)
    self.assertEqual(spec.task_name, "delayed_copy")
    self.assertEqual(spec.task_options["delay"], 500)
    self.assertEqual(spec.learner_options, {"remat": 16})
    self.assertIsNone(spec.window)  # BPTT covers the whole sequence
    self.assertEqual(spec.model["kind"], "lru")
    setup = training.build(spec)
    self.assertEqual(setup.task.num_steps, 510)
    config.window = -1
    with self.assertRaisesRegex(training.ConfigError, "config.window"):
      training.run_spec(config)

  def test_truncation_past_the_update_interval_is_announced(self):
    config = stream_recall.get_config()
    config.update(dict(learner="tbptt", window=50, update_every=30))
    with self.assertLogs(level="WARNING") as logs:
      training.run_spec(config)
    self.assertIn("in effect 30 steps", "\n".join(logs.output))


if __name__ == "__main__":
  absltest.main()
