"""The feature dashboard: a latent's activation density and the user's labels (``messages`` and ``handler``)."""
