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
"""Hidden (recurrent) state declared inside Haiku modules.

Hidden state is ordinary ``hk.state`` whose name carries the suffix
:data:`HIDDEN_SUFFIX`, so hidden-ness is readable from the state pytree alone
and survives ``init``, ``apply``, checkpoints and ``pmap``. Modules use
:func:`get_hidden_state` / :func:`set_hidden_state` with the bare name.

Per-sample state that is carried but not traced (a refractory counter) is
declared with :func:`get_sample_state` / :func:`set_sample_state` (suffix
:data:`SAMPLE_SUFFIX`), so data parallelism shards it with the batch instead
of guessing from its shape.
"""

import re
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from haiku_etp._src.core import state_layout

HIDDEN_SUFFIX = ":hidden"
SAMPLE_SUFFIX = ":sample"
# The learners keep the state hk.layer_stack stacks along a layer axis as
# one entry per layer, ``name@layer0``, ``name@layer1``, ...
# (core/layer_state.py); a model's own names cannot end so.
LAYER_MARK = "@layer"
_LAYER_SUFFIX = re.compile(re.escape(LAYER_MARK) + r"\d+$")
# Top-level state entries owned by the learners (traces, counters) start with
# this prefix; they are never part of a model's own state.
LEARNER_PREFIX = state_layout.LEARNER_PREFIX

State = Mapping[str, Mapping[str, Any]]


def _check_name(name: str) -> None:
  if not isinstance(name, str) or not name:
    raise ValueError(
        f"A hidden state name must be a non-empty str, got {name!r}."
    )
  for suffix in (HIDDEN_SUFFIX, SAMPLE_SUFFIX):
    if name.endswith(suffix):
      raise ValueError(
          f"Give the bare name, not one ending in {suffix!r}: {name!r}."
      )
  if _LAYER_SUFFIX.search(name):
    raise ValueError(
        f"State name {name!r} ends like the learners' per-layer names "
        f"({LAYER_MARK}0, {LAYER_MARK}1, ... for hk.layer_stack's state); "
        "choose another name."
    )


def get_hidden_state(
    name: str,
    shape: Optional[Sequence[int]] = None,
    dtype: Any = jnp.float32,
    init: Optional[Callable[[Sequence[int], Any], jax.Array]] = None,
) -> jax.Array:
  """Reads recurrent memory ``name`` of the current module (``h_tm1``).

  Like ``hk.get_state``, but the entry is marked as hidden so the compiler
  treats it as a state variable of the recurrence. The leading axis of
  ``shape`` is the batch.

  Args:
    name: the state's name inside the module, e.g. ``"v"``.
    shape: its shape, required on first use.
    dtype: a floating dtype.
    init: initialiser ``init(shape, dtype)``; zeros by default.

  Returns:
    The value stored at the previous step (or the initial value).

  Raises:
    ValueError: for a bad name or a non-floating dtype.

  >>> import haiku as hk, jax.numpy as jnp
  >>> def step(x):
  ...   v = get_hidden_state("v", x.shape, x.dtype)
  ...   set_hidden_state("v", 0.9 * v + x)
  ...   return v
  >>> _, state = hk.transform_with_state(step).init(None, jnp.ones((2, 3)))
  >>> list(state["~"])
  ['v:hidden']
  """
  _check_name(name)
  if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
    dtype = jnp.dtype(dtype).name
    raise ValueError(
        f"Hidden state {name!r} must have a floating dtype, got {dtype}. If "
        f"the module takes it from its inputs (get_hidden_state({name!r}, "
        f"x.shape, x.dtype)), the inputs are {dtype}: cast them to a float "
        "dtype (x.astype(jnp.float32)). Keep integer counters in "
        "get_sample_state or ordinary hk.state."
    )
  if init is None:
    init = jnp.zeros
  return hk.get_state(name + HIDDEN_SUFFIX, shape, dtype, init=init)


def hidden_state_like_input(
    module: str, name: str, shape: Sequence[int], input_dtype: Any
) -> jax.Array:
  """:func:`get_hidden_state` for a module whose state takes the dtype of
  its inputs: a non-floating input dtype is named as the cause."""
  input_dtype = jnp.dtype(input_dtype)
  if not jnp.issubdtype(input_dtype, jnp.floating):
    raise ValueError(
        f"{module} got inputs of dtype {input_dtype.name}, but its hidden "
        f"state {name!r} takes the inputs' dtype and must be floating; cast "
        "the inputs to a float dtype, the one the model is initialised with "
        "(e.g. x.astype(jnp.float32))."
    )
  return get_hidden_state(name, shape, input_dtype)


def _declared(full_name: str, setter: str, getter: str, name: str) -> Any:
  """The value of declared state ``full_name``; raises if it was never read."""
  try:
    return hk.get_state(full_name)
  except (ValueError, KeyError):
    raise ValueError(
        f"{setter}({name!r}) in module {_module_name()!r}: no state {name!r} "
        f"was declared with {getter}({name!r}, shape, dtype) in this module "
        "before. Check the name for a typo, or declare it first."
    ) from None


