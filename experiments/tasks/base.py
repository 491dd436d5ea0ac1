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
"""The interface shared by the synthetic tasks and the dataset tasks.

A ``Task`` describes a sequence problem: the shape of one input step, the
number of steps, the readout size, a ``batch(seed, batch_size)`` function
returning time-major numpy arrays, and a per-step ``loss`` and a whole
sequence ``metric`` written with ``jax.numpy``.

Every ``Batch`` carries a ``mask`` of loss weights, shape ``(T, B)``: the
weights of one real sample sum to 1 over time and those of a padded sample
are 0. ``task.loss(out_t, y_t)`` is per sample, and the learners weight it
with the mask (``sum_b mask[t, b] * loss[b] / B`` per step), so the summed
objective is the mean loss per sample of a full batch.

Seeds. ``batch`` is a pure function of its seed
(``np.random.default_rng(seed)``). Training draws its batches from
``train_seed(seed, step)`` and evaluation from ``eval_seed(seed, index)``:
both map a pair of non-negative integers injectively (Cantor pairing) and
tag the result with its parity, even for training, odd for evaluation, so the
two streams never share a seed and, for the synthetic tasks, never share a
batch. Dataset tasks sample training batches from the training split and
evaluate on the test split through ``Task.eval_batches``.
"""

import math
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"


class Batch(NamedTuple):
  """One batch of sequences, time-major.

  Attributes:
    xs: ``(T, B, *input_shape)`` float32 inputs.
    ys: ``(T, B)`` int32 class targets, or ``(T, B, output_size)`` float32
      regression targets.
    mask: ``(T, B)`` float32 loss weights; each real sample's weights sum to 1
      over time, a padded sample's weights are 0.
  """

  xs: np.ndarray
  ys: np.ndarray
  mask: np.ndarray


class Task(NamedTuple):
  """A sequence task.

  Attributes:
    name: Short name of the task.
    input_shape: Shape of one sample's input at one step.
    num_steps: Sequence length ``T``.
    output_size: Number of readout units the model must produce.
    kind: ``"classification"`` or ``"regression"``.
    batch: ``batch(seed, batch_size, part=None) -> Batch``, a pure function
      of the seed. ``part=(index, count)`` returns only samples
      ``[index * batch_size // count, (index + 1) * batch_size // count)``
      of the same batch, equal to that slice of the whole one: the share of
      process ``index`` of ``count`` (``count`` must divide ``batch_size``).
      Dataset tasks then read and bin only those samples.
    loss: ``loss(out_t, y_t) -> (B,)``, the jittable per-sample loss of
      one step: the softmax cross-entropy (classification) or the squared
      error summed over outputs (regression). The learners apply the mask.
    metric: ``metric(outs, ys, mask) -> dict``, jittable, on whole sequences
      (``outs`` is ``(T, B, output_size)``). The dict holds the headline
      metric, ``"loss"`` (the mask-weighted loss per sample) and ``"count"``
      (the number of real samples, the weight for ``mean_metrics``).
    metric_name: Key of the headline metric (``"accuracy"`` or ``"mse"``).
    higher_is_better: Whether a larger headline metric is better.
    eval_batches: For dataset tasks, ``eval_batches(batch_size, part=None)``
      iterating once over the whole test split in order (the last batch
      padded with samples of mask 0; ``part`` as for ``batch``); ``None`` for
      synthetic tasks, which evaluate on batches from ``eval_seed``.
    stream: Whether the training batches are consecutive chunks of one
      endless stream per batch lane (``batch(train_seed(seed, step))`` is
      chunk ``step``): training keeps the learner state from one chunk to
      the next instead of resetting it, and the train metrics are the online
      metrics on the stream. Evaluation batches start from a reset state.
  """

  name: str
  input_shape: tuple[int, ...]
  num_steps: int
  output_size: int
  kind: str
  batch: Callable[[int, int], Batch]
  loss: Callable[..., jnp.ndarray]
  metric: Callable[..., dict[str, jnp.ndarray]]
  metric_name: str
  higher_is_better: bool
  eval_batches: Optional[Callable[[int], Iterator[Batch]]] = None
  stream: bool = False


