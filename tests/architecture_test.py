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
"""The layers of ``haiku_etp/_src`` import one way (docs/design.md,
"Where the code lives")."""

import ast
import glob
import importlib
import os
import warnings

from absl.testing import absltest

import haiku_etp

_SRC = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, "haiku_etp", "_src"
)

# Each folder and the folders it may import from.
_ALLOWED = {
    "core": set(),
    "ops": {"core"},
    "compiler": {"core", "ops"},
    "modules": {"core", "ops"},
    "learners/algorithms": {"core", "compiler"},
    "learners/forms": {"core", "compiler", "learners/algorithms"},
    "learners": {"core", "compiler", "learners/algorithms", "learners/forms"},
    "testing": {
        "core",
        "ops",
        "compiler",
        "modules",
        "learners",
        "learners/algorithms",
        "learners/forms",
    },
}


def _folder_imports() -> dict:
  """``{(folder, file): {folders it imports}}`` over ``_src``."""
  out = {}
  for path in glob.glob(os.path.join(_SRC, "**", "*.py"), recursive=True):
    folder = os.path.relpath(os.path.dirname(path), _SRC).replace(os.sep, "/")
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
          "haiku_etp._src."
      ):
        parts = node.module.split(".")[2:]
        if not os.path.isdir(os.path.join(_SRC, *parts)):
          parts = parts[:-1]
        targets.add("/".join(parts))
    out[(folder, os.path.basename(path))] = targets - {folder}
  return out


class ArchitectureTest(absltest.TestCase):

  def test_every_module_lives_in_a_layer(self):
    self.assertEqual(
        {f for f, name in _folder_imports() if name != "__init__.py"},
        set(_ALLOWED),
    )

  def test_layers_import_one_way(self):
    for (folder, name), targets in _folder_imports().items():
      if folder == ".":
        continue
      self.assertContainsSubset(
          targets, _ALLOWED[folder], f"{folder}/{name} imports {targets}"
      )

  def test_tests_mirror_the_layers_and_library_tests_import_no_experiments(
      self,
  ):
    tests = os.path.dirname(os.path.abspath(__file__))
    for folder in _ALLOWED:
      self.assertTrue(
          os.path.isdir(os.path.join(tests, *folder.split("/"))), folder
      )
    for folder in _ALLOWED:
      pattern = os.path.join(tests, *folder.split("/"), "*.py")
      for path in glob.glob(pattern):
        with open(path) as f:
          tree = ast.parse(f.read())
        imported = {
            a.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for a in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        self.assertNotIn("experiments", imported, path)
        self.assertFalse(
            any(
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("tests.experiments")
                for node in ast.walk(tree)
            ),
            path,
        )

  def test_public_names_are_sorted(self):
    for namespace in (
        haiku_etp,
        haiku_etp.compiler,
        haiku_etp.extend,
        haiku_etp.sharding,
        haiku_etp.surrogate,
        haiku_etp.testing,
    ):
      self.assertEqual(
          list(namespace.__all__),
          sorted(namespace.__all__),
          namespace.__name__,
      )

  def test_moved_names_still_import_with_a_warning(self):
    moved = {
        "haiku_etp.sharding": (
            "replicate",
            "shard_batch",
            "shard_state",
            "state_batch_mask",
            "unshard_batch",
            "unshard_state",
        ),
        "haiku_etp.extend": (
            "Signals",
            "StepNeeds",
            "TraceAlgorithm",
            "from_algorithm",
            "register_learner",
            "unregister_learner",
        ),
    }
    for home, names in moved.items():
      for name in names:
        # (assertWarns walks sys.modules, which haiku's flax stub refuses.)
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          old = getattr(haiku_etp, name)
        self.assertEqual([w.category for w in caught], [DeprecationWarning])
        self.assertEqual(
            str(caught[0].message),
            f"haiku_etp.{name} moved to {home}.{name}; the old name goes away "
            "in the next release.",
        )
        self.assertIs(old, getattr(importlib.import_module(home), name))
        self.assertNotIn(name, haiku_etp.__all__)
        self.assertIn(name, dir(haiku_etp))
    with self.assertRaisesRegex(AttributeError, "no attribute 'nothing'"):
      getattr(haiku_etp, "nothing")
    # Every name public before the move is still importable.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)
      exec("from haiku_etp import shard_batch, TraceAlgorithm", {})

  def test_parameter_roles_are_an_enum_equal_to_their_strings(self):
    role = haiku_etp.compiler.ParameterRole
    self.assertEqual(role.NON_TEMPORAL, "non-temporal")
    self.assertEqual(f"{role.TRACED:>8}", "  traced")
    self.assertEqual(str(role.FULL), "full")


if __name__ == "__main__":
  absltest.main()
