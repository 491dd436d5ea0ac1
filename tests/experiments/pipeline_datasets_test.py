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
"""The dataset configs through the training pipeline, end to end.

SHD and N-MNIST train on small files written in their published formats;
digits on scikit-learn's bundled images.
"""

import importlib.util
import os
import warnings

from absl.testing import absltest
import numpy as np

from experiments import metrics as metrics_lib
from experiments import training
from experiments.configs import digits as digits_config
from experiments.configs import nmnist as nmnist_config
from experiments.configs import shd as shd_config
from experiments.datasets import nmnist
from experiments.datasets import shd
import haiku_etp

_HAS_H5PY = importlib.util.find_spec("h5py") is not None
_HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _small(config, **overrides):
  config.update(
      dict(
          batch_size=4,
          train_steps=3,
          log_every=1,
          eval_every=100,
          checkpoint_every=100,
      ),
      **overrides,
  )
  return config


def _train(test, config):
  workdir = test.create_tempdir().full_path
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", haiku_etp.ApproximationWarning)
    result = training.train(config, workdir, plot=False)
  approximate = [
      w
      for w in caught
      if issubclass(w.category, haiku_etp.ApproximationWarning)
  ]
  records = metrics_lib.read(workdir)
  losses = [r["loss"] for r in records if r["split"] == "train"]
  test.assertLen(losses, config.train_steps // config.log_every)
  test.assertTrue(np.all(np.isfinite(losses)))
  test.assertEqual(int(result.state.step), config.train_steps)
  return result, approximate


class DatasetConfigsTest(absltest.TestCase):

  @absltest.skipUnless(_HAS_H5PY, "h5py is not installed")
  def test_shd(self):
    root = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    paths = {}
    for split, n in (("train", 12), ("test", 6)):
      times = [np.sort(rng.uniform(0, 1.4, 40)) for _ in range(n)]
      units = [rng.integers(0, shd.NUM_CHANNELS, 40) for _ in range(n)]
      paths[split] = os.path.join(root, f"shd_{split}.h5")
      shd.write_shd(paths[split], times, units, np.arange(n) % 20)
    config = _small(shd_config.get_config())
    config.task.update(
        dict(path_train=paths["train"], path_test=paths["test"], num_steps=20)
    )
    config.model.hidden_size = 16
    result, approximate = _train(self, config)
    # Every sample of the test file is evaluated once.
    self.assertEqual(result.eval_metrics["count"], 6)
    self.assertEmpty(approximate)

  def test_nmnist(self):
    root = self.create_tempdir().full_path
    rng = np.random.default_rng(1)
    for split, n in (("Train", 8), ("Test", 5)):
      for i in range(n):
        directory = os.path.join(root, split, str(i % 10))
        os.makedirs(directory, exist_ok=True)
        k = 200
        nmnist.write_events(
            os.path.join(directory, f"{i:05d}.bin"),
            rng.integers(0, 34, k),
            rng.integers(0, 34, k),
            rng.integers(0, 2, k),
            np.sort(rng.integers(0, 300_000, k)),
        )
    config = _small(nmnist_config.get_config())
    config.task.update(dict(root=root, num_steps=6))
    config.model.hidden_size = 4
    result, approximate = _train(self, config)
    self.assertEqual(result.eval_metrics["count"], 5)
    self.assertEmpty(approximate)

  @absltest.skipUnless(_HAS_SKLEARN, "scikit-learn is not installed")
  def test_digits_learns(self):
    config = _small(
        digits_config.get_config(), batch_size=32, train_steps=30, log_every=10
    )
    result, _ = _train(self, config)
    self.assertEqual(result.eval_metrics["count"], 359)
    # Ten classes: chance is 0.1.
    self.assertGreater(result.eval_metrics["accuracy"], 0.3)


if __name__ == "__main__":
  absltest.main()
