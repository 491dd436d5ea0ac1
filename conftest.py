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
"""pytest set-up: four host CPU devices, so pmap is tested without accelerators.

The flag must be set before JAX starts, hence here rather than in a test.
absltest's temporary-directory helpers read absl flags, which pytest never
parses; they are marked parsed (with their defaults) here.
"""

import os
import tempfile

from absl import flags

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " " + _FLAG
  ).strip()

# One compilation cache for the session: the pipeline tests build the same
# programs from fresh closures (a resumed run, a baseline run), which the
# in-memory caches cannot see, and many tests compile the same small steps;
# every program that takes 50 ms or more to compile is kept.
# The directory is new for each session (set here in the controller, inherited
# by the xdist workers), so no run is faster for what an earlier one compiled.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="haiku_etp_jax_cache_"
  )
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
