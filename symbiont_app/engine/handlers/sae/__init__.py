"""The SAE panel: load/unload an SAE and its meter, latent records, contrast search, watching, training (``messages`` and ``handler``)."""
