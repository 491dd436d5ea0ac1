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
"""Synthetic sequence tasks generated from a seed.

* ``cue_accumulation``: the evidence accumulation task of e-prop (Bellec et
  al. 2020, Nature Communications, Fig. 3), with spiking inputs;
* ``delayed_copy``: recall a sequence of symbols after a delay;
* ``adding``: the adding problem (Hochreiter & Schmidhuber 1997).

Every factory validates its hyperparameters and returns a ``base.Task``
whose ``batch(seed, batch_size)`` draws everything from
``np.random.default_rng(seed)``.
"""

import math

import numpy as np

from experiments.tasks import base


def _int(fn, name, value, minimum):
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)
  ):
    raise TypeError(
        f"{fn}: {name} must be an integer >= {minimum}, got {value!r} of type "
        f"{type(value).__name__}."
    )
  if value < minimum:
    raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}.")
  return int(value)


def _real(fn, name, value):
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)
  ):
    raise TypeError(
        f"{fn}: {name} must be a real number, got {value!r} of type "
        f"{type(value).__name__}."
    )
  return float(value)


def _probability(fn, name, rate, dt):
  """Returns the per-step spike probability ``rate * dt``, validated."""
  rate = _real(fn, name, rate)
  if not (math.isfinite(rate) and rate >= 0):
    raise ValueError(
        f"{fn}: {name} must be a finite rate >= 0 in Hz, got {rate}."
    )
  p = rate * dt
  if p > 1.0:
    raise ValueError(
        f"{fn}: {name} * dt = {rate} Hz * {dt} s = {p} exceeds 1 spike per "
        f"step; lower {name} or dt."
    )
  return p


# Input populations of cue_accumulation, in channel order.
LEFT, RIGHT, RECALL, NOISE = range(4)


def cue_accumulation(
    *,
    num_cues: int = 7,
    cue_duration: int = 8,
    cue_gap: int = 4,
    delay: int = 20,
    recall_duration: int = 10,
    population_size: int = 10,
    rate: float = 40.0,
    noise_rate: float = 10.0,
    dt: float = 1e-3,
) -> base.Task:
  """The evidence accumulation task of e-prop (Bellec et al. 2020, Fig. 3).

  The inputs are ``4 * population_size`` spike channels in four populations,
  in this order: left cue, right cue, recall cue, background noise. Cue ``k``
  (``k = 0 .. num_cues - 1``) occupies steps ``[k * (cue_duration +
  cue_gap), k * (cue_duration + cue_gap) + cue_duration)``; during a cue the
  population of its side, drawn left or right with probability 1/2 per cue,
  fires Poisson spikes at ``rate``. After the last cue come ``delay`` silent
  steps, then the recall population fires at ``rate`` for the last
  ``recall_duration`` steps. The noise population fires at ``noise_rate``
  throughout; other populations are silent outside their periods. A Poisson
  spike is a Bernoulli draw of probability ``rate * dt`` per step and channel.

  The label is the side that got more cues (0 = left, 1 = right; ``num_cues``
  is odd, so there is no tie), held in ``ys`` at every step. The loss is read
  during the recall period only, with weights ``1 / recall_duration``; the
  metric ``"accuracy"`` compares the argmax of each sample's mask-weighted
  mean output with its label.

  With the defaults, ``T = 7 * 8 + 6 * 4 + 20 + 10 = 110`` steps of 1 ms.

  Args:
    num_cues: Number of cues, odd.
    cue_duration: Steps per cue.
    cue_gap: Silent steps between consecutive cues.
    delay: Steps between the end of the last cue and the recall cue.
    recall_duration: Steps of the recall cue (the loss period).
    population_size: Channels per population.
    rate: Firing rate of cue and recall channels, Hz.
    noise_rate: Firing rate of the noise channels, Hz.
    dt: Step duration, seconds.

  Returns:
    The ``Task`` (input shape ``(4 * population_size,)``, 2 outputs).

  Raises:
    TypeError: If an integer hyperparameter is not an integer.
    ValueError: If a hyperparameter is out of range.
  """
  fn = "cue_accumulation"
  num_cues = _int(fn, "num_cues", num_cues, 1)
  if num_cues % 2 == 0:
    raise ValueError(
        f"{fn}: num_cues must be odd so that one side always wins, got "
        f"{num_cues}; use {num_cues + 1}."
    )
  cue_duration = _int(fn, "cue_duration", cue_duration, 1)
  cue_gap = _int(fn, "cue_gap", cue_gap, 0)
  delay = _int(fn, "delay", delay, 0)
  recall_duration = _int(fn, "recall_duration", recall_duration, 1)
  population_size = _int(fn, "population_size", population_size, 1)
  dt = _real(fn, "dt", dt)
  if not (math.isfinite(dt) and dt > 0):
    raise ValueError(f"{fn}: dt must be a positive duration in s, got {dt}.")
  p_cue = _probability(fn, "rate", rate, dt)
  p_noise = _probability(fn, "noise_rate", noise_rate, dt)

  period = cue_duration + cue_gap
  cues_end = (num_cues - 1) * period + cue_duration
  recall_start = cues_end + delay
  num_steps = recall_start + recall_duration
  size = population_size
  channels = 4 * size

  mask = np.zeros((num_steps, 1), np.float32)
  mask[recall_start:] = 1.0 / recall_duration
  # Spike probability of every step and channel, per cue side: (2, T, C).
  base_p = np.zeros((num_steps, channels), np.float32)
  base_p[:, NOISE * size :] = p_noise
  base_p[recall_start:, RECALL * size : (RECALL + 1) * size] = p_cue
  cue_steps = np.zeros((num_cues, num_steps), bool)
  for k in range(num_cues):
    cue_steps[k, k * period : k * period + cue_duration] = True

  def batch(seed, batch_size):
    base.check_batch_args(fn, seed, batch_size)
    rng = np.random.default_rng(seed)
    sides = rng.integers(0, 2, size=(batch_size, num_cues))
    labels = (2 * sides.sum(axis=1) > num_cues).astype(np.int32)
    # Side of the cue active at each step, or -1: (T, B).
    active = np.full((num_steps, batch_size), -1, np.int64)
    for k in range(num_cues):
      active[cue_steps[k]] = sides[None, :, k]
    p = np.broadcast_to(base_p[:, None], (num_steps, batch_size, channels))
    p = p.copy()
    for side in (LEFT, RIGHT):
      p[..., side * size : (side + 1) * size] += np.where(
          active == side, p_cue, 0.0
      )[..., None]
    xs = (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)
    ys = np.broadcast_to(labels, (num_steps, batch_size)).copy()
    return base.Batch(xs, ys, np.repeat(mask, batch_size, axis=1))

  return base.Task(
      name=fn,
      input_shape=(channels,),
      num_steps=num_steps,
      output_size=2,
      kind=base.CLASSIFICATION,
      batch=base.with_parts(fn, batch),
      loss=base.classification_loss,
      metric=base.sequence_accuracy,
      metric_name="accuracy",
      higher_is_better=True,
  )


