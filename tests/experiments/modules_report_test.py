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
"""Smoke test of the per-module report binary on a tiny config."""

import json
import os

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver

from experiments import modules_report
from haiku_etp import testing

_MODULES = ("Linear", "VanillaRNN", "LIF")


class ModulesReportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

  def test_runs_and_writes_rows(self):
    path = os.path.join(self.create_tempdir().full_path, "modules.json")
    with flagsaver.flagsaver(
        report_modules=list(_MODULES),
        report_steps=4,
        report_batch=2,
        report_window=1,
        report_float64=True,
        report_output=path,
    ):
      modules_report.main(["modules_report"])
    with open(path) as f:
      rows = {r["module"]: r for r in json.load(f)["rows"]}
    self.assertCountEqual(rows, _MODULES)
    for name, row in rows.items():
      for learner in ("d_rtrl", "es_d_rtrl", "rtrl", "bptt"):
        self.assertTrue(row[learner]["passed"], f"{name} {learner}")
      for learner in row["claimed_exact"]:
        self.assertTrue(row[learner]["exact"], f"{name} {learner}")
      self.assertTrue(row["bptt"]["exact"], name)
      self.assertTrue(row["rtrl"]["exact"], name)
      self.assertEqual(row["approximate"]["rtrl"], [], name)
      self.assertTrue(row["tbptt"]["passed"], name)
      self.assertFalse(row["tbptt"]["exact"], name)
    self.assertEqual(rows["Linear"]["claimed_exact"], ["d_rtrl", "es_d_rtrl"])
    self.assertEqual(rows["LIF"]["groups"], [2])
    self.assertIn("cut_memory_path", rows["VanillaRNN"]["warnings"])
    self.assertGreater(
        rows["VanillaRNN"]["d_rtrl"]["trace_bytes_per_sample"], 0
    )
    # The parameters each online learner is approximate for: none for an
    # exact D-RTRL, every temporal one for ES-D-RTRL.
    self.assertEqual(rows["Linear"]["approximate"]["d_rtrl"], [])
    self.assertEqual(rows["LIF"]["approximate"]["d_rtrl"], [])
    self.assertIn(
        "vanilla_rnn/linear_1/w", rows["VanillaRNN"]["approximate"]["d_rtrl"]
    )
    self.assertCountEqual(
        rows["Linear"]["approximate"]["es_d_rtrl"], ["linear/b", "linear/w"]
    )
    table = modules_report.format_table(list(rows.values()))
    self.assertLen(table.splitlines(), 2 + len(_MODULES))
    self.assertIn("exact", table)
    self.assertIn("cos", table)
    approximate = modules_report.format_approximate(list(rows.values()))
    # One line per module and learner (every learner run, tbptt included).
    learners = len(testing.MODULE_LEARNERS) + 1
    self.assertLen(approximate.splitlines(), 1 + learners * len(_MODULES))
    self.assertIn("VanillaRNN rtrl: -", approximate)
    self.assertIn("VanillaRNN d_rtrl: vanilla_rnn/linear/b", approximate)

  def test_rejects_unknown_module(self):
    with flagsaver.flagsaver(report_modules=["Nope"]):
      with self.assertRaisesRegex(Exception, "Unknown modules"):
        modules_report.main(["modules_report"])


if __name__ == "__main__":
  absltest.main()
