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
"""experiments.figures draws the results pages' figures from their JSON."""

import os
import re

from absl.testing import absltest

from experiments import figures
from tests import test_util

_ROOT = test_util.REPO_ROOT
_DATA = os.path.join(_ROOT, "docs", "results", "data")
_PNG = b"\x89PNG\r\n\x1a\n"


class FiguresTest(absltest.TestCase):

  def test_every_figure_of_the_results_pages(self):
    out = self.create_tempdir().full_path
    runs = [
        os.path.join(_DATA, n)
        for n in sorted(os.listdir(_DATA))
        if os.path.isdir(os.path.join(_DATA, n))
    ]
    written = figures.make_figures(
        runs,
        os.path.join(_DATA, "benchmark.json"),
        os.path.join(_DATA, "length_table.json"),
        out,
    )
    names = {os.path.basename(p) for p in written}
    # Curves and cosines per compare run, two benchmark and two length
    # figures.
    self.assertLen(names, 2 * len(runs) + 4)
    for path in written:
      with open(path, "rb") as f:
        self.assertEqual(f.read(8), _PNG, path)
    # Every figure the pages show is one the binary writes.
    shown = set()
    for page in ("index.md", "benchmark.md", "long_sequences.md"):
      with open(os.path.join(_ROOT, "docs", "results", page)) as f:
        shown |= set(re.findall(r"\(figures/([\w.]+\.png)\)", f.read()))
    self.assertNotEmpty(shown)
    self.assertContainsSubset(shown, names)

  def test_a_missing_file_names_the_flag(self):
    with self.assertRaisesRegex(Exception, "--benchmark: no file"):
      figures.make_figures(
          [], "no_such.json", None, self.create_tempdir().full_path
      )


if __name__ == "__main__":
  absltest.main()
