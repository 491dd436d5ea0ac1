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
"""Checks that BUILD is what tools/make_build.py writes for the tree."""

import ast
import os

from absl.testing import absltest

from tools import make_build

_KINDS = ("py_library", "py_test", "py_binary")


def _targets():
  """Returns ``{name: (kind, {keyword: value})}`` parsed from BUILD."""
  with open(os.path.join(make_build.ROOT, "BUILD")) as f:
    tree = ast.parse(f.read(), "BUILD")
  targets = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") in _KINDS:
      kw = {}
      for k in node.keywords:
        if isinstance(k.value, ast.List):
          kw[k.arg] = [e.value for e in k.value.elts]
        elif isinstance(k.value, ast.Constant):
          kw[k.arg] = k.value.value
      targets[kw["name"]] = (node.func.id, kw)
  return targets


class BuildTest(absltest.TestCase):

  def test_build_is_up_to_date(self):
    with open(os.path.join(make_build.ROOT, "BUILD")) as f:
      current = f.read()
    self.assertEqual(
        current,
        make_build.render(),
        "BUILD is stale: run python tools/make_build.py",
    )

  def test_every_file_has_one_target(self):
    srcs = [s for _, kw in _targets().values() for s in kw["srcs"]]
    self.assertCountEqual(srcs, make_build.python_files())

  def test_deps_name_targets(self):
    targets = _targets()
    for name, (_, kw) in targets.items():
      for dep in kw.get("deps", []):
        self.assertIn(dep[1:], targets, f"{name}: unknown dep {dep!r}")

  def test_kinds(self):
    for name, (kind, kw) in _targets().items():
      is_test = kw["srcs"][0].startswith("tests/") and name.endswith("_test")
      self.assertEqual(kind == "py_test", is_test, name)
      self.assertEqual(kind == "py_binary", "main" in kw, name)


if __name__ == "__main__":
  absltest.main()
