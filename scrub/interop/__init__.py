"""Interoperability with other interpretability tools.

- :mod:`scrub.interop.circuits`: EAP-IG / MIB edge-circuit JSON, imported as a hypothesis and
  exported from one (``scrub import-circuit`` / ``scrub export-circuit``).
"""

from scrub.interop.circuits import Circuit, circuit_to_spec, hypothesis_to_circuit, read_circuit

__all__ = ["Circuit", "circuit_to_spec", "hypothesis_to_circuit", "read_circuit"]
