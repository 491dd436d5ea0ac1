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
"""Checks that the tree is formatted with pyink (configured in pyproject)."""

import os
import subprocess
import sys

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FormatTest(absltest.TestCase):

  def test_pyink_clean(self):
    result = subprocess.run(
        [sys.executable, "-m", "pyink", "--check", "--diff", "."],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    self.assertEqual(
        result.returncode,
        0,
        f"Run `pyink .` at the repository root:\n{result.stdout[-4000:]}",
    )


if __name__ == "__main__":
  absltest.main()
