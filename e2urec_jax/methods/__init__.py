"""Unlearning methods, one module each, declared as `spec.MethodSpec`s and run by `runner`.

Each module registers its spec when imported, so the order of these imports is the order of
the report and of config.unlearn.methods' default. A new built-in method adds one line here.
"""
from e2urec_jax.methods import e2urec  # noqa: F401
from e2urec_jax.methods import neggrad  # noqa: F401
from e2urec_jax.methods import badt  # noqa: F401
from e2urec_jax.methods import sisa  # noqa: F401
from e2urec_jax.methods import receraser  # noqa: F401
from e2urec_jax.methods import ga  # noqa: F401
from e2urec_jax.methods import npo  # noqa: F401
from e2urec_jax.methods import influence  # noqa: F401
from e2urec_jax.methods import oracle  # noqa: F401  (a diagnostic: last, after every method)
