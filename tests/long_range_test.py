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
"""The long-range layers, checkpointed BPTT and the long and stream tasks.

* D-RTRL equals BPTT (float64, relative error <= 1e-10, windows 1 and 3) on
  ``LRU``, ``MinGRU``, ``MinLSTM``, the element-wise GRU and LSTM, and the
  pipeline's two-layer LRU stack with a readout (cross-group traces);
  ES-D-RTRL at ``T = 1``; with no cross budget the stack's cut is announced.
* ``bptt(remat=...)`` equals ``bptt`` to 1e-12 and compiles to less than a
  quarter of its memory at ``T = 4096``.
* ``stream_recall``: shapes, masks, chunks that continue each other,
  determinism, and a tiny run whose held-out loss falls; the new configs
  build.
"""

import json
import os
import subprocess
import sys
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from experiments import metrics
from experiments import models
from experiments import tasks as tasks_lib
from experiments import training
from experiments.configs import copy_long
from experiments.configs import cue_accumulation_1ms
from experiments.configs import digits_lru
from experiments.configs import stream_recall
from haiku_etp import testing


def _stack(x):
  cfg = dict(
      kind="lru", num_layers=2, hidden_size=3, width=3, r_min=0.5, r_max=0.95
  )
  return models.make_step(cfg, 2)(x)


_STEPS = {
    "LRU": lambda x: haiku_etp.LRU(4, r_min=0.5, r_max=0.99)(x),
    "MinGRU": lambda x: haiku_etp.MinGRU(3)(x),
    "MinLSTM": lambda x: haiku_etp.MinLSTM(3)(x),
    "elementwise GRU": lambda x: haiku_etp.GRU(3, recurrence="elementwise")(x),
    "elementwise LSTM": lambda x: haiku_etp.LSTM(3, recurrence="elementwise")(
        x
    ),
    "LRU stack": _stack,
}


class ExactTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (f"{name.replace(' ', '_')}_window{w}", name, w)
      for name in _STEPS
      for w in (1, 3)
  )
  def test_d_rtrl_equals_bptt(self, name, window):
    example = testing.ModuleExample(name, _STEPS[name], (3,), ("d_rtrl",))
    with jax.enable_x64(True):
      run = testing.run_module_example(
          example,
          num_steps=5,
          window=window,
          dtype=jnp.float64,
          # ES-D-RTRL's window forms share one path: checked at window 1.
          learners=("d_rtrl", "es_d_rtrl") if window == 1 else ("d_rtrl",),
      )
      error = testing.relative_error(run.grads["d_rtrl"], run.reference)
      self.assertLessEqual(error, 1e-10)
      self.assertEqual(run.approximate["d_rtrl"], ())
      if window == 1:
        # ES-D-RTRL factorises the trace: exact after one step only,
        # measured (not asserted) beyond.
        self.assertGreater(
            testing.relative_error(run.grads["es_d_rtrl"], run.reference),
            1e-3,
        )
        one = testing.run_module_example(
            example,
            num_steps=1,
            dtype=jnp.float64,
            learners=("es_d_rtrl",),
        )
        self.assertLessEqual(
            testing.relative_error(one.grads["es_d_rtrl"], one.reference),
            1e-10,
        )

  def test_stack_without_cross_budget_announces_the_cut(self):
    model = hk.transform_with_state(_stack)
    x = jnp.ones((2, 3))
    learner = haiku_etp.d_rtrl(model, max_cross_bytes=0)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      params, state = learner.init(jax.random.PRNGKey(0), x)
    found = [
        w
        for w in caught
        if issubclass(w.category, haiku_etp.ApproximationWarning)
    ]
    self.assertLen(found, 1)
    message = str(found[0].message)
    self.assertIn("lru_0/b_re/w", message)
    self.assertIn("cross_trace_over_budget", message)
    self.assertNotIn("lru_1/b_re/w", message)  # the top layer stays exact
    verdicts = {
        v.path: v.exact for v in learner.verdicts(params, state, None, x)
    }
    self.assertFalse(verdicts["encoder/w"])
    self.assertTrue(verdicts["lru_1/nu_log"])