def _module_name() -> str:
  try:
    return hk.experimental.current_name()
  except ValueError:
    return "~"


def _check_write(
    value: "jax.typing.ArrayLike",
    declared: "jax.typing.ArrayLike",
    setter: str,
    name: str,
) -> None:
  got_shape, want_shape = jnp.shape(value), jnp.shape(declared)
  got_dtype = jnp.result_type(value)
  want_dtype = jnp.result_type(declared)
  if got_shape != want_shape or got_dtype != want_dtype:
    raise ValueError(
        f"{setter}({name!r}) in module {_module_name()!r} got shape "
        f"{got_shape} and dtype {got_dtype}, but the state was declared with "
        f"shape {want_shape} and dtype {want_dtype}. Write a value of the "
        "declared shape (cast with .astype if only the dtype differs)."
    )


def set_hidden_state(name: str, value: jax.Array) -> None:
  """Writes the new value ``h_t`` of recurrent memory ``name``.

  Raises:
    ValueError: if ``name`` was not declared with :func:`get_hidden_state` in
      this module, or ``value`` has another shape or dtype than declared.
  """
  _check_name(name)
  full = name + HIDDEN_SUFFIX
  declared = _declared(full, "set_hidden_state", "get_hidden_state", name)
  _check_write(value, declared, "set_hidden_state", name)
  hk.set_state(full, value)


def get_sample_state(
    name: str,
    shape: Sequence[int],
    dtype: Any = jnp.int32,
    init: Optional[Callable[[Sequence[int], Any], jax.Array]] = None,
) -> jax.Array:
  """Reads per-sample state that is carried across steps but not traced.

  Use it for per-sample memory without a gradient path, such as a refractory
  counter: the leading axis of ``shape`` is the batch, so data parallelism
  shards it with the batch (:func:`haiku_etp.sharding.shard_state`). Floating memory
  that depends on parameters belongs in :func:`get_hidden_state`; the
  compiler warns when such memory is kept anywhere else.

  Args:
    name: the state's name inside the module, e.g. ``"refractory"``.
    shape: its shape, batch first.
    dtype: its dtype.
    init: initialiser ``init(shape, dtype)``; zeros by default.

  Returns:
    The value stored at the previous step (or the initial value).
  """
  _check_name(name)
  if not shape:
    raise ValueError(
        f"Sample state {name!r} needs a shape with a leading batch axis, got "
        f"{shape!r}."
    )
  return hk.get_state(
      name + SAMPLE_SUFFIX, shape, dtype, init=init or jnp.zeros
  )


def set_sample_state(name: str, value: jax.Array) -> None:
  """Writes per-sample state declared with :func:`get_sample_state`.

  Raises:
    ValueError: if ``name`` was not declared in this module, or ``value`` has
      another shape or dtype than declared.
  """
  _check_name(name)
  full = name + SAMPLE_SUFFIX
  declared = _declared(full, "set_sample_state", "get_sample_state", name)
  _check_write(value, declared, "set_sample_state", name)
  hk.set_state(full, value)


def is_hidden_name(name: str) -> bool:
  """Whether a state entry name marks hidden state."""
  return name.endswith(HIDDEN_SUFFIX)


def is_sample_name(name: str) -> bool:
  """Whether a state entry name marks per-sample (untraced) state."""
  return name.endswith(SAMPLE_SUFFIX)


def is_learner_module(module_name: str) -> bool:
  """Whether a top-level state entry belongs to a learner (traces)."""
  return state_layout.is_learner_entry(module_name)


def state_path(module_name: str, name: str) -> str:
  """Readable path of a state entry, ``module/name`` without the suffix."""
  for suffix in (HIDDEN_SUFFIX, SAMPLE_SUFFIX):
    if name.endswith(suffix):
      name = name[: -len(suffix)]
  return f"{module_name}/{name}"


def iter_state(state: State) -> Iterator[tuple[str, str, Any]]:
  """Yields ``(module_name, name, value)`` in the pytree's leaf order."""
  for module_name in sorted(state):
    for name in sorted(state[module_name]):
      yield module_name, name, state[module_name][name]


def hidden_paths(state: State) -> list[str]:
  """Paths (``module/name``) of the hidden entries of ``state``."""
  return [
      state_path(m, n)
      for m, n, _ in iter_state(state)
      if not is_learner_module(m) and is_hidden_name(n)
  ]


def split_learner_state(
    state: State,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
  """Splits a learner state into ``(model_state, learner_entries)``."""
  model: dict[str, dict[str, Any]] = {}
  learner: dict[str, dict[str, Any]] = {}
  for m, entries in state.items():
    (learner if is_learner_module(m) else model)[m] = dict(entries)
  return model, learner


def map_hidden(fn: Callable[[Any], Any], state: State) -> dict:
  """Applies ``fn`` to every hidden leaf, leaving other entries as they are."""
  return {
      m: {
          n: fn(v) if (is_hidden_name(n) and not is_learner_module(m)) else v
          for n, v in entries.items()
      }
      for m, entries in state.items()
  }
