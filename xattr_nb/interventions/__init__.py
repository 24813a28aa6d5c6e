"""Interventions on a model's components: hooks, caches, patching, LRP, probes, steering and circuits.

- :mod:`~xattr_nb.interventions.hooks`: leak-free hooks by module name, activation caches, output patching.
- :mod:`~xattr_nb.interventions.patching`: activation patching over components (residual stream, attention
  and MLP outputs, heads), attribution patching (AtP) and RelP, IG patching, comparisons; results convert to
  ``Attribution(kind="components")``.
- :mod:`~xattr_nb.interventions.lrp`: :func:`lrp_mode`, forward-preserving LRP rules for transformer blocks.
- :mod:`~xattr_nb.interventions.probes`: hidden states per layer, linear probes, ridge R², difference of means.
- :mod:`~xattr_nb.interventions.steering`: adding vectors to the residual stream, steered generation.
- :mod:`~xattr_nb.interventions.circuit`: :class:`Circuit` graphs of scored components (heads, MLPs, CNN
  channels, units) and :func:`to_circuit`, the one way from component scores to a circuit.
"""

from xattr_nb.interventions.circuit import (
    COMPONENT_KINDS,
    NODE_KINDS,
    Circuit,
    CircuitEdge,
    CircuitNode,
    node_name,
    to_circuit,
)
from xattr_nb.interventions.hooks import (
    ActivationCache,
    block_names,
    first_tensor,
    get_module,
    hooks,
    patch_output,
    run_with_cache,
)
from xattr_nb.interventions.lrp import LRP_RULES, lrp_mode
from xattr_nb.interventions.pairs import ContrastPairs
from xattr_nb.interventions.patching import (
    SITE_KINDS,
    PatchingResult,
    activation_patching,
    attribution_patching,
    compare,
    component_sites,
    ig_patching,
    logit_diff,
    normalized_logit_diff,
    site_label,
)
from xattr_nb.interventions.probes import diff_of_means, hidden_states, layerwise_probe, regress_r2
from xattr_nb.interventions.steering import add_vector, perplexity, steer_generate, sweep_alpha

__all__ = [
    "COMPONENT_KINDS",
    "LRP_RULES",
    "NODE_KINDS",
    "SITE_KINDS",
    "ActivationCache",
    "Circuit",
    "CircuitEdge",
    "CircuitNode",
    "ContrastPairs",
    "PatchingResult",
    "activation_patching",
    "add_vector",
    "attribution_patching",
    "block_names",
    "compare",
    "component_sites",
    "diff_of_means",
    "first_tensor",
    "get_module",
    "hidden_states",
    "hooks",
    "ig_patching",
    "layerwise_probe",
    "logit_diff",
    "lrp_mode",
    "node_name",
    "normalized_logit_diff",
    "patch_output",
    "perplexity",
    "regress_r2",
    "run_with_cache",
    "site_label",
    "steer_generate",
    "sweep_alpha",
    "to_circuit",
]
