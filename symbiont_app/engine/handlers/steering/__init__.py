"""The steering panel: vectors, SAE clamps, presets (``messages`` and ``handler``; the table is ``engine.intervention_table``)."""
