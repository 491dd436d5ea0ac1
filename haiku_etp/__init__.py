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

Trainable operations are marked with ETP primitives that carry eligibility
trace rules; Haiku layers, rate cells and spiking modules are built on them,
and the learners compute online gradients for any step made of them.
``haiku_etp._src`` is private; use the names exported here.
"""

from haiku_etp import surrogate
from haiku_etp._src.compiler import compile_step
from haiku_etp._src.compiler import CompileError
from haiku_etp._src.compiler import CompiledStep
from haiku_etp._src.compiler import Diagnostic
from haiku_etp._src.compiler import HiddenGroup
from haiku_etp._src.compiler import Relation
from haiku_etp._src.conv import conv
from haiku_etp._src.conv import conv_dimension_numbers
from haiku_etp._src.conv import etp_conv_p
from haiku_etp._src.dense import dense
from haiku_etp._src.dense import etp_batched_dense_p
from haiku_etp._src.dense import etp_dense_p
from haiku_etp._src.elementwise import elementwise
from haiku_etp._src.elementwise import etp_elementwise_p
from haiku_etp._src.layers import Conv1D
from haiku_etp._src.layers import Conv2D
from haiku_etp._src.layers import Conv3D
from haiku_etp._src.layers import ConvND
from haiku_etp._src.layers import Linear
from haiku_etp._src.learners import bptt
from haiku_etp._src.learners import d_rtrl
from haiku_etp._src.learners import es_d_rtrl
from haiku_etp._src.learners import Learner
from haiku_etp._src.parallel import replicate
from haiku_etp._src.parallel import shard_batch
from haiku_etp._src.parallel import shard_state
from haiku_etp._src.parallel import unshard_batch
from haiku_etp._src.parallel import unshard_state
from haiku_etp._src.primitive import DecomposedPrimitiveWarning
from haiku_etp._src.primitive import drtrl_init
from haiku_etp._src.primitive import drtrl_solve
from haiku_etp._src.primitive import drtrl_update
from haiku_etp._src.primitive import ETPPrimitive
from haiku_etp._src.primitive import ETPRules
from haiku_etp._src.primitive import get_etp_rules
from haiku_etp._src.primitive import is_etp_primitive
from haiku_etp._src.primitive import mix_states
from haiku_etp._src.primitive import pp_init
from haiku_etp._src.primitive import pp_solve
from haiku_etp._src.primitive import register_primitive
from haiku_etp._src.primitive import sum_leading
from haiku_etp._src.primitive import weighted_state_sum
from haiku_etp._src.recurrent import Conv1DGRU
from haiku_etp._src.recurrent import Conv1DLSTM
from haiku_etp._src.recurrent import Conv2DGRU
from haiku_etp._src.recurrent import Conv2DLSTM
from haiku_etp._src.recurrent import Conv3DGRU
from haiku_etp._src.recurrent import Conv3DLSTM
from haiku_etp._src.recurrent import ConvNDGRU
from haiku_etp._src.recurrent import ConvNDLSTM
from haiku_etp._src.recurrent import GRU
from haiku_etp._src.recurrent import LSTM
from haiku_etp._src.recurrent import VanillaRNN
from haiku_etp._src.sequence import raise_if_not_finite
from haiku_etp._src.sequence import sequence_grad
from haiku_etp._src.spiking import ALIF
from haiku_etp._src.spiking import ExponentialSynapse
from haiku_etp._src.spiking import LeakyReadout
from haiku_etp._src.spiking import LIF
from haiku_etp._src.state import get_hidden_state
from haiku_etp._src.state import set_hidden_state

__version__ = "0.1.0"

__all__ = (
    "ALIF",
    "CompileError",
    "CompiledStep",
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
    "DecomposedPrimitiveWarning",
    "Diagnostic",
    "ETPPrimitive",
    "ETPRules",
    "ExponentialSynapse",
    "GRU",
    "HiddenGroup",
    "LIF",
    "LSTM",
    "LeakyReadout",
    "Learner",
    "Linear",
    "Relation",
    "VanillaRNN",
    "bptt",
    "compile_step",
    "conv",
    "conv_dimension_numbers",
    "d_rtrl",
    "dense",
    "drtrl_init",
    "drtrl_solve",
    "drtrl_update",
    "elementwise",
    "es_d_rtrl",
    "etp_batched_dense_p",
    "etp_conv_p",
    "etp_dense_p",
    "etp_elementwise_p",
    "get_etp_rules",
    "get_hidden_state",
    "is_etp_primitive",
    "mix_states",
    "pp_init",
    "pp_solve",
    "raise_if_not_finite",
    "register_primitive",
    "replicate",
    "sequence_grad",
    "set_hidden_state",
    "shard_batch",
    "shard_state",
    "sum_leading",
    "surrogate",
    "unshard_batch",
    "unshard_state",
    "weighted_state_sum",
)
