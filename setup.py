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
"""Installs haiku_etp."""

import os

import setuptools

_HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
  with open(os.path.join(_HERE, "haiku_etp", "__init__.py")) as f:
    for line in f:
      if line.startswith("__version__"):
        return line.split("=", 1)[1].strip().strip("\"'")
  raise ValueError("__version__ not found in haiku_etp/__init__.py")


def _requirements(name):
  with open(os.path.join(_HERE, name)) as f:
    return [l.strip() for l in f if l.strip() and not l.startswith("#")]


# The library needs only requirements.txt. The experiment binaries need the
# "experiments" extra; plots, TensorBoard and the bundled digits dataset are
# optional; "test" brings everything the test suite exercises, and the type
# checker (mypy, configured in pyproject.toml); "docs" builds the
# documentation site (docs/, Sphinx).
_EXPERIMENTS = _requirements("requirements-experiments.txt")
_OPTIONAL = {
    "plots": ["matplotlib>=3.8"],
    "tensorboard": ["tensorboardX>=2.6"],
    "digits": ["scikit-learn>=1.4"],
}
_DOCS = ["sphinx>=8.0", "myst-parser>=4.0", "sphinx-book-theme>=1.1"]
_EXTRAS = dict(
    experiments=_EXPERIMENTS,
    docs=_DOCS,
    **_OPTIONAL,
    test=_requirements("requirements-test.txt")
    + _EXPERIMENTS
    + [r for reqs in _OPTIONAL.values() for r in reqs],
)

setuptools.setup(
    name="haiku_etp",
    version=_version(),
    description=(
        "Online training of recurrent and spiking Haiku networks "
        "with eligibility traces (D-RTRL, ES-D-RTRL)."
    ),
    long_description=open(os.path.join(_HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache 2.0",
    packages=setuptools.find_packages(include=["haiku_etp", "haiku_etp.*"]),
    python_requires=">=3.10",
    install_requires=_requirements("requirements.txt"),
    extras_require=_EXTRAS,
    classifiers=[
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
