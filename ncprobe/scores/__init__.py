"""Post-hoc OOD scorers by name. Every score is float64, HIGHER = MORE IN-DISTRIBUTION.

``get_scorer(name, **params)`` builds one; ``list_scorers()`` names them; ``register_scorer`` adds
one. Logit scorers (``input == 'logits'``): msp, maxlogit, energy, gen. Feature scorers: mahalanobis,
rmds, gda, knn, vim (needs head), neco (needs head), featnorm, ncc, probe_energy.
"""

# importing the scorer modules registers their scorers
from . import gaussian, geometry, logit, neighbours, probe, subspace  # noqa: F401
from .base import Scorer
from .registry import get_scorer, list_scorers, register_scorer, scorer_class

__all__ = ["Scorer", "get_scorer", "list_scorers", "register_scorer", "scorer_class"]
