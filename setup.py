"""tl: transfer-learning research on sentence-level NLP benchmarks, in pure PyTorch."""
from setuptools import find_packages, setup

setup(
    name="tl",
    version="0.1.0",
    description="STILTs, pairwise MTL and MTL-ALL on GLUE in pure PyTorch (Weller, Seppi and Gardner, ACL 2022)",
    packages=find_packages(include=["tl", "tl.*"]),
    python_requires=">=3.9",
    install_requires=["torch", "tokenizers", "safetensors", "numpy", "scipy>=1.11", "tqdm"],
    extras_require={
        # transformers is only the reference oracle of the tests; tl never imports it
        "test": ["pytest", "pytest-xdist", "transformers"],
        "plot": ["matplotlib"],
    },
)
