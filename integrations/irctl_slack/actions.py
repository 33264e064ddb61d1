"""The ``slack.*`` actions (to be written)."""
