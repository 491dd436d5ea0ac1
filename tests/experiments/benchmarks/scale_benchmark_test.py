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
"""Smoke test of the scale benchmark binary (events, precision, network)."""

import json
import math
import os

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver

from experiments.benchmarks import scale as scale_benchmark


class ScaleBenchmarkTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

  def test_runs_and_writes_results(self):
    path = os.path.join(self.create_tempdir().full_path, "scale.json")
    with flagsaver.flagsaver(
        scale_parts=["events", "precision", "network"],
        scale_event_sizes=["64"],
        scale_event_rates=["0.05", "0.5"],
        scale_batch=4,
        scale_repeats=1,
        scale_steps=5,
        scale_models=["eprop"],
        scale_learners=["es_d_rtrl"],
        scale_model_scale=0.1,
        scale_neurons=["150"],
        scale_density=0.05,
        scale_net_batch=2,
        scale_updates=1,
        scale_output=path,
    ):
      scale_benchmark.main(["scale_benchmark"])
    with open(path) as f:
      results = json.load(f)
    self.assertLen(results["events"], 2)
    for row in results["events"]:
      for key in ("dense_ms", "dense_event_ms", "sparse_ms", "sparse_event_ms"):
        self.assertGreater(row[key], 0.0)
    dtypes = [r["trace_dtype"] for r in results["precision"]]
    self.assertEqual(dtypes, ["float32", "bfloat16", "float16"])
    for row in results["precision"]:
      self.assertGreater(row["cosine"], 0.99)
    net = {r["kind"]: r for r in results["network"]}
    self.assertLess(net["sparse"]["synapses"], net["dense"]["synapses"])
    self.assertLess(net["sparse"]["param_mib"], net["dense"]["param_mib"])
    self.assertLen(net["sparse"]["losses"], 2)
    self.assertTrue(all(math.isfinite(l) for l in net["sparse"]["losses"]))
    self.assertNotIn("ms_per_step", net["dense"])


if __name__ == "__main__":
  absltest.main()
