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
"""Writes BUILD from the tree: one target per Python file, deps from imports.

    python tools/make_build.py          # rewrite BUILD
    python tools/make_build.py --check  # exit 1 if BUILD is stale

One ``py_library`` per source file, one ``py_test`` per test file, one
``py_binary`` per experiment (a file ending in ``app.run(main)``). Deps are
the project modules a file imports; third-party packages are named, by
their pip names, in a comment. ``tests/build_test.py`` checks that BUILD is
what this script writes.
"""

import ast
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HEADER = """\
# Bazel targets for haiku_etp, written by tools/make_build.py (do not edit by
# hand): one py_library per source file, one py_test per test file, one
# py_binary per experiment. Third-party packages come from pip; each target
# names the ones it imports in a comment.

load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")

package(default_visibility = ["//visibility:private"])

licenses(["notice"])
"""

# Import root -> pip package.
_PIP = {
    "absl": "absl-py",
    "chex": "chex",
    "h5py": "h5py",
    "haiku": "dm-haiku",
    "jax": "jax",
    "matplotlib": "matplotlib",
    "ml_collections": "ml-collections",
    "numpy": "numpy",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "saiunit": "saiunit",
    "sklearn": "scikit-learn",
    "tensorboardX": "tensorboardX",
}
# Public namespaces of the package.
_PUBLIC = frozenset({"haiku_etp", "compiler", "extend", "surrogate", "testing"})


def python_files() -> list[str]:
  """Every Python file that needs a target, relative to the root."""
  files = set(glob.glob("haiku_etp/**/*.py", root_dir=ROOT, recursive=True))
  files |= set(glob.glob("experiments/**/*.py", root_dir=ROOT, recursive=True))
  files |= {
      f
      for f in glob.glob("tests/**/*.py", root_dir=ROOT, recursive=True)
      if os.path.basename(f) != "__init__.py"  # the folders' empty markers
  }
  files.add("conftest.py")
  return sorted(files)


def target_name(path: str) -> str:
  """The target of ``path``."""
  if path in ("haiku_etp/__init__.py", "haiku_etp/_src/__init__.py"):
    return "haiku_etp"
  parts = path[: -len(".py")].split("/")
  if parts[0] == "haiku_etp":
    if parts[1] == "_src":
      # Module names are unique across the layers' folders; a folder's
      # __init__ is the layer itself.
      if parts[-1] == "__init__":
        return "src_" + "_".join(parts[2:-1])
      return parts[-1]
    return f"{parts[1]}_namespace"
  if parts[0] == "tests" or path == "conftest.py":
    return parts[-1]
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return "_".join(parts)


def _module_files() -> dict:
  """Dotted module name -> file."""
  out = {}
  for path in python_files():
    dotted = path[: -len(".py")].replace("/", ".")
    if dotted.endswith(".__init__"):
      dotted = dotted[: -len(".__init__")]
    out[dotted] = path
  return out


def _imports(path: str) -> set[str]:
  with open(os.path.join(ROOT, path)) as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


def _deps(path: str, modules: dict) -> tuple[list[str], list[str]]:
  deps, pip = set(), set()
  for name in _imports(path):
    root = name.split(".")[0]
    if root in _PIP:
      pip.add(_PIP[root])
    # The longest project module the import names.
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
      dotted = ".".join(parts[:k])
      if dotted in modules:
        dep = target_name(modules[dotted])
        if dep != target_name(path):
          deps.add(dep)
        break
  return sorted(deps), sorted(pip)


def _kind(path: str) -> str:
  if path.startswith("tests/") and path.endswith("_test.py"):
    return "py_test"
  with open(os.path.join(ROOT, path)) as f:
    if re.search(r"^\s+app\.run\(main\)$", f.read(), re.M):
      return "py_binary"
  return "py_library"


def _list(key: str, values: list[str]) -> str:
  if len(values) == 1:
    return f'    {key} = ["{values[0]}"],\n'
  body = "".join(f'        "{v}",\n' for v in values)
  return f"    {key} = [\n{body}    ],\n"


def render() -> str:
  """The BUILD text for the current tree."""
  modules = _module_files()
  by_target = {}
  for path in python_files():
    by_target.setdefault(target_name(path), []).append(path)
  out = [_HEADER]
  for name in sorted(by_target):
    srcs = by_target[name]
    kind = _kind(srcs[0])
    deps, pip = set(), set()
    for path in srcs:
      d, p = _deps(path, modules)
      deps.update(d)
      pip.update(p)
    deps.discard(name)
    text = f'{kind}(\n    name = "{name}",\n'
    text += _list("srcs", srcs)
    if kind == "py_binary":
      text += f'    main = "{srcs[0]}",\n'
    if name in _PUBLIC or name.endswith("_namespace"):
      text += '    visibility = ["//visibility:public"],\n'
    if deps:
      text += _list("deps", [f":{d}" for d in sorted(deps)])
    if pip:
      text += f"    # pip: {', '.join(sorted(pip))}\n"
    out.append(text + ")\n")
  return "\n".join(out)


def main(argv) -> int:
  text = render()
  path = os.path.join(ROOT, "BUILD")
  if "--check" in argv:
    with open(path) as f:
      stale = f.read() != text
    if stale:
      print("BUILD is stale: run python tools/make_build.py")
    return int(stale)
  with open(path, "w") as f:
    f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
