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
"""haiku_etp: online training of recurrent and spiking Haiku networks.

What a model author and a trainer use lives here: the ETP ops, hidden state,
the Haiku modules, the learners, the registry they are built from by name,
and their results; ``surrogate`` and ``testing``. Writing a new learning rule
on the protocol or a new primitive with its trace rules uses
``haiku_etp.extend``; the data-parallel helpers are in
``haiku_etp.sharding``; the compiler's types are in ``haiku_etp.compiler``.
``haiku_etp._src`` is private.
"""

import importlib
import warnings

from haiku_etp import compiler
from haiku_etp import extend
from haiku_etp import sharding
from haiku_etp import surrogate
from haiku_etp import testing
from haiku_etp._src.compiler.compiler import CompileError
from haiku_etp._src.ops.conv import conv
from haiku_etp._src.ops.dense import dense
from haiku_etp._src.ops.einsum import einsum
from haiku_etp._src.ops.elementwise import elementwise
from haiku_etp._src.ops.embedding import embedding
from haiku_etp._src.ops.sparse import Connectivity
from haiku_etp._src.ops.sparse import sparse
from haiku_etp._src.learners.factories import bptt
from haiku_etp._src.learners.factories import d_rtrl
from haiku_etp._src.learners.factories import es_d_rtrl
from haiku_etp._src.learners.factories import rtrl
from haiku_etp._src.learners.factories import tbptt
from haiku_etp._src.learners.factories import uoro
from haiku_etp._src.learners.factories import eprop
from haiku_etp._src.learners.factories import snap
from haiku_etp._src.learners.factories import rflo
from haiku_etp._src.modules.cores import RNNCoreStep
from haiku_etp._src.modules.layers import Conv1D
from haiku_etp._src.modules.layers import Conv2D
from haiku_etp._src.modules.layers import Conv3D
from haiku_etp._src.modules.layers import ConvND
from haiku_etp._src.modules.layers import Embed
from haiku_etp._src.modules.layers import Linear
from haiku_etp._src.modules.layers import SparseLinear
from haiku_etp._src.learners.driver import ApproximationWarning
from haiku_etp._src.learners.driver import Learner
from haiku_etp._src.learners.driver import SequenceResult
from haiku_etp._src.learners.driver import StepResult
from haiku_etp._src.modules.long_range import LRU
from haiku_etp._src.modules.long_range import MinGRU
from haiku_etp._src.modules.long_range import MinLSTM
from haiku_etp._src.learners.algorithms.protocol import ParameterVerdict
from haiku_etp._src.modules.recurrent import Conv1DGRU
from haiku_etp._src.modules.recurrent import Conv1DLSTM
from haiku_etp._src.modules.recurrent import Conv2DGRU
from haiku_etp._src.modules.recurrent import Conv2DLSTM
from haiku_etp._src.modules.recurrent import Conv3DGRU
from haiku_etp._src.modules.recurrent import Conv3DLSTM
from haiku_etp._src.modules.recurrent import ConvNDGRU
from haiku_etp._src.modules.recurrent import ConvNDLSTM
from haiku_etp._src.modules.recurrent import GRU
from haiku_etp._src.modules.recurrent import LSTM
from haiku_etp._src.modules.recurrent import VanillaRNN
from haiku_etp._src.modules.recurrent import LeakyRNN
from haiku_etp._src.learners.registry import learner_label
from haiku_etp._src.learners.registry import learner_names
from haiku_etp._src.learners.registry import learner_spec
from haiku_etp._src.learners.registry import LearnerSpec
from haiku_etp._src.learners.registry import make_learner
from haiku_etp._src.learners.registry import parse_learner
from haiku_etp._src.learners.forms.sequence import raise_if_not_finite
from haiku_etp._src.modules.spiking import ALIF
from haiku_etp._src.modules.spiking import ExponentialSynapse
from haiku_etp._src.modules.spiking import LeakyReadout
from haiku_etp._src.modules.spiking import LIF
from haiku_etp._src.modules.spiking import RecurrentALIF
from haiku_etp._src.modules.spiking import RecurrentLIF
from haiku_etp._src.core.state import get_hidden_state
from haiku_etp._src.core.state import get_sample_state
from haiku_etp._src.core.state import set_hidden_state
from haiku_etp._src.core.state import set_sample_state

__version__ = "0.2.0"

# Names that moved in 0.2.0; importable from here, with a DeprecationWarning,
# until the next release.
_MOVED = {
    "Signals": "haiku_etp.extend",
    "StepNeeds": "haiku_etp.extend",
    "TraceAlgorithm": "haiku_etp.extend",
    "from_algorithm": "haiku_etp.extend",
    "register_learner": "haiku_etp.extend",
    "replicate": "haiku_etp.sharding",
    "shard_batch": "haiku_etp.sharding",
    "shard_state": "haiku_etp.sharding",
    "state_batch_mask": "haiku_etp.sharding",
    "unregister_learner": "haiku_etp.extend",
    "unshard_batch": "haiku_etp.sharding",
    "unshard_state": "haiku_etp.sharding",
}


def __getattr__(name: str):
  """The names in ``_MOVED``, with a ``DeprecationWarning`` naming their
  new home."""
  home = _MOVED.get(name)
  if home is None:
    raise AttributeError(f"module 'haiku_etp' has no attribute {name!r}")
  warnings.warn(
      f"haiku_etp.{name} moved to {home}.{name}; the old name goes away in "
      "the next release.",
      DeprecationWarning,
      stacklevel=2,
  )
  return getattr(importlib.import_module(home), name)


def __dir__() -> list:
  return sorted(set(globals()) | set(_MOVED))


__all__ = (
    "ALIF",
    "ApproximationWarning",
    "CompileError",
    "Connectivity",
    "Conv1D",
    "Conv1DGRU",
    "Conv1DLSTM",
    "Conv2D",
    "Conv2DGRU",
    "Conv2DLSTM",
    "Conv3D",
    "Conv3DGRU",
    "Conv3DLSTM",
    "ConvND",
    "ConvNDGRU",
    "ConvNDLSTM",
    "Embed",
    "ExponentialSynapse",
    "GRU",
    "LIF",
    "LRU",
    "LSTM",
    "LeakyRNN",
    "LeakyReadout",
    "Learner",
    "LearnerSpec",
    "Linear",
    "MinGRU",
    "MinLSTM",
    "ParameterVerdict",
    "RNNCoreStep",
    "RecurrentALIF",
    "RecurrentLIF",
    "SequenceResult",
    "SparseLinear",
    "StepResult",
    "VanillaRNN",
    "bptt",
    "compiler",
    "conv",
    "d_rtrl",
    "dense",
    "einsum",
    "elementwise",
    "embedding",
    "eprop",
    "es_d_rtrl",
    "extend",
    "get_hidden_state",
    "get_sample_state",
    "learner_label",
    "learner_names",
    "learner_spec",
    "make_learner",
    "parse_learner",
    "raise_if_not_finite",
    "rflo",
    "rtrl",
    "set_hidden_state",
    "set_sample_state",
    "sharding",
    "snap",
    "sparse",
    "surrogate",
    "tbptt",
    "testing",
    "uoro",
)
