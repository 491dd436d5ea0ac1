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
"""The static checks at the library's boundaries, done by chex.

Each function runs the ``chex`` assertion of its name on static shapes (so it
works under ``jit`` on tracers) and, where it fails, raises a ``ValueError``
whose text is ``custom_message`` alone: what is wrong and what to do, in the
library's words, without chex's preamble.
"""

from typing import Any, Sequence, Union

import chex


def _raise_value_error(assertion, *args: Any, custom_message: str) -> None:
  try:
    assertion(*args)
  except AssertionError:
    raise ValueError(custom_message) from None


def assert_rank(
    x: Any, expected: Union[int, set[int]], *, custom_message: str
) -> None:
  """``chex.assert_rank``: ``x`` has rank ``expected`` (or one of them)."""
  _raise_value_error(
      chex.assert_rank, x, expected, custom_message=custom_message
  )


def assert_shape(
    x: Any, expected: Sequence[Any], *, custom_message: str
) -> None:
  """``chex.assert_shape``: ``x`` has shape ``expected`` (``None`` matches any
  size)."""
  _raise_value_error(
      chex.assert_shape, x, tuple(expected), custom_message=custom_message
  )


def assert_axis_dimension(
    x: Any, axis: int, expected: int, *, custom_message: str
) -> None:
  """``chex.assert_axis_dimension``: axis ``axis`` of ``x`` has size
  ``expected``."""
  _raise_value_error(
      chex.assert_axis_dimension,
      x,
      axis,
      expected,
      custom_message=custom_message,
  )


def assert_tree_shape_prefix(
    tree: Any, prefix: Sequence[int], *, custom_message: str
) -> None:
  """``chex.assert_tree_shape_prefix``: every leaf of ``tree`` starts with
  ``prefix``."""
  _raise_value_error(
      chex.assert_tree_shape_prefix,
      tree,
      tuple(prefix),
      custom_message=custom_message,
  )
