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
"""Checks that BUILD has a target for every file and names only real files."""

import ast
import glob
import os
import re

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KINDS = ("py_library", "py_test", "py_binary")


def _str(node):
  return node.value if isinstance(node, ast.Constant) else None


def _targets():
  """Returns ``{name: (kind, {keyword: value})}`` parsed from BUILD."""
  with open(os.path.join(_ROOT, "BUILD")) as f:
    tree = ast.parse(f.read(), "BUILD")
  targets = {}
  for node in ast.walk(tree):
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _KINDS
    ):
      continue
    kw = {}
    for k in node.keywords:
      if isinstance(k.value, ast.List):
        kw[k.arg] = [_str(e) for e in k.value.elts]
      else:
        kw[k.arg] = _str(k.value)
    if kw.get("name") in targets:
      raise AssertionError(f"Duplicate BUILD target {kw['name']!r}.")
    targets[kw["name"]] = (node.func.id, kw)
  return targets


def _python_files():
  files = set(glob.glob("haiku_etp/**/*.py", root_dir=_ROOT, recursive=True))
  files |= set(glob.glob("tests/*.py", root_dir=_ROOT))
  files |= set(glob.glob("experiments/*.py", root_dir=_ROOT))
  files.add("conftest.py")
  return files


class BuildTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.targets = _targets()

  def _srcs(self, kind=None):
    return {
        s
        for k, kw in self.targets.values()
        if kind in (None, k)
        for s in kw.get("srcs", [])
    }

  def test_every_file_has_a_target(self):
    missing = sorted(_python_files() - self._srcs())
    self.assertEmpty(missing, f"Files without a BUILD target: {missing}")

  def test_every_src_exists(self):
    absent = sorted(
        s
        for s in self._srcs()
        | {kw["main"] for _, kw in self.targets.values() if kw.get("main")}
        if not os.path.exists(os.path.join(_ROOT, s))
    )
    self.assertEmpty(absent, f"BUILD names missing files: {absent}")

  def test_deps_name_targets(self):
    for name, (_, kw) in self.targets.items():
      for dep in kw.get("deps", []):
        self.assertTrue(dep.startswith(":"), f"{name}: dep {dep!r}")
        self.assertIn(dep[1:], self.targets, f"{name}: unknown dep {dep!r}")

  def test_each_test_file_is_a_py_test(self):
    tests = {f for f in _python_files() if f.endswith("_test.py")}
    self.assertEqual(tests, self._srcs("py_test"))
    for name, (kind, kw) in self.targets.items():
      if kind == "py_test":
        self.assertEqual(kw["srcs"], [f"tests/{name}.py"])

  def test_each_binary_is_a_py_binary(self):
    binaries = set()
    for f in _python_files():
      with open(os.path.join(_ROOT, f)) as fh:
        if re.search(r"^\s+app\.run\(main\)$", fh.read(), re.M):
          binaries.add(f)
    mains = {
        kw.get("main") for k, kw in self.targets.values() if k == "py_binary"
    }
    self.assertEqual(binaries, mains)

  def test_library_sources_are_in_libraries(self):
    lib = {f for f in _python_files() if f.startswith("haiku_etp/")}
    self.assertEqual(lib, self._srcs("py_library") & lib)


if __name__ == "__main__":
  absltest.main()
