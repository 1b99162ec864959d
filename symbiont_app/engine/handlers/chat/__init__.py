"""Chat: send a message and stream the reply, reset, rewind (``messages`` and ``handler``)."""
