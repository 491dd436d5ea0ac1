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
"""Tests of the task interface and the synthetic tasks."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from experiments import tasks
from experiments.tasks import base
from experiments.tasks import synthetic

_B = 16


def _perfect(task, batch):
  """Returns outputs that predict every target exactly."""
  if task.kind == base.CLASSIFICATION:
    return 10.0 * jax.nn.one_hot(batch.ys, task.output_size)
  return jnp.asarray(batch.ys)


def _cue_sides(task, xs, size=10, cue_duration=8, cue_gap=4, num_cues=7):
  """Spike counts of the left and right populations per cue, from ``xs``."""
  del task
  period = cue_duration + cue_gap
  counts = np.zeros((num_cues, xs.shape[1], 2))
  for k in range(num_cues):
    window = xs[k * period : k * period + cue_duration]
    counts[k, :, 0] = window[..., :size].sum(axis=(0, 2))
    counts[k, :, 1] = window[..., size : 2 * size].sum(axis=(0, 2))
  return counts


class SeedTest(absltest.TestCase):

  def test_streams_are_injective_and_disjoint(self):
    train = [tasks.train_seed(s, k) for s in range(40) for k in range(300)]
    evals = [tasks.eval_seed(s, k) for s in range(40) for k in range(300)]
    self.assertLen(set(train), len(train))
    self.assertLen(set(evals), len(evals))
    self.assertEmpty(set(train) & set(evals))
    big = tasks.train_seed(2**32 - 1, 10**6)
    self.assertNotEqual(big, tasks.eval_seed(2**32 - 1, 10**6))
    np.random.default_rng(big)  # A valid seed despite its size.

  def test_bad_seed_arguments(self):
    with self.assertRaisesRegex(ValueError, "train_seed: step must be"):
      tasks.train_seed(0, -1)
    with self.assertRaisesRegex(TypeError, "eval_seed: seed must be.*1.5"):
      tasks.eval_seed(1.5, 0)


class SyntheticTaskTest(parameterized.TestCase):

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_parts_are_slices_of_the_whole_batch(self, name):
    task = tasks.get_task(name)
    whole = task.batch(9, 8)
    for index in range(4):
      part = task.batch(9, 8, part=(index, 4))
      for got, full in zip(part, whole):
        np.testing.assert_array_equal(got, full[:, 2 * index : 2 * index + 2])
    with self.assertRaisesRegex(ValueError, "not divisible by the 3 parts"):
      task.batch(9, 8, part=(0, 3))
    with self.assertRaisesRegex(ValueError, r"0 <= index < count"):
      task.batch(9, 8, part=(2, 2))

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_shapes_and_dtypes(self, name):
    task = tasks.get_task(name)
    batch = task.batch(tasks.train_seed(0, 0), _B)
    t = task.num_steps
    self.assertEqual(batch.xs.shape, (t, _B) + task.input_shape)
    self.assertEqual(batch.xs.dtype, np.float32)
    self.assertEqual(batch.mask.shape, (t, _B))
    self.assertEqual(batch.mask.dtype, np.float32)
    if task.kind == base.CLASSIFICATION:
      self.assertEqual(batch.ys.shape, (t, _B))
      self.assertEqual(batch.ys.dtype, np.int32)
      self.assertTrue(np.all((batch.ys >= 0) & (batch.ys < task.output_size)))
    else:
      self.assertEqual(batch.ys.shape, (t, _B, task.output_size))
      self.assertEqual(batch.ys.dtype, np.float32)

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_deterministic_in_the_seed(self, name):
    task = tasks.get_task(name)
    a = task.batch(7, _B)
    b = tasks.get_task(name).batch(7, _B)
    c = task.batch(8, _B)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    self.assertFalse(np.array_equal(a.xs, c.xs))

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_mask_sums_to_one_per_sample(self, name):
    batch = tasks.get_task(name).batch(3, _B)
    np.testing.assert_allclose(batch.mask.sum(axis=0), 1.0, rtol=1e-6)
    self.assertTrue(np.all(batch.mask >= 0))

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_loss_is_finite_and_differentiable(self, name):
    task = tasks.get_task(name)
    batch = task.batch(5, _B)
    outs = jax.random.normal(
        jax.random.PRNGKey(0), (task.num_steps, _B, task.output_size)
    )

    def total(outs):
      # Per-sample losses (T, B), weighted as the learners weight them.
      losses = jax.vmap(task.loss)(outs, batch.ys)
      chex.assert_shape(losses, (task.num_steps, _B))
      return jnp.sum(batch.mask * losses) / _B

    value, grad = jax.jit(jax.value_and_grad(total))(outs)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))
    # Only weighted steps carry gradient, and all of them do.
    weighted = batch.mask > 0
    self.assertTrue(np.all(np.abs(grad).sum(-1)[~weighted] == 0))
    self.assertTrue(np.all(np.abs(grad).sum(-1)[weighted] > 0))
    # The metric's loss is the per-sample mean of the same sum.
    metric = jax.jit(task.metric)(outs, batch.ys, batch.mask)
    np.testing.assert_allclose(metric["loss"], value, rtol=1e-5)

  def test_classification_loss_matches_numpy(self):
    rng = np.random.default_rng(0)
    out = rng.normal(size=(5, 3)).astype(np.float32)
    y = rng.integers(0, 3, 5)
    mask = rng.uniform(size=5).astype(np.float32)
    logp = out - np.log(np.exp(out).sum(-1, keepdims=True))
    expected = -logp[np.arange(5), y]
    np.testing.assert_allclose(
        base.classification_loss(out, y), expected, rtol=1e-5
    )

  def test_regression_loss_matches_numpy(self):
    rng = np.random.default_rng(1)
    out, y = rng.normal(size=(2, 4, 3)).astype(np.float32)
    expected = ((out - y) ** 2).sum(-1)
    np.testing.assert_allclose(
        base.regression_loss(out, y), expected, rtol=1e-5
    )

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_metric_of_perfect_and_wrong_predictions(self, name):
    task = tasks.get_task(name)
    batch = task.batch(11, _B)
    metric = jax.jit(task.metric)
    perfect = metric(_perfect(task, batch), batch.ys, batch.mask)
    self.assertEqual(set(perfect), {task.metric_name, "loss", "count"})
    np.testing.assert_allclose(perfect["count"], _B)
    if task.higher_is_better:
      np.testing.assert_allclose(perfect[task.metric_name], 1.0, rtol=1e-6)
      wrong = 10.0 * jax.nn.one_hot(
          (batch.ys + 1) % task.output_size, task.output_size
      )
      np.testing.assert_allclose(
          metric(wrong, batch.ys, batch.mask)[task.metric_name], 0.0
      )
    else:
      np.testing.assert_allclose(perfect[task.metric_name], 0.0, atol=1e-7)
      shifted = metric(_perfect(task, batch) + 0.5, batch.ys, batch.mask)
      np.testing.assert_allclose(shifted[task.metric_name], 0.25, rtol=1e-5)

  def test_metric_ignores_padded_samples(self):
    task = tasks.get_task("delayed_copy")
    batch = task.batch(0, 4)
    mask = batch.mask.copy()
    mask[:, 3] = 0.0
    outs = np.array(_perfect(task, batch))
    outs[:, 3] = np.roll(outs[:, 3], 1, axis=-1)
    metric = task.metric(outs, batch.ys, mask)
    np.testing.assert_allclose(metric["accuracy"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(metric["count"], 3.0)

  def test_mean_metrics_weights_by_count(self):
    combined = tasks.mean_metrics(
        [
            {"accuracy": 1.0, "loss": 0.0, "count": 3.0},
            {"accuracy": 0.0, "loss": 2.0, "count": 1.0},
        ]
    )
    np.testing.assert_allclose(combined["accuracy"], 0.75)
    np.testing.assert_allclose(combined["loss"], 0.5)
    np.testing.assert_allclose(combined["count"], 4.0)
    with self.assertRaisesRegex(ValueError, "results\\[0\\] has no 'count'"):
      tasks.mean_metrics([{"accuracy": 1.0}])
    with self.assertRaisesRegex(ValueError, "results is empty"):
      tasks.mean_metrics([])

  def test_evaluation_batches_use_the_eval_stream(self):
    task = tasks.get_task("adding")
    got = list(tasks.evaluation_batches(task, 4, seed=2, num_batches=3))
    self.assertLen(got, 3)
    for i, batch in enumerate(got):
      np.testing.assert_array_equal(
          batch.xs, task.batch(tasks.eval_seed(2, i), 4).xs
      )

  def test_get_task_unknown_name(self):
    with self.assertRaisesRegex(
        ValueError, "unknown task 'copy'.*cue_accumulation, delayed_copy"
    ):
      tasks.get_task("copy")

  def test_get_task_passes_hyperparameters(self):
    task = tasks.get_task("adding", num_steps=9)
    self.assertEqual(task.num_steps, 9)

  @parameterized.parameters(
      (
          "cue_accumulation",
          dict(num_cues=6),
          ValueError,
          "num_cues must be odd",
      ),
      ("cue_accumulation", dict(num_cues=0), ValueError, "num_cues must be >="),
      ("cue_accumulation", dict(cue_duration=2.5), TypeError, "cue_duration"),
      ("cue_accumulation", dict(rate=2000.0), ValueError, "exceeds 1 spike"),
      ("cue_accumulation", dict(noise_rate=-1.0), ValueError, "noise_rate"),
      ("cue_accumulation", dict(dt=0.0), ValueError, "dt must be a positive"),
      ("cue_accumulation", dict(rate="fast"), TypeError, "rate must be a real"),
      ("delayed_copy", dict(num_symbols=1), ValueError, "num_symbols must be"),
      ("delayed_copy", dict(length=0), ValueError, "length must be >= 1"),
      ("delayed_copy", dict(delay=-1), ValueError, "delay must be >= 0"),
      ("adding", dict(num_steps=1), ValueError, "num_steps must be >= 2"),
      ("adding", dict(num_steps=True), TypeError, "num_steps must be an int"),
  )
  def test_bad_hyperparameters(self, name, kwargs, error, regex):
    with self.assertRaisesRegex(error, f"{name}: .*{regex}"):
      tasks.get_task(name, **kwargs)

  @parameterized.parameters(*tasks.SYNTHETIC_TASKS)
  def test_bad_batch_arguments(self, name):
    task = tasks.get_task(name)
    with self.assertRaisesRegex(ValueError, f"{name}: batch_size must be at"):
      task.batch(0, 0)
    with self.assertRaisesRegex(ValueError, f"{name}: seed must be"):
      task.batch(-1, 2)


class CueAccumulationTest(absltest.TestCase):

  def test_layout(self):
    task = synthetic.cue_accumulation()
    self.assertEqual(task.num_steps, 110)
    self.assertEqual(task.input_shape, (40,))
    self.assertEqual(task.output_size, 2)
    batch = task.batch(0, 64)
    self.assertTrue(np.all((batch.xs == 0) | (batch.xs == 1)))
    np.testing.assert_allclose(batch.mask[:100], 0.0)
    np.testing.assert_allclose(batch.mask[100:], 0.1)
    # Labels are constant over time.
    np.testing.assert_array_equal(
        batch.ys, np.broadcast_to(batch.ys[0], (110, 64))
    )
    cue = np.zeros(110, bool)
    for k in range(7):
      cue[12 * k : 12 * k + 8] = True
    left_right = batch.xs[..., :20].sum(axis=(1, 2))
    self.assertEqual(left_right[~cue].sum(), 0)  # Cues only in cue windows.
    recall = batch.xs[..., 20:30].sum(axis=(1, 2))
    self.assertEqual(recall[:100].sum(), 0)
    self.assertGreater(recall[100:].sum(), 0)
    # A cue window has spikes of one side only.
    counts = _cue_sides(task, batch.xs)
    self.assertFalse(np.any((counts[..., 0] > 0) & (counts[..., 1] > 0)))

  def test_cue_counts_determine_the_label(self):
    # One spike per step and channel during a cue: every cue is visible.
    task = synthetic.cue_accumulation(rate=1000.0, noise_rate=0.0)
    batch = task.batch(1, 200)
    counts = _cue_sides(task, batch.xs)
    np.testing.assert_array_equal(counts.sum(-1), 80)
    right_cues = (counts[..., 1] > 0).sum(axis=0)
    np.testing.assert_array_equal(batch.ys[0], (right_cues > 3).astype(int))
    self.assertEqual(batch.xs[..., 30:].sum(), 0)

  def test_default_rates_agree_with_the_label(self):
    task = synthetic.cue_accumulation()
    batch = task.batch(2, 500)
    counts = _cue_sides(task, batch.xs)
    visible = np.all(counts.sum(-1) > 0, axis=0)
    self.assertGreater(visible.mean(), 0.5)
    right_cues = (counts[..., 1] > 0).sum(axis=0)
    np.testing.assert_array_equal(
        batch.ys[0][visible], (right_cues[visible] > 3).astype(int)
    )
    # Rates: 40 Hz cues and 10 Hz noise at 1 ms steps.
    np.testing.assert_allclose(
        counts.sum() / (7 * 8 * 10 * 500), 0.04, rtol=0.1
    )
    np.testing.assert_allclose(batch.xs[..., 30:].mean(), 0.01, rtol=0.1)

  def test_labels_are_balanced(self):
    labels = synthetic.cue_accumulation().batch(3, 4000).ys[0]
    self.assertBetween(labels.mean(), 0.46, 0.54)


class DelayedCopyTest(absltest.TestCase):

  def test_targets_copy_the_inputs(self):
    task = synthetic.delayed_copy(length=4, num_symbols=3, delay=5)
    self.assertEqual(task.num_steps, 13)
    batch = task.batch(0, 32)
    symbols = np.argmax(batch.xs[:4, :, :3], axis=-1)
    np.testing.assert_array_equal(batch.xs[:4, :, :3].sum(-1), 1)
    np.testing.assert_array_equal(batch.ys[9:], symbols)
    np.testing.assert_array_equal(batch.xs[9, :, 3], 1)
    self.assertEqual(batch.xs[..., 3].sum(), 32)
    self.assertEqual(batch.xs[4:].sum(), 32)
    np.testing.assert_allclose(batch.mask[9:], 0.25)
    np.testing.assert_allclose(batch.mask[:9], 0.0)

  def test_distractors_fill_the_delay_on_their_own_channels(self):
    task = synthetic.delayed_copy(
        length=4, num_symbols=3, delay=5, distractors=True
    )
    self.assertEqual(task.input_shape, (7,))
    batch = task.batch(0, 32)
    plain = synthetic.delayed_copy(length=4, num_symbols=3, delay=5).batch(
        0, 32
    )
    # The symbols, the go marker and the targets are the plain task's.
    np.testing.assert_array_equal(batch.xs[:4, :, :3], plain.xs[:4, :, :3])
    np.testing.assert_array_equal(batch.xs[..., 6], plain.xs[..., 3])
    np.testing.assert_array_equal(batch.ys, plain.ys)
    # One distractor a step during the delay, none elsewhere.
    np.testing.assert_array_equal(batch.xs[4:9, :, 3:6].sum(-1), 1)
    self.assertEqual(batch.xs[..., 3:6].sum(), 5 * 32)
    self.assertEqual(batch.xs[4:9, :, :3].sum(), 0)
    with self.assertRaisesRegex(TypeError, "distractors must be a bool"):
      synthetic.delayed_copy(distractors=1)

  def test_symbols_are_balanced(self):
    batch = synthetic.delayed_copy(num_symbols=4).batch(1, 2000)
    freq = np.bincount(batch.ys[-5:].ravel(), minlength=4) / batch.ys[-5:].size
    np.testing.assert_allclose(freq, 0.25, atol=0.02)


class AddingTest(absltest.TestCase):

  def test_target_is_the_sum_of_the_marked_values(self):
    task = synthetic.adding(num_steps=21)
    batch = task.batch(4, 300)
    values, markers = batch.xs[..., 0], batch.xs[..., 1]
    np.testing.assert_array_equal(markers.sum(0), 2)
    np.testing.assert_array_equal(markers[:10].sum(0), 1)
    expected = (values * markers).sum(0)
    np.testing.assert_allclose(batch.ys[-1, :, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(batch.ys[0, :, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(batch.mask[-1], 1.0)
    np.testing.assert_allclose(batch.mask[:-1], 0.0)
    self.assertTrue(np.all((values >= 0) & (values < 1)))

  def test_constant_prediction_baseline(self):
    task = synthetic.adding()
    batch = task.batch(5, 4000)
    ones = np.ones_like(batch.ys)
    mse = task.metric(ones, batch.ys, batch.mask)["mse"]
    np.testing.assert_allclose(mse, 1.0 / 6.0, rtol=0.05)


class LabelledSequenceTaskTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.train_x = rng.normal(size=(10, 6, 3)).astype(np.float32)
    self.test_x = rng.normal(size=(7, 6, 3)).astype(np.float32)
    self.task = base.labelled_sequence_task(
        "toy",
        train_inputs=lambda idx: self.train_x[idx],
        train_labels=np.arange(10) % 4,
        test_inputs=lambda idx: self.test_x[idx],
        test_labels=np.arange(7) % 4,
        num_steps=6,
        input_shape=(3,),
        num_classes=4,
        readout_fraction=0.5,
    )

  def test_batch_samples_distinct_training_samples(self):
    batch = self.task.batch(3, 10)
    self.assertEqual(batch.xs.shape, (6, 10, 3))
    rows = {tuple(batch.xs[:, b].ravel()) for b in range(10)}
    self.assertEqual(rows, {tuple(x.ravel()) for x in self.train_x})
    for b in range(10):
      i = int(np.flatnonzero((self.train_x == batch.xs[:, b]).all((1, 2)))[0])
      np.testing.assert_array_equal(batch.ys[:, b], i % 4)
    np.testing.assert_allclose(batch.mask[:3], 0.0)
    np.testing.assert_allclose(batch.mask[3:], 1.0 / 3.0)
    with self.assertRaisesRegex(ValueError, "toy: batch_size 11 exceeds"):
      self.task.batch(0, 11)

  def test_parts_read_only_their_samples(self):
    whole = self.task.batch(3, 10)
    read = []
    task = base.labelled_sequence_task(
        "toy",
        train_inputs=lambda idx: read.append(len(idx)) or self.train_x[idx],
        train_labels=np.arange(10) % 4,
        test_inputs=lambda idx: read.append(len(idx)) or self.test_x[idx],
        test_labels=np.arange(7) % 4,
        num_steps=6,
        input_shape=(3,),
        num_classes=4,
        readout_fraction=0.5,
    )
    for index in range(2):
      part = task.batch(3, 10, part=(index, 2))
      for got, full in zip(part, whole):
        np.testing.assert_array_equal(got, full[:, 5 * index : 5 * index + 5])
    wholes = list(self.task.eval_batches(4))
    for index in range(2):
      parts = list(task.eval_batches(4, part=(index, 2)))
      self.assertLen(parts, len(wholes))
      for got, full in zip(parts, wholes):
        for g, f in zip(got, full):
          np.testing.assert_array_equal(g, f[:, 2 * index : 2 * index + 2])
    self.assertEqual(set(read), {5, 2})
    with self.assertRaisesRegex(ValueError, "toy: part must be"):
      task.batch(3, 10, part=1)

  def test_eval_batches_cover_the_test_split_once(self):
    batches = list(self.task.eval_batches(3))
    self.assertLen(batches, 3)
    xs = np.concatenate([b.xs for b in batches], axis=1)
    mask = np.concatenate([b.mask for b in batches], axis=1)
    np.testing.assert_array_equal(xs[:, :7], np.moveaxis(self.test_x, 0, 1))
    np.testing.assert_array_equal(xs[:, 7:], 0.0)
    np.testing.assert_allclose(mask.sum(0), [1] * 7 + [0, 0], rtol=1e-6)
    ys = np.concatenate([b.ys for b in batches], axis=1)
    np.testing.assert_array_equal(ys[0], [0, 1, 2, 3, 0, 1, 2, 0, 0])
    results = [
        self.task.metric(10.0 * jax.nn.one_hot(b.ys, 4), b.ys, b.mask)
        for b in batches
    ]
    combined = tasks.mean_metrics(results)
    np.testing.assert_allclose(combined["accuracy"], 1.0)
    np.testing.assert_allclose(combined["count"], 7.0)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "toy: readout_fraction must be"):
      base.labelled_sequence_task(
          "toy",
          train_inputs=None,
          train_labels=[0],
          test_inputs=None,
          test_labels=[0],
          num_steps=2,
          input_shape=(1,),
          num_classes=2,
          readout_fraction=0.0,
      )
    with self.assertRaisesRegex(ValueError, "toy: test label 5 is outside"):
      base.labelled_sequence_task(
          "toy",
          train_inputs=None,
          train_labels=[0],
          test_inputs=None,
          test_labels=[5],
          num_steps=2,
          input_shape=(1,),
          num_classes=2,
      )


if __name__ == "__main__":
  absltest.main()
