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
"""Smoke test of the sequence-gradient benchmark binary on a tiny config."""

import ctypes.util
import itertools
import json
import math
import os

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver

from experiments import common
from experiments.benchmarks import benchmark

# Every learner and window on one model; the conv model through one
# learner and BPTT (test_conv_model_runs): the rows are built the same way.
_MODELS = ("eprop",)
# RTRL's and ES-D-RTRL's window rows are made as D-RTRL's (RTRL's budget
# check runs in test_over_budget_is_reported_not_run); ES-D-RTRL's fused
# form has rows of its own.
_LEARNERS = (
    "d_rtrl",
    "es_d_rtrl:form=fused",
    "bptt",
)
_STEPS = (4, 8)
_WINDOWS = (1, 3)
_OVER = "rtrl:max_trace_bytes=16"


def _positive_finite(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


class BenchmarkTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

  def run_benchmark(self, steps, models, learners, windows=(1,)) -> dict:
    """The JSON payload of one tiny benchmark run."""
    path = os.path.join(self.create_tempdir().full_path, "bench.json")
    # Every flag is set: experiments.benchmarks.rules shares some names, and
    # the default of whichever binary was imported last would apply.
    with flagsaver.flagsaver(
        bench_steps=[str(t) for t in steps],
        bench_windows=[str(k) for k in windows],
        bench_models=list(models),
        bench_learners=list(learners),
        bench_scale=0.1,
        bench_repeats=1,
        bench_es_decay=0.9,
        bench_copy_mib=4,
        bench_output=path,
    ):
      benchmark.main(["benchmark"])
    with open(path) as f:
      return json.load(f)

  def test_runs_and_writes_results(self):
    payload = self.run_benchmark(_STEPS, _MODELS, _LEARNERS, _WINDOWS)
    self.assertTrue(_positive_finite(payload["copy_gb_per_s"]))
    rows = {
        (r["model"], r["learner"], r["window"], r["steps"]): r
        for r in payload["rows"]
    }
    # BPTT covers the whole sequence; a fused form runs one-step windows.
    windows = lambda learner: (
        (None,)
        if learner == "bptt"
        else (1,)
        if learner.endswith("form=fused")
        else _WINDOWS
    )
    expected = [
        (m, l, k, t)
        for m, l in itertools.product(_MODELS, _LEARNERS)
        for k in windows(l)
        for t in _STEPS
    ]
    self.assertCountEqual(rows, expected)
    for key, row in sorted(rows.items()):
      print(
          "%s %s window %s T=%d: compiled %d B (temp %d, output %d, args %d), "
          "%.4f ms/step, x%.2f BPTT"
          % (
              *key,
              row["compiled_bytes"],
              row["temp_bytes"],
              row["output_bytes"],
              row["argument_bytes"],
              row["ms_per_step"],
              row["x_bptt"],
          )
      )
      for name in (
          "ms_per_step",
          "compiled_bytes",
          "output_bytes",
          "argument_bytes",
          "x_bptt",
      ):
        self.assertTrue(_positive_finite(row[name]), f"{key} {name}")
      self.assertGreaterEqual(row["temp_bytes"], 0, key)
      if row["learner"] in ("d_rtrl", "rtrl", "es_d_rtrl"):
        self.assertTrue(_positive_finite(row["trace_bytes"]), key)
        self.assertTrue(_positive_finite(row["copy_bound_ms"]), key)
        self.assertTrue(_positive_finite(row["x_bound"]), key)
        # One-step windows: time over BPTT's plus one trace read and write.
        self.assertTrue(_positive_finite(row["x_floor"]), key)
        self.assertAlmostEqual(
            row["floor_ms"],
            rows[(key[0], "bptt", None, key[3])]["ms_per_step"]
            + row["copy_bound_ms"],
        )
      if row["learner"] == "bptt":
        self.assertEqual(row["x_bptt"], 1.0, key)
    growth = {
        (g["model"], g["learner"], g["window"])
        for g in payload["memory_growth"]
    }
    self.assertCountEqual(growth, {key[:3] for key in expected})

  def test_conv_model_runs(self):
    rows = self.run_benchmark((4,), ("conv_lif",), ("d_rtrl", "bptt"))["rows"]
    self.assertEqual(
        [(r["model"], r["learner"]) for r in rows],
        [("conv_lif", "d_rtrl"), ("conv_lif", "bptt")],
    )
    for row in rows:
      self.assertTrue(_positive_finite(row["ms_per_step"]), row)
      self.assertTrue(_positive_finite(row["compiled_bytes"]), row)

  def test_over_budget_is_reported_not_run(self):
    rows = self.run_benchmark((4,), ("eprop",), (_OVER, "bptt"))["rows"]
    self.assertEqual([r["learner"] for r in rows], [_OVER, "bptt"])
    self.assertRegex(rows[0]["over_budget"], r"over max_trace_bytes=16 B")

  def test_freed_memory_is_kept_on_glibc(self):
    if ctypes.util.find_library("c") is None:
      self.skipTest("no C library to ask")
    self.assertTrue(common.keep_freed_memory())

  def test_rejects_unknown_learner(self):
    with flagsaver.flagsaver(bench_learners=["nope"]):
      with self.assertRaisesRegex(Exception, "Unknown learner 'nope'"):
        benchmark.main(["benchmark"])

  def test_rejects_extra_arguments(self):
    with self.assertRaisesRegex(Exception, "Too many"):
      benchmark.main(["benchmark", "extra"])

  def test_rejects_unknown_model(self):
    with flagsaver.flagsaver(bench_models=["lstm"]):
      with self.assertRaisesRegex(Exception, "Unknown models"):
        benchmark.main(["benchmark"])


if __name__ == "__main__":
  absltest.main()