def _check_index(fn, name, value):
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)
  ):
    raise TypeError(
        f"{fn}: {name} must be a non-negative integer, got {value!r} of type "
        f"{type(value).__name__}."
    )
  if value < 0:
    raise ValueError(
        f"{fn}: {name} must be a non-negative integer, got {value}."
    )
  return int(value)


def _pair(a, b):
  return (a + b) * (a + b + 1) // 2 + b


def train_seed(seed: int, step: int) -> int:
  """Returns the seed of training batch ``step`` of run ``seed``.

  Args:
    seed: Non-negative run seed.
    step: Non-negative training step.

  Returns:
    An even non-negative integer, distinct for every ``(seed, step)`` and
    never equal to any ``eval_seed``.

  Raises:
    TypeError: If an argument is not an integer.
    ValueError: If an argument is negative.
  """
  seed = _check_index("train_seed", "seed", seed)
  step = _check_index("train_seed", "step", step)
  return 2 * _pair(seed, step)


def _unpair(z: int) -> tuple[int, int]:
  w = (math.isqrt(8 * z + 1) - 1) // 2
  b = z - w * (w + 1) // 2
  return w - b, b


def split_seed(batch_seed: int) -> tuple[bool, int, int]:
  """``(is_train, seed, index)`` of a seed from :func:`train_seed` (``index``
  is the step) or :func:`eval_seed` (the batch index): the inverse of both,
  for stream tasks whose chunk ``step`` continues chunk ``step - 1``."""
  batch_seed = _check_index("split_seed", "batch_seed", batch_seed)
  seed, index = _unpair(batch_seed // 2)
  return batch_seed % 2 == 0, seed, index


def eval_seed(seed: int, index: int) -> int:
  """Returns the seed of evaluation batch ``index`` of run ``seed``.

  Args:
    seed: Non-negative run seed.
    index: Non-negative index of the evaluation batch.

  Returns:
    An odd non-negative integer, distinct for every ``(seed, index)`` and
    never equal to any ``train_seed``.

  Raises:
    TypeError: If an argument is not an integer.
    ValueError: If an argument is negative.
  """
  seed = _check_index("eval_seed", "seed", seed)
  index = _check_index("eval_seed", "index", index)
  return 2 * _pair(seed, index) + 1


def check_batch_args(fn: str, seed, batch_size) -> None:
  """Validates the arguments of a ``batch(seed, batch_size)`` function.

  Args:
    fn: Name of the task, for the message.
    seed: Must be a non-negative integer.
    batch_size: Must be a positive integer.

  Raises:
    TypeError: If an argument is not an integer.
    ValueError: If ``seed`` is negative or ``batch_size`` is not positive.
  """
  _check_index(fn, "seed", seed)
  _check_index(fn, "batch_size", batch_size)
  if batch_size < 1:
    raise ValueError(f"{fn}: batch_size must be at least 1, got {batch_size}.")


def part_slice(fn: str, part, batch_size: int) -> slice:
  """The samples of a global batch that ``part=(index, count)`` selects.

  Args:
    fn: Name of the task, for the message.
    part: ``None`` (the whole batch) or ``(index, count)`` with
      ``0 <= index < count`` and ``count`` dividing ``batch_size``.
    batch_size: The global batch size.

  Returns:
    The ``slice`` of the batch axis.

  Raises:
    ValueError: For a malformed ``part`` or a ``count`` that does not divide
      ``batch_size``.
  """
  if part is None:
    return slice(0, batch_size)
  try:
    index, count = (int(v) for v in part)
  except (TypeError, ValueError):
    raise ValueError(
        f"{fn}: part must be (index, count), got {part!r}."
    ) from None
  if count < 1 or not 0 <= index < count:
    raise ValueError(
        f"{fn}: part {part!r} needs count >= 1 and 0 <= index < count."
    )
  if batch_size % count:
    raise ValueError(
        f"{fn}: batch_size {batch_size} is not divisible by the {count} parts"
        f" of part={part!r}; use a multiple of {count}."
    )
  size = batch_size // count
  return slice(index * size, (index + 1) * size)


def with_parts(fn: str, batch: Callable[[int, int], Batch]):
  """Gives a ``batch(seed, batch_size)`` function the ``part`` argument.

  The whole batch is made and sliced: for tasks generated in code, where
  making a batch costs little next to the update.
  """

  def batch_part(seed, batch_size, part=None):
    full = batch(seed, batch_size)
    if part is None:
      return full
    rows = part_slice(fn, part, batch_size)
    return Batch(*(np.ascontiguousarray(v[:, rows]) for v in full))

  return batch_part


def _nll(outs, ys):
  """Softmax cross-entropy of logits ``outs[..., C]`` at integer ``ys``."""
  logp = jax.nn.log_softmax(jnp.asarray(outs), axis=-1)
  ys = jnp.asarray(ys).astype(jnp.int32)
  return -jnp.take_along_axis(logp, ys[..., None], axis=-1)[..., 0]


def classification_loss(out_t, y_t):
  """Per-sample softmax cross-entropy of one step.

  Args:
    out_t: ``(B, C)`` logits.
    y_t: ``(B,)`` integer class targets.

  Returns:
    ``(B,)`` losses ``CE(out_t[b], y_t[b])``.
  """
  return _nll(out_t, y_t)


def regression_loss(out_t, y_t):
  """Per-sample squared error of one step, summed over outputs.

  Args:
    out_t: ``(B, O)`` predictions.
    y_t: ``(B, O)`` targets.

  Returns:
    ``(B,)`` losses ``sum_o (out_t[b, o] - y_t[b, o])**2``.
  """
  return jnp.sum((jnp.asarray(out_t) - y_t) ** 2, axis=-1)


def _per_sample(total, count):
  """Divides a mask-weighted sum by the number of real samples."""
  return total / jnp.maximum(count, 1.0)


def _real_samples(mask):
  """Returns a ``(B,)`` float indicator of samples with a positive weight."""
  return (jnp.sum(mask, axis=0) > 0).astype(jnp.float32)


def sequence_accuracy(outs, ys, mask):
  """Accuracy of the mask-weighted mean output of each sample.

  Each sample's prediction is the argmax of ``sum_t mask[t] * outs[t]``; its
  label is ``ys`` at the step of largest weight (the tasks using this metric
  hold the label constant over the weighted steps).

  Args:
    outs: ``(T, B, C)`` logits.
    ys: ``(T, B)`` integer labels.
    mask: ``(T, B)`` weights.

  Returns:
    ``{"accuracy", "loss", "count"}``: the accuracy and the mask-weighted
    cross-entropy averaged over the real samples (those with a positive total
    weight), and their number.
  """
  outs = jnp.asarray(outs)
  mask = jnp.asarray(mask, jnp.float32)
  real = _real_samples(mask)
  mean_out = jnp.sum(mask[..., None] * outs, axis=0)
  step = jnp.argmax(mask, axis=0)
  label = jnp.take_along_axis(jnp.asarray(ys), step[None, :], axis=0)[0]
  correct = (jnp.argmax(mean_out, axis=-1) == label).astype(jnp.float32)
  count = jnp.sum(real)
  return {
      "accuracy": _per_sample(jnp.sum(real * correct), count),
      "loss": _per_sample(jnp.sum(mask * _nll(outs, ys)), count),
      "count": count,
  }


def step_accuracy(outs, ys, mask):
  """Mask-weighted accuracy of every step's output.

  Args:
    outs: ``(T, B, C)`` logits.
    ys: ``(T, B)`` integer targets.
    mask: ``(T, B)`` weights.

  Returns:
    ``{"accuracy", "loss", "count"}``: the mask-weighted fraction of correct
    steps and cross-entropy, per real sample, and the number of real samples.
  """
  outs = jnp.asarray(outs)
  mask = jnp.asarray(mask, jnp.float32)
  correct = (jnp.argmax(outs, axis=-1) == ys).astype(jnp.float32)
  count = jnp.sum(_real_samples(mask))
  return {
      "accuracy": _per_sample(jnp.sum(mask * correct), count),
      "loss": _per_sample(jnp.sum(mask * _nll(outs, ys)), count),
      "count": count,
  }


def mean_squared_error(outs, ys, mask):
  """Mask-weighted mean squared error.

  Args:
    outs: ``(T, B, O)`` predictions.
    ys: ``(T, B, O)`` targets.
    mask: ``(T, B)`` weights.

  Returns:
    ``{"mse", "loss", "count"}``: the squared error averaged over outputs
    (``mse``) and summed over outputs (``loss``, the training loss), both
    mask-weighted per real sample, and the number of real samples.
  """
  err = (jnp.asarray(outs) - ys) ** 2
  mask = jnp.asarray(mask, jnp.float32)
  count = jnp.sum(_real_samples(mask))
  return {
      "mse": _per_sample(jnp.sum(mask * jnp.mean(err, axis=-1)), count),
      "loss": _per_sample(jnp.sum(mask * jnp.sum(err, axis=-1)), count),
      "count": count,
  }


def mean_metrics(results: Iterable[dict]) -> dict[str, float]:
  """Combines the metrics of several batches, weighting each by its count.

  Args:
    results: Dicts returned by a task's ``metric``, each with a ``"count"``.

  Returns:
    The count-weighted mean of every other key, and the total ``"count"``.

  Raises:
    ValueError: If ``results`` is empty, lacks ``"count"`` or the total
      count is 0.
  """
  results = list(results)
  if not results:
    raise ValueError("mean_metrics: results is empty; pass at least one dict.")
  for i, r in enumerate(results):
    if "count" not in r:
      raise ValueError(
          f"mean_metrics: results[{i}] has no 'count' key (keys: "
          f"{sorted(r)}); pass the dicts returned by Task.metric."
      )
  total = float(sum(float(r["count"]) for r in results))
  if total <= 0:
    raise ValueError("mean_metrics: the total count is 0 (all samples padded).")
  keys = [k for k in results[0] if k != "count"]
  out = {
      k: sum(float(r[k]) * float(r["count"]) for r in results) / total
      for k in keys
  }
  out["count"] = total
  return out


def evaluation_batches(
    task: Task, batch_size: int, *, seed: int = 0, num_batches: int = 8
) -> Iterator[Batch]:
  """Yields a task's evaluation batches.

  Args:
    task: The task.
    batch_size: Samples per batch.
    seed: Run seed for synthetic tasks (``eval_seed(seed, i)``).
    num_batches: Number of batches for synthetic tasks; dataset tasks iterate
      once over their whole test split instead.

  Yields:
    ``Batch`` values.
  """
  if task.eval_batches is not None:
    yield from task.eval_batches(batch_size)
    return
  for i in range(num_batches):
    yield task.batch(eval_seed(seed, i), batch_size)


def labelled_sequence_task(
    name: str,
    *,
    train_inputs: Callable[[np.ndarray], np.ndarray],
    train_labels: np.ndarray,
    test_inputs: Callable[[np.ndarray], np.ndarray],
    test_labels: np.ndarray,
    num_steps: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    readout_fraction: float = 1.0,
) -> Task:
  """Builds a classification ``Task`` over a fixed train and test split.

  The loss is read over the last ``ceil(readout_fraction * num_steps)`` steps
  with equal weights summing to 1 per sample; the metric is
  ``sequence_accuracy`` (argmax of the mask-weighted mean output).
  ``batch(seed, batch_size)`` draws ``batch_size`` distinct training samples
  with ``np.random.default_rng(seed)``; ``eval_batches(batch_size)`` walks
  the test split in order and pads the last batch with zero inputs, label 0
  and mask 0. With ``part=(index, count)`` both read only that part's
  samples of each batch (the inputs of the others are never built).

  Args:
    name: Task name.
    train_inputs: Maps an index array of training samples to their inputs,
      ``(n, T, *input_shape)`` float32, sample-major.
    train_labels: ``(N_train,)`` integer labels.
    test_inputs: As ``train_inputs``, for the test split.
    test_labels: ``(N_test,)`` integer labels.
    num_steps: Sequence length ``T``.
    input_shape: Shape of one input step.
    num_classes: Number of classes (the readout size).
    readout_fraction: Fraction of the last steps that carry the loss, in
      ``(0, 1]``.

  Returns:
    The ``Task``.

  Raises:
    ValueError: If ``readout_fraction`` is out of range, a split is empty or
      a label is outside ``[0, num_classes)``.
  """
  if not 0.0 < readout_fraction <= 1.0:
    raise ValueError(
        f"{name}: readout_fraction must be in (0, 1], got {readout_fraction}; "
        "use 1.0 to read the loss at every step."
    )
  train_labels = np.asarray(train_labels, np.int32)
  test_labels = np.asarray(test_labels, np.int32)
  for split, labels in (("train", train_labels), ("test", test_labels)):
    if labels.ndim != 1 or labels.size == 0:
      raise ValueError(
          f"{name}: the {split} split must hold a non-empty 1-D label array, "
          f"got shape {labels.shape}."
      )
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
      raise ValueError(
          f"{name}: {split} label {int(bad[0])} is outside [0, {num_classes});"
          " raise num_classes or fix the labels."
      )
  input_shape = tuple(int(d) for d in input_shape)
  readout = int(np.ceil(readout_fraction * num_steps - 1e-9))
  weights = np.zeros((num_steps,), np.float32)
  weights[num_steps - readout :] = 1.0 / readout

  def make(inputs, labels, indices, valid):
    n = len(indices)
    x = np.asarray(inputs(indices), np.float32)
    expected = (n, num_steps) + input_shape
    if x.shape != expected:
      raise ValueError(
          f"{name}: the input source returned shape {x.shape}, expected "
          f"{expected}."
      )
    xs = np.ascontiguousarray(np.moveaxis(x, 0, 1))
    ys = np.broadcast_to(labels[indices], (num_steps, n)).copy()
    mask = weights[:, None] * valid[None, :].astype(np.float32)
    if not valid.all():
      xs[:, ~valid] = 0.0
      ys[:, ~valid] = 0
    return Batch(xs, ys, mask)

  def batch(seed, batch_size, part=None):
    check_batch_args(name, seed, batch_size)
    rows = part_slice(name, part, batch_size)
    n = train_labels.shape[0]
    if batch_size > n:
      raise ValueError(
          f"{name}: batch_size {batch_size} exceeds the {n} training samples;"
          " use a smaller batch."
      )
    rng = np.random.default_rng(seed)
    indices = rng.choice(n, size=batch_size, replace=False)[rows]
    return make(
        train_inputs, train_labels, indices, np.ones((len(indices),), bool)
    )

  def eval_batches(batch_size, part=None):
    check_batch_args(name, 0, batch_size)
    rows = part_slice(name, part, batch_size)
    n = test_labels.shape[0]
    for start in range(0, n, batch_size):
      real = np.arange(start, min(start + batch_size, n))
      pad = batch_size - real.size
      indices = np.concatenate([real, np.full((pad,), real[-1])])
      valid = np.arange(batch_size) < real.size
      yield make(test_inputs, test_labels, indices[rows], valid[rows])

  return Task(
      name=name,
      input_shape=input_shape,
      num_steps=num_steps,
      output_size=num_classes,
      kind=CLASSIFICATION,
      batch=batch,
      loss=classification_loss,
      metric=sequence_accuracy,
      metric_name="accuracy",
      higher_is_better=True,
      eval_batches=eval_batches,
  )