class RematTest(absltest.TestCase):

  def _grads(self, learner, xs, ys):
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    loss = lambda o, y: jnp.mean((o - y) ** 2, axis=-1)
    fn = jax.jit(learner.sequence_grad(loss))
    return fn, (params, state, None, xs, ys)

  def test_equals_bptt(self):
    model = hk.transform_with_state(
        lambda x: hk.Linear(2)(haiku_etp.MinGRU(4)(x))
    )
    with jax.enable_x64(True):
      xs = jax.random.normal(jax.random.PRNGKey(1), (23, 2, 3), jnp.float64)
      ys = jax.random.normal(jax.random.PRNGKey(2), (23, 2, 2), jnp.float64)
      fn, args = self._grads(haiku_etp.bptt(model), xs, ys)
      reference = fn(*args)
      for remat in ("sqrt", True, 5, 23, 100):
        with self.subTest(remat=remat):
          fn, args = self._grads(haiku_etp.bptt(model, remat=remat), xs, ys)
          result = fn(*args)
          self.assertLessEqual(
              testing.relative_error(result.grads, reference.grads), 1e-12
          )
          np.testing.assert_allclose(result.losses, reference.losses, 1e-12)
      self.assertIn(
          "gradient checkpointing",
          haiku_etp.bptt(model, remat=8).report(*args[:3], xs[0]),
      )

  def test_memory_at_4096_steps(self):
    model = hk.transform_with_state(
        lambda x: hk.Linear(2)(haiku_etp.LRU(16, r_min=0.9, r_max=0.999)(x))
    )
    xs = jnp.zeros((4096, 4, 3))
    ys = jnp.zeros((4096, 4, 2))
    memory = {}
    for name, remat in (("bptt", None), ("remat", "sqrt")):
      fn, args = self._grads(haiku_etp.bptt(model, remat=remat), xs, ys)
      compiled = fn.lower(*args).compile()
      memory[name] = compiled.memory_analysis().temp_size_in_bytes
    self.assertLess(memory["remat"], memory["bptt"] / 4)

  def test_bad_remat(self):
    model = hk.transform_with_state(lambda x: haiku_etp.MinGRU(2)(x))
    for bad in (0, -3, 1.5, "half", False):
      with self.subTest(remat=bad), self.assertRaisesRegex(
          ValueError, "remat must be"
      ):
        haiku_etp.bptt(model, remat=bad)
    name, options = haiku_etp.parse_learner("bptt:remat=64")
    self.assertEqual((name, options), ("bptt", {"remat": 64}))


class StreamTaskTest(absltest.TestCase):

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


class LengthTableTest(absltest.TestCase):

  def test_binary_writes_the_table(self):
    root = os.path.join(os.path.dirname(__file__), os.pardir)
    with tempfile.TemporaryDirectory() as workdir:
      subprocess.run(
          [
              sys.executable,
              "-m",
              "experiments.benchmarks.length_table",
              f"--workdir={workdir}",
              "--lengths=8,32",
              "--models=alif",
              "--learners=d_rtrl,bptt,bptt:remat=sqrt",
              "--window=4",
              "--run_max_steps=8",
              "--repeats=1",
          ],
          cwd=root,
          check=True,
          capture_output=True,
      )
      with open(os.path.join(workdir, "length_table.json")) as f:
        rows = json.load(f)["alif"]
      with open(os.path.join(workdir, "length_table.md")) as f:
        text = f.read()
      self.assertIn("| bptt:remat=sqrt |", text)
      self.assertIn("| d_rtrl, window 4 |", text)
    self.assertTrue(rows["d_rtrl"]["8"]["run"])
    self.assertFalse(rows["d_rtrl"]["32"]["run"])  # reported, not run
    self.assertIn("T > 8", rows["d_rtrl"]["32"]["why"])
    # BPTT's memory grows with T; checkpointing's grows less.
    self.assertGreater(rows["bptt"]["32"]["mib"], rows["bptt"]["8"]["mib"])
    self.assertLess(
        rows["bptt:remat=sqrt"]["32"]["mib"], rows["bptt"]["32"]["mib"]
    )


if __name__ == "__main__":
  absltest.main()
