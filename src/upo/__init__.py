"""upo: Unified Preference Optimization (arXiv 2405.17956) for Hugging Face causal LMs."""

__version__ = "0.1.0"
