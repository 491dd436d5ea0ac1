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
"""``python -m experiments.benchmarks.length_table``: the memory and time
table over sequence lengths."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests import test_util


class LengthTableTest(absltest.TestCase):

  def test_binary_writes_the_table(self):
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
          cwd=test_util.REPO_ROOT,
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
