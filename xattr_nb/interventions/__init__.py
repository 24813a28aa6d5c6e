"""Interventions on a model's components: hooks, caches, patching, probes, steering and circuits.

- :mod:`~xattr_nb.interventions.hooks`: leak-free hooks by module name, activation caches, output patching.
- :mod:`~xattr_nb.interventions.circuit`: :class:`Circuit` graphs of scored components.
"""

from xattr_nb.interventions.circuit import NODE_KINDS, Circuit, CircuitEdge, CircuitNode, node_name
from xattr_nb.interventions.hooks import (
    ActivationCache,
    block_names,
    first_tensor,
    get_module,
    hooks,
    patch_output,
    run_with_cache,
)

__all__ = [
    "NODE_KINDS",
    "ActivationCache",
    "Circuit",
    "CircuitEdge",
    "CircuitNode",
    "block_names",
    "first_tensor",
    "get_module",
    "hooks",
    "node_name",
    "patch_output",
    "run_with_cache",
]
