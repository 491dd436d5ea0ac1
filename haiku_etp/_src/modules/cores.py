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
"""Any ``hk.RNNCore`` as a step module, its state kept as hidden state.

A Haiku core takes its state as an argument, ``core(x_t, state) -> (out_t,
state)``, and ``hk.dynamic_unroll`` threads it. The learners here need the
memory as hidden state (``docs/design.md``, "The problem"), so
:class:`RNNCoreStep` reads the core's state with ``get_hidden_state``, calls
the core once and writes the new state back: the core's code is unchanged
and ``learner.unroll`` plays ``hk.dynamic_unroll``.
"""

from typing import Any, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from haiku_etp._src.core import state as state_lib


def _key_name(key: Any) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def state_names(state: Any) -> list[str]:
  """The hidden-state name of each leaf of a core's state, in leaf order.

  A leaf's name is its path in the state joined with ``"_"`` (``"hidden"``
  and ``"cell"`` for ``hk.LSTMState``, ``"0_hidden"`` for the first core of
  an ``hk.DeepRNN``); a state that is one array is ``"state"``.

  >>> import haiku as hk, jax.numpy as jnp
  >>> state_names(hk.LSTMState(hidden=jnp.zeros(2), cell=jnp.zeros(2)))
  ['hidden', 'cell']
  """
  paths = jax.tree_util.tree_flatten_with_path(state)[0]
  names = ["_".join(_key_name(k) for k in path) for path, _ in paths]
  return [name or "state" for name in names]


def _input_dtype(inputs: Any) -> Any:
  floats = [
      jnp.asarray(leaf).dtype
      for leaf in jax.tree_util.tree_leaves(inputs)
      if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
  ]
  return jnp.result_type(*floats) if floats else jnp.result_type(float)


class RNNCoreStep(hk.Module):
  """Runs an ``hk.RNNCore`` one step at a time with its state as hidden state.

  ``core.initial_state(batch)`` becomes the hidden state (cast to the
  inputs' floating dtype; ``reset`` restores it), and each call runs
  ``core(inputs, prev_state)`` once and keeps the new state. Any core works
  unmodified: ``hk.VanillaRNN``, ``hk.LSTM``, ``hk.GRU``, the ``hk.ConvND``
  LSTMs, ``hk.DeepRNN`` (with skip connections), ``hk.ResetCore`` (its inputs
  are ``(x_t, should_reset)``). Inputs are batch first.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> def step(x):
  ...   h = haiku_etp.RNNCoreStep(hk.LSTM(8))(x)
  ...   return hk.Linear(1)(h)
  >>> model = hk.transform_with_state(step)
  >>> learner = haiku_etp.rtrl(model)
  >>> xs = jnp.ones((5, 2, 3))  # (T, B, I)
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> sorted(state["rnn_core_step"])
  ['cell:hidden', 'hidden:hidden']
  >>> outs, state = learner.unroll(params, state, None, xs)  # dynamic_unroll
  >>> outs.shape
  (5, 2, 1)

  The core's parameters keep their own names (``lstm/linear``); the state
  lives under this module's name. Parameters of a core's initial state (a
  trainable initial state) are created but receive no gradient: the initial
  state only enters through ``reset``.
  """

  def __init__(self, core: hk.RNNCore, name: Optional[str] = None):
    """Wraps ``core``.

    Args:
      core: an ``hk.RNNCore`` (built inside the transformed function).
      name: module name.

    Raises:
      TypeError: if ``core`` is not an ``hk.RNNCore``.
    """
    super().__init__(name=name)
    if not isinstance(core, hk.RNNCore):
      raise TypeError(
          "core must be an hk.RNNCore (hk.LSTM(8), hk.DeepRNN([...]), ...), "
          f"got {type(core).__name__}. A step module that keeps its own "
          "memory with get_hidden_state needs no wrapper."
      )
    self.core = core

  def __call__(self, inputs: Any) -> Any:
    """One step: ``core(inputs, state)``; returns the core's output."""
    leaves = jax.tree_util.tree_leaves(inputs)
    if not leaves or jnp.ndim(leaves[0]) < 1:
      raise ValueError(
          "RNNCoreStep's inputs must be batch first (the first leaf of "
          "shape (B, ...)), got "
          + (f"shape {jnp.shape(leaves[0])}." if leaves else "no arrays.")
          + " Add a batch axis of 1 for a single sequence."
      )
    batch = jnp.shape(leaves[0])[0]
    dtype = _input_dtype(inputs)
    initial = self.core.initial_state(batch)
    names = state_names(initial)
    flat, tree = jax.tree_util.tree_flatten(initial)
    prev = []
    for name, value in zip(names, flat):
      value = jnp.asarray(value)
      if not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(
            f"The state {name!r} of {type(self.core).__name__} has dtype "
            f"{value.dtype}; hidden state is floating. Keep integer "
            "counters out of the core's state (haiku_etp.get_sample_state)."
        )
      if value.ndim < 1 or value.shape[0] != batch:
        raise ValueError(
            f"The state {name!r} of {type(self.core).__name__} has shape "
            f"{value.shape}; its initial_state({batch}) must be batch first."
        )
      value = value.astype(dtype)
      prev.append(
          state_lib.get_hidden_state(
              name, value.shape, dtype, init=lambda *_, v=value: v
          )
      )
    out, new = self.core(inputs, jax.tree_util.tree_unflatten(tree, prev))
    new_flat, new_tree = jax.tree_util.tree_flatten(new)
    if str(new_tree) != str(tree):
      raise ValueError(
          f"{type(self.core).__name__} returned a state of structure "
          f"{new_tree}, not that of its initial_state ({tree})."
      )
    for name, value in zip(names, new_flat):
      state_lib.set_hidden_state(name, jnp.asarray(value).astype(dtype))
    return out
