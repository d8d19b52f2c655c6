"""Installs tf_metanas: `pip install -e .` (add `[test]` for the test tools)."""

import pathlib
import re

import setuptools

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"',
                     (_HERE / "tf_metanas" / "__init__.py").read_text()).group(1)

setuptools.setup(
    name="tf_metanas",
    version=_VERSION,
    description="Meta-learning neural architectures and their weights for few-shot learning "
                "(METANAS, T-NAS, CAML, BASE, Auto-Meta, MAML, Reptile) in Keras 3 / TensorFlow.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["tf_metanas", "tf_metanas.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "gin-config>=0.5,<0.6",
        "absl-py>=2.1,<3",
        "tensorboard>=2.20,<2.22",
        "tensorflow-datasets>=4.9.10,<4.10",
        "importlib_resources>=6",
        "numpy>=1.26,<3",
        "Pillow>=10,<14",
        "matplotlib>=3.8,<4",
        "scikit-image>=0.22,<0.27",  # glyphs v2: skeletons of the font outlines
        "scipy>=1.11,<2",  # glyphs v2: smooth random fields, warps, pen distances
    ],
    extras_require={
        # NVIDIA GPUs: CUDA and cuDNN wheels matching TensorFlow 2.21.
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # Auto-Meta's searches on a Dask cluster (tools/search.py --executor=dask).
        "dask": ["dask[distributed]>=2026.1,<2027"],
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "dask[distributed]>=2026.1,<2027"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