def delayed_copy(
    *,
    length: int = 5,
    num_symbols: int = 4,
    delay: int = 10,
    distractors: bool = False,
) -> base.Task:
  """Copy a sequence of symbols after a delay.

  Inputs have ``num_symbols + 1`` channels: steps ``0 .. length - 1`` carry
  the one-hot symbols, then ``delay`` steps are silent, then the "go" channel
  (the last one) is 1 at the first of ``length`` output steps. The targets are
  the symbols in order during the output period, where the mask is ``1 /
  length``; elsewhere targets are 0 and masked. ``T = 2 * length + delay``.
  The metric ``"accuracy"`` is the mask-weighted fraction of correct output
  steps.

  With ``distractors``, ``num_symbols`` more channels (before the go
  channel) carry a random one-hot symbol at every step of the delay: a
  memory that keeps whatever enters it (a slowly decaying, untrained
  recurrence) holds them too, and they come last.

  Args:
    length: Number of symbols to copy.
    num_symbols: Alphabet size, at least 2.
    delay: Steps between the last symbol and the go marker.
    distractors: Fill the delay with random symbols on channels of their own.

  Returns:
    The ``Task`` (input shape ``(num_symbols + 1,)``, or ``(2 * num_symbols
    + 1,)`` with distractors; ``num_symbols`` outputs).

  Raises:
    TypeError: If a hyperparameter is not an integer.
    ValueError: If a hyperparameter is out of range.
  """
  fn = "delayed_copy"
  length = _int(fn, "length", length, 1)
  num_symbols = _int(fn, "num_symbols", num_symbols, 2)
  delay = _int(fn, "delay", delay, 0)
  if not isinstance(distractors, (bool, np.bool_)):
    raise TypeError(f"{fn}: distractors must be a bool, got {distractors!r}.")
  go = length + delay
  num_steps = go + length
  num_channels = (2 if distractors else 1) * num_symbols + 1
  mask = np.zeros((num_steps, 1), np.float32)
  mask[go:] = 1.0 / length

  def batch(seed, batch_size):
    base.check_batch_args(fn, seed, batch_size)
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, num_symbols, size=(length, batch_size))
    xs = np.zeros((num_steps, batch_size, num_channels), np.float32)
    steps = np.arange(length)[:, None]
    samples = np.arange(batch_size)[None, :]
    xs[steps, samples, symbols] = 1.0
    if distractors:
      noise = rng.integers(0, num_symbols, size=(delay, batch_size))
      xs[length + np.arange(delay)[:, None], samples, num_symbols + noise] = 1.0
    xs[go, :, num_channels - 1] = 1.0
    ys = np.zeros((num_steps, batch_size), np.int32)
    ys[go:] = symbols
    return base.Batch(xs, ys, np.repeat(mask, batch_size, axis=1))

  return base.Task(
      name=fn,
      input_shape=(num_channels,),
      num_steps=num_steps,
      output_size=num_symbols,
      kind=base.CLASSIFICATION,
      batch=base.with_parts(fn, batch),
      loss=base.classification_loss,
      metric=base.step_accuracy,
      metric_name="accuracy",
      higher_is_better=True,
  )


