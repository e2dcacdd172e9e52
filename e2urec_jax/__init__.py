"""E2URec in JAX/Flax: efficient and effective unlearning for LLM-based recommenders."""
__version__ = '0.1.0'
