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
"""The learners by name: one table that the pipeline, the comparisons, the
benchmark and ``haiku_etp.testing`` read.

A learner is registered once with its factory and the options the factory
takes; :func:`make_learner` builds it by name, and an unknown name or option
is a ``ValueError`` listing the valid ones. A new rule is one module (a
:class:`~haiku_etp.extend.TraceAlgorithm`) and one :func:`register_learner` call.
"""

import ast
import inspect
from typing import Any, Callable, NamedTuple, Optional, Sequence

import haiku as hk
from haiku_etp._src.learners import factories
from haiku_etp._src.learners import driver


class LearnerSpec(NamedTuple):
  """A registered learner.

  Attributes:
    name: the registered name (one spelling per learner).
    factory: ``factory(model, **options) -> Learner``.
    options: the keyword options ``factory`` takes.
    whole_sequence: whether its ``sequence_grad`` covers the whole sequence
      by default (BPTT); the others take the online or truncation window.
    description: one line for listings.
  """

  name: str
  factory: Callable[..., driver.Learner]
  options: tuple[str, ...] = ()
  whole_sequence: bool = False
  description: str = ""


_REGISTRY: dict[str, LearnerSpec] = {}


def factory_options(factory: Callable[..., driver.Learner]) -> tuple[str, ...]:
  """The options ``factory(model, ...)`` takes: its parameters after the
  model that can be passed by keyword, in signature order."""
  params = list(inspect.signature(factory).parameters.values())[1:]
  return tuple(
      p.name
      for p in params
      if p.kind
      in (
          inspect.Parameter.POSITIONAL_OR_KEYWORD,
          inspect.Parameter.KEYWORD_ONLY,
      )
  )


def register_learner(
    name: str,
    factory: Callable[..., driver.Learner],
    *,
    options: Optional[Sequence[str]] = None,
    whole_sequence: bool = False,
    description: str = "",
) -> LearnerSpec:
  """Registers ``factory`` under ``name``; returns its :class:`LearnerSpec`.

  ``options`` defaults to the factory's own keyword parameters
  (:func:`factory_options`); pass them to expose fewer.

  Raises:
    ValueError: for a name that is taken or not an identifier, or an option
      the factory does not take.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"A learner name must be an identifier, got {name!r}.")
  if name in _REGISTRY:
    raise ValueError(f"A learner named {name!r} is registered already.")
  takes = factory_options(factory)
  if options is None:
    options = takes
  elif not any(
      p.kind == inspect.Parameter.VAR_KEYWORD
      for p in inspect.signature(factory).parameters.values()
  ):
    unknown = sorted(set(options) - set(takes))
    if unknown:
      raise ValueError(
          f"register_learner({name!r}): the factory takes no options "
          f"{unknown}; its options are {list(takes)}."
      )
  spec = LearnerSpec(name, factory, tuple(options), whole_sequence, description)
  _REGISTRY[name] = spec
  return spec


def unregister_learner(name: str) -> None:
  """Removes a registered learner (tests register and remove their own)."""
  learner_spec(name)
  del _REGISTRY[name]


def learner_names() -> tuple[str, ...]:
  """The registered names, in registration order."""
  return tuple(_REGISTRY)


def learner_spec(name: str) -> LearnerSpec:
  """The :class:`LearnerSpec` of ``name``.

  Raises:
    ValueError: for an unknown name, listing the registered ones.
  """
  spec = _REGISTRY.get(name)
  if spec is None:
    raise ValueError(
        f"Unknown learner {name!r}; the registered learners are "
        f"{list(_REGISTRY)}."
    )
  return spec


def make_learner(
    name: str, model: hk.TransformedWithState, **options
) -> driver.Learner:
  """Builds the learner registered as ``name`` on ``model``.

  Raises:
    ValueError: for an unknown name or an option the learner does not take.
  """
  spec = learner_spec(name)
  unknown = sorted(set(options) - set(spec.options))
  if unknown:
    raise ValueError(
        f"Learner {name!r} takes the options {list(spec.options)}, got "
        f"{unknown}."
    )
  return spec.factory(model, **options)


def _value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_learner(text: str) -> tuple[str, dict]:
  """``(name, options)`` of ``"name"`` or ``"name:option=value:..."``.

  Values are Python literals (``0.9``, ``(0.9, 0.0)``, ``None``) or else
  strings (``form=fused``). The name and the options are checked against
  the registry.

  Raises:
    ValueError: for an unknown name or option, or an option without ``=``.
  """
  name, *parts = text.split(":")
  spec = learner_spec(name)
  options = {}
  for part in parts:
    key, sep, value = part.partition("=")
    if not sep:
      raise ValueError(
          f"{text!r}: options are written option=value, got {part!r}."
      )
    if key not in spec.options:
      raise ValueError(
          f"{text!r}: learner {name!r} takes the options "
          f"{list(spec.options)}, got {key!r}."
      )
    options[key] = _value(value)
  return name, options


def learner_label(name: str, options: dict) -> str:
  """A short label: ``es_d_rtrl(decay=0.9, form=fused)``."""
  if not options:
    return name
  inner = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
  return f"{name}({inner})"


register_learner(
    "d_rtrl",
    factories.d_rtrl,
    description="D-RTRL: per-parameter traces, exact on per-position "
    "transitions",
)
register_learner(
    "es_d_rtrl",
    factories.es_d_rtrl,
    description="ES-D-RTRL: input- and output-side traces, O(B (I + O S))",
)
register_learner(
    "rtrl",
    factories.rtrl,
    description="RTRL: the full influence, exact on every step",
)
register_learner(
    "uoro",
    factories.uoro,
    description="UORO: unbiased rank-one estimate of RTRL's influence",
)
register_learner(
    "snap",
    factories.snap,
    description="SnAp-n: RTRL's influence on the entries n steps reach",
)
register_learner(
    "eprop",
    factories.eprop,
    description="e-prop: D-RTRL's traces, the error through symmetric, "
    "random or adaptive feedback",
)
register_learner(
    "rflo",
    factories.rflo,
    description="RFLO: leaky local traces and fixed random feedback",
)
register_learner(
    "bptt",
    factories.bptt,
    whole_sequence=True,
    description="BPTT over the whole sequence, the reference",
)
register_learner(
    "tbptt",
    factories.tbptt,
    description="truncated BPTT inside windows, no traces",
)
