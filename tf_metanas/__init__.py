"""tf_metanas: meta-learning neural architectures and their weights for few-shot learning."""

__version__ = "0.1.0"
