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
"""The 8x8 handwritten digits bundled with scikit-learn, read as sequences.

``sklearn.datasets.load_digits`` ships 1797 images with pixel values in
``[0, 16]``; they are scaled to ``[0, 1]`` and read either row by row
(``mode="rows"``: 8 steps of 8 inputs) or pixel by pixel (``mode="pixels"``:
64 steps of 1 input, rows in order).

The split is stratified and fixed: within each class, the samples are
shuffled with ``np.random.default_rng(split_seed)`` (classes in increasing
order, one generator) and the first ``round(test_fraction * n_class)`` go to
the test split; both splits keep the original sample order. The defaults
give 1438 training and 359 test samples.

scikit-learn is an optional dependency, imported on first use.
"""

import numpy as np

from experiments.tasks import base

_MODES = {"rows": (8, (8,)), "pixels": (64, (1,))}


def _load_digits():
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "The digits task reads scikit-learn's bundled digits: install it with "
        "`pip install scikit-learn`."
    ) from e
  return datasets.load_digits()


def _check_fraction(test_fraction):
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(
        f"digits: test_fraction must be in (0, 1), got {test_fraction}; the "
        "default 0.2 holds out a fifth of each class."
    )


def split_indices(
    labels: np.ndarray, test_fraction: float = 0.2, split_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Returns the stratified, seeded train and test indices (sorted).

  Args:
    labels: ``(N,)`` integer labels.
    test_fraction: Fraction of each class held out, in ``(0, 1)``.
    split_seed: Seed of the shuffle.

  Returns:
    ``(train, test)`` sorted index arrays, disjoint, covering all samples.

  Raises:
    ValueError: If ``test_fraction`` is not in ``(0, 1)``.
  """
  _check_fraction(test_fraction)
  labels = np.asarray(labels)
  rng = np.random.default_rng(split_seed)
  test = []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    test.append(members[: int(round(test_fraction * members.size))])
  is_test = np.zeros(labels.shape, bool)
  is_test[np.concatenate(test)] = True
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def load_digits_sequences(
    mode: str = "rows", *, test_fraction: float = 0.2, split_seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Loads the digits as sequences, split into train and test.

  Args:
    mode: ``"rows"`` (``(N, 8, 8)``) or ``"pixels"`` (``(N, 64, 1)``).
    test_fraction: Fraction of each class held out.
    split_seed: Seed of the split.

  Returns:
    ``(train_x, train_y, test_x, test_y)``: float32 inputs in ``[0, 1]``,
    ``(N, T, F)``, and int32 labels.

  Raises:
    ValueError: If ``mode`` or ``test_fraction`` is invalid.
    ImportError: If scikit-learn is not installed.
  """
  if mode not in _MODES:
    raise ValueError(
        f"digits: mode must be one of {sorted(_MODES)}, got {mode!r}."
    )
  num_steps, step_shape = _MODES[mode]
  _check_fraction(test_fraction)
  data = _load_digits()
  images = np.asarray(data.images, np.float32) / 16.0
  labels = np.asarray(data.target, np.int32)
  x = images.reshape((images.shape[0], num_steps) + step_shape)
  train, test = split_indices(labels, test_fraction, split_seed)
  return x[train], labels[train], x[test], labels[test]


def digits_task(
    mode: str = "rows",
    *,
    readout_fraction: float = 1.0,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> base.Task:
  """Builds the sequential digits classification ``Task``.

  The loss is read over the last ``readout_fraction`` of the steps (all steps
  by default), with weights summing to 1 per sample; see
  ``base.labelled_sequence_task`` for batching and evaluation.

  Args:
    mode: ``"rows"`` (8 steps of 8 inputs) or ``"pixels"`` (64 steps of 1).
    readout_fraction: Fraction of the last steps that carry the loss.
    test_fraction: Fraction of each class held out for the test split.
    split_seed: Seed of the split.

  Returns:
    The ``Task``, 10 classes, with ``eval_batches`` over the test split.

  Raises:
    ValueError: If an argument is invalid.
    ImportError: If scikit-learn is not installed.
  """
  train_x, train_y, test_x, test_y = load_digits_sequences(
      mode, test_fraction=test_fraction, split_seed=split_seed
  )
  return base.labelled_sequence_task(
      f"digits_{mode}",
      train_inputs=lambda idx: train_x[idx],
      train_labels=train_y,
      test_inputs=lambda idx: test_x[idx],
      test_labels=test_y,
      num_steps=train_x.shape[1],
      input_shape=train_x.shape[2:],
      num_classes=10,
      readout_fraction=readout_fraction,
  )
