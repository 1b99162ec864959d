"""Qt-free session layer: what the window shows, as observable models fed by engine events."""
