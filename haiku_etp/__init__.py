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
the Haiku modules, the learners and their results, the data-parallel helpers,
``surrogate`` and ``testing``. Writing a new primitive with its trace
rules uses ``haiku_etp.extend``; the compiler's types are in
``haiku_etp.compiler``. ``haiku_etp._src`` is private.
"""

from haiku_etp import compiler
from haiku_etp import extend
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
from haiku_etp._src.learners.factories import from_algorithm
from haiku_etp._src.learners.factories import rtrl
from haiku_etp._src.learners.factories import tbptt
from haiku_etp._src.learners.factories import uoro
from haiku_etp._src.learners.factories import eprop
from haiku_etp._src.learners.factories import snap
from haiku_etp._src.learners.factories import rflo
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
from haiku_etp._src.learners.parallel import replicate
from haiku_etp._src.learners.parallel import shard_batch
from haiku_etp._src.learners.parallel import shard_state
from haiku_etp._src.learners.parallel import state_batch_mask
from haiku_etp._src.learners.parallel import unshard_batch
from haiku_etp._src.learners.parallel import unshard_state
from haiku_etp._src.learners.algorithms.protocol import ParameterVerdict
from haiku_etp._src.learners.algorithms.protocol import Signals
from haiku_etp._src.learners.algorithms.protocol import StepNeeds
from haiku_etp._src.learners.algorithms.protocol import TraceAlgorithm
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
from haiku_etp._src.learners.registry import register_learner
from haiku_etp._src.learners.registry import unregister_learner
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
    "RecurrentALIF",
    "RecurrentLIF",
    "SequenceResult",
    "Signals",
    "SparseLinear",
    "StepNeeds",
    "StepResult",
    "TraceAlgorithm",
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
    "from_algorithm",
    "get_hidden_state",
    "get_sample_state",
    "learner_label",
    "learner_names",
    "learner_spec",
    "make_learner",
    "parse_learner",
    "raise_if_not_finite",
    "register_learner",
    "replicate",
    "rflo",
    "rtrl",
    "set_hidden_state",
    "set_sample_state",
    "shard_batch",
    "shard_state",
    "snap",
    "sparse",
    "state_batch_mask",
    "surrogate",
    "tbptt",
    "testing",
    "unregister_learner",
    "unshard_batch",
    "unshard_state",
    "uoro",
)
