"""Model downloads from the hub beside the engine thread (``messages`` and ``handler``)."""
