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
"""The documentation site stays true: its code runs, its commands parse, and
its API reference lists every public name.

Every ``python`` block of a page runs, in order, in one namespace per page
(so a page's blocks may build on each other) from a temporary directory.
Every ``python -m experiments.<binary> ...`` line of a ``bash`` block is
parsed by that binary's own flags (a config file given with ``--config`` is
loaded and its overrides applied), without running it.
"""

import contextlib
import glob
import json
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

import haiku_etp

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
_DOCS = os.path.join(_ROOT, "docs")


def _pages():
  pages = [os.path.join(_ROOT, "README.md")]
  for path in sorted(
      glob.glob(os.path.join(_DOCS, "**", "*.md"), recursive=True)
  ):
    rel = os.path.relpath(path, _DOCS)
    if rel.startswith(("_build", os.path.join("api", "_autosummary"))):
      continue
    pages.append(path)
  return pages


def _blocks(path, language):
  with open(path) as f:
    text = f.read()
  return re.findall(r"^```%s\n(.*?)^```" % language, text, re.S | re.M)


def _commands(path):
  """The ``python -m experiments.*`` commands of a page's bash blocks."""
  commands = []
  for block in _blocks(path, "bash"):
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
      for part in line.split("&&"):
        part = part.strip()
        if part.startswith("python -m experiments."):
          commands.append(part)
  return commands


# Parses command lines of the binaries with their flags, as their mains
# would, then stops. One interpreter imports what the binaries share (JAX,
# Haiku, the library, the pipeline) once; each command is parsed in a forked
# child, since two binaries define flags of the same name. Nothing here
# starts a JAX backend, so forking is safe. Prints one line per failure.
_PARSE = """
import importlib, json, os, sys, traceback
from absl import flags
import experiments.training  # noqa: F401  (the shared, heavy imports)
failed = 0
for module, argv in json.loads(sys.argv[1]):
  pid = os.fork()
  if pid == 0:
    try:
      sys.argv = [module] + argv  # config_flags reads its overrides here
      importlib.import_module(module)
      flags.FLAGS([module] + argv)
      if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        flags.FLAGS.config  # loads the file and applies the overrides
    except BaseException:
      traceback.print_exc()
      os._exit(1)
    os._exit(0)
  _, status = os.waitpid(pid, 0)
  if status:
    failed += 1
    print("FAILED:", module, " ".join(argv), file=sys.stderr)
sys.exit(1 if failed else 0)
"""

_PAGES = _pages()


class PagesTest(parameterized.TestCase):

  # README.md's blocks run in tests/readme_test.py, which checks what they
  # print and learn.
  @parameterized.named_parameters(
      (os.path.relpath(p, _ROOT).replace(os.sep, "_").replace(".", "_"), p)
      for p in _PAGES[1:]
      if _blocks(p, "python")
  )
  def test_python_blocks_run(self, path):
    namespace = {"__name__": "__docs__"}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
      os.chdir(tmp)
      try:
        for i, block in enumerate(_blocks(path, "python")):
          code = compile(block, f"{path} block {i}", "exec")
          with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)  # pylint: disable=exec-used
      finally:
        os.chdir(cwd)

  def test_commands_parse(self):
    commands = sorted({c for p in _PAGES for c in _commands(p)})
    self.assertNotEmpty(commands)
    parsed = [shlex.split(c) for c in commands]
    jobs = json.dumps([(argv[2], argv[3:]) for argv in parsed])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    process = subprocess.run(
        [sys.executable, "-c", _PARSE, jobs],
        cwd=_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    self.assertEqual(process.returncode, 0, process.stderr[-4000:])


def _reference_names(rst):
  """The names an API page lists in its autosummary tables."""
  with open(os.path.join(_DOCS, "api", rst)) as f:
    text = f.read()
  names = set()
  for block in re.findall(r"\.\. autosummary::\n((?:\n|   .*\n)+)", text):
    for line in block.splitlines():
      line = line.strip()
      if line and not line.startswith(":"):
        names.add(line)
  return names


class ApiReferenceTest(parameterized.TestCase):

  @parameterized.parameters(
      ("haiku_etp.rst", haiku_etp),
      ("compiler.rst", haiku_etp.compiler),
      ("extend.rst", haiku_etp.extend),
      ("sharding.rst", haiku_etp.sharding),
      ("testing.rst", haiku_etp.testing),
      ("surrogate.rst", haiku_etp.surrogate),
  )
  def test_every_public_name_is_documented(self, rst, namespace):
    # Sub-namespaces have pages of their own.
    public = {
        name
        for name in namespace.__all__
        if not isinstance(getattr(namespace, name), type(haiku_etp))
    }
    self.assertEqual(_reference_names(rst), public)

  def test_every_sub_namespace_has_a_page(self):
    for name in haiku_etp.__all__:
      if isinstance(getattr(haiku_etp, name), type(haiku_etp)):
        self.assertTrue(
            os.path.exists(os.path.join(_DOCS, "api", name + ".rst")), name
        )


if __name__ == "__main__":
  absltest.main()
