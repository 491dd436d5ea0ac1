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
"""The timers and byte count every benchmark binary shares.

Each timed call is waited on (``jax.block_until_ready``) and the median
over the repeats reported, after a call that compiles and warms it.
"""

from typing import Any, Callable
import time

import jax
import numpy as np


def median_seconds(fn: Callable[..., Any], args, repeats: int) -> float:
  """Median wall seconds of ``fn(*args)`` over ``repeats`` calls (at least
  one), after one call that compiles and warms it; each call is waited on."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def interleaved_median_seconds(calls, repeats: int) -> list[float]:
  """Median wall seconds of each compiled ``(fn, args)`` of ``calls``, the
  calls taking turns ``repeats`` times (they are compiled and warm already).

  Taking turns exposes the variants to the same machine load, so their ratio
  holds up on a shared machine better than two runs one after the other.
  """
  times = [[] for _ in calls]
  for _ in range(max(1, repeats)):
    for i, (fn, args) in enumerate(calls):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[i].append(time.perf_counter() - start)
  return [float(np.median(t)) for t in times]


def median_chained_seconds(fn: Callable[[Any], Any], x, repeats: int):
  """Median wall seconds of ``x = fn(x)`` over ``repeats`` calls (at least
  one), after one that compiles and warms it: for an ``fn`` that donates its
  argument. Returns ``(seconds, x)``, ``x`` after the last call."""
  x = jax.block_until_ready(fn(x))
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    x = jax.block_until_ready(fn(x))
    times.append(time.perf_counter() - start)
  return float(np.median(times)), x


def nbytes(tree: Any) -> int:
  """The bytes of every array leaf of ``tree``."""
  return sum(l.size * l.dtype.itemsize for l in jax.tree_util.tree_leaves(tree))