def adding(*, num_steps: int = 50) -> base.Task:
  """The adding problem (Hochreiter & Schmidhuber 1997).

  Two input channels: channel 0 holds values uniform in ``[0, 1)``, channel 1
  marks two steps with 1, one drawn uniformly in ``[0, T // 2)`` and one in
  ``[T // 2, T)``. The target, read at the last step only (mask 1 at ``t = T
  - 1``), is the sum of the two marked values; ``ys`` holds it at every step,
  shape ``(T, B, 1)``. Always predicting 1.0 gives an MSE of ``Var(u1 + u2) =
  1/6 ~ 0.167``, the level a model must beat.

  Args:
    num_steps: Sequence length ``T``, at least 2.

  Returns:
    The ``Task`` (input shape ``(2,)``, 1 output, metric ``"mse"``).

  Raises:
    TypeError: If ``num_steps`` is not an integer.
    ValueError: If ``num_steps < 2``.
  """
  fn = "adding"
  num_steps = _int(fn, "num_steps", num_steps, 2)
  half = num_steps // 2
  mask = np.zeros((num_steps, 1), np.float32)
  mask[-1] = 1.0

  def batch(seed, batch_size):
    base.check_batch_args(fn, seed, batch_size)
    rng = np.random.default_rng(seed)
    values = rng.random((num_steps, batch_size), dtype=np.float32)
    first = rng.integers(0, half, size=batch_size)
    second = rng.integers(half, num_steps, size=batch_size)
    cols = np.arange(batch_size)
    markers = np.zeros((num_steps, batch_size), np.float32)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    target = values[first, cols] + values[second, cols]
    xs = np.stack([values, markers], axis=-1)
    ys = np.broadcast_to(target[None, :, None], (num_steps, batch_size, 1))
    return base.Batch(xs, ys.copy(), np.repeat(mask, batch_size, axis=1))

  return base.Task(
      name=fn,
      input_shape=(2,),
      num_steps=num_steps,
      output_size=1,
      kind=base.REGRESSION,
      batch=base.with_parts(fn, batch),
      loss=base.regression_loss,
      metric=base.mean_squared_error,
      metric_name="mse",
      higher_is_better=False,
  )


def stream_recall(
    *, num_symbols: int = 4, lag: int = 64, chunk: int = 576
) -> base.Task:
  """Recall the symbol seen ``lag`` steps earlier, on an endless stream.

  Each batch lane is one stream of symbols drawn uniformly from
  ``num_symbols``, one per step, fed one-hot; the target at every step is
  the symbol of ``lag`` steps before. There are no sequence boundaries:
  training batch ``step`` is chunk ``step`` of the streams (``chunk`` steps,
  ``T = chunk``), and the learner state runs on from the previous chunk
  (``Task.stream``), so ``update_every`` sets how often the optimizer steps
  along the stream. The train metric ``"accuracy"`` is then the online
  accuracy. An evaluation batch is a chunk of a held-out stream started
  from a reset state, scored after its first ``lag`` steps. Chance is
  ``1 / num_symbols``; a learner must carry credit over ``lag`` steps
  (truncated BPTT with a window shorter than ``lag`` cannot).

  Args:
    num_symbols: Alphabet size, at least 2.
    lag: Steps between a symbol and its recall, at least 1.
    chunk: Steps per batch, larger than ``lag``.

  Returns:
    The ``Task`` (input shape ``(num_symbols,)``, ``num_symbols`` outputs,
    ``stream=True``).

  Raises:
    TypeError: If a hyperparameter is not an integer.
    ValueError: If a hyperparameter is out of range.
  """
  fn = "stream_recall"
  num_symbols = _int(fn, "num_symbols", num_symbols, 2)
  lag = _int(fn, "lag", lag, 1)
  chunk = _int(fn, "chunk", chunk, lag + 1)

  def symbols(seed, index, batch_size, train):
    rng = np.random.default_rng([seed, index, int(train)])
    return rng.integers(0, num_symbols, size=(chunk, batch_size))

  def batch(batch_seed, batch_size):
    base.check_batch_args(fn, batch_seed, batch_size)
    train, seed, index = base.split_seed(batch_seed)
    now = symbols(seed, index, batch_size, train)
    mask = np.ones((chunk, batch_size), np.float32) / chunk
    if train and index > 0:
      before = symbols(seed, index - 1, batch_size, train)[-lag:]
    else:  # the stream's start (or a held-out chunk from a reset state)
      before = np.zeros((lag, batch_size), now.dtype)
      mask[:lag] = 0.0
      mask[lag:] = 1.0 / (chunk - lag)
    history = np.concatenate([before, now], axis=0)
    ys = history[:chunk].astype(np.int32)
    xs = np.eye(num_symbols, dtype=np.float32)[now]
    return base.Batch(xs, ys, mask)

  return base.Task(
      name=fn,
      input_shape=(num_symbols,),
      num_steps=chunk,
      output_size=num_symbols,
      kind=base.CLASSIFICATION,
      batch=base.with_parts(fn, batch),
      loss=base.classification_loss,
      metric=base.step_accuracy,
      metric_name="accuracy",
      higher_is_better=True,
      stream=True,
  )
