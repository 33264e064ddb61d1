"""First-party integrations, each a top-level package shipped in the irctl wheel."""
