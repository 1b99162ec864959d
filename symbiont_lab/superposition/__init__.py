"""Superposition: toy models, sparse probing and NMF of a model's activations.

The lab (``symbiont lab superposition``):

- :mod:`.toy` — the ReLU-output toy model x̂ = ReLU(WᵀWx + b), many copies trained as one stack (MLX).
- :mod:`.geometry` — feature norms, superposition, feature dimensionality, features per dimension.
- :mod:`.xor` — two-layer XOR networks and one-weight lesions.
- :mod:`.interference` — cosines between feature directions (toy models, an SAE's decoder, random).
- :mod:`.experiments` — :class:`~.experiments.LabConfig` and :func:`~.experiments.run_unit`.
- :mod:`.runner` — the resumable run folder; :mod:`.report` / :mod:`.report_text` — findings with
  verdicts; :mod:`.plots` — PNGs.

Sparse probing (``symbiont probe``): :mod:`.probe_data` (built-in sets in ``probe_sets/``, the
user's JSON/JSONL/CSV), :mod:`.model_activations` (hooked forwards), :mod:`.sparse_probe` (the
k-sparse probes, scikit-learn), :mod:`.probe_run`, :mod:`.probe_report`, :mod:`.probe_plots`.

NMF of activations (``symbiont nmf``): :mod:`.nmf` (factorisation, PCA and SAE comparison),
:mod:`.nmf_run`, :mod:`.nmf_components`, :mod:`.nmf_report`, :mod:`.nmf_plots`.

Nothing here imports MLX until a submodule that needs it is imported.
"""
