"""Logit lens and activation patching over the conversation (``messages`` and ``handler``)."""
