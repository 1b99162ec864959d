"""Qt widgets over the session layer (they never call MLX and hold no engine state)."""
