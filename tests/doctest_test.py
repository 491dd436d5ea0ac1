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
"""Runs the ``>>>`` examples in the public docstrings."""

import doctest

from absl.testing import absltest
from absl.testing import parameterized

from haiku_etp._src.modules import cores
from haiku_etp._src.ops import conv
from haiku_etp._src.ops import dense
from haiku_etp._src.ops import elementwise
from haiku_etp._src.learners import factories
from haiku_etp._src.modules import layers
from haiku_etp._src.learners import parallel
from haiku_etp._src.core import primitive
from haiku_etp._src.modules import recurrent
from haiku_etp._src.modules import spiking
from haiku_etp._src.core import state
from haiku_etp._src.modules import surrogate


class DoctestTest(parameterized.TestCase):

  @parameterized.parameters(
      conv,
      cores,
      dense,
      elementwise,
      factories,
      layers,
      parallel,
      primitive,
      recurrent,
      spiking,
      state,
      surrogate,
  )
  def test_examples(self, module):
    result = doctest.testmod(module, verbose=False)
    self.assertGreater(result.attempted, 0, module.__name__)
    self.assertEqual(result.failed, 0, module.__name__)


if __name__ == "__main__":
  absltest.main()
