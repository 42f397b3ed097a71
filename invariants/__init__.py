"""The named properties qmodel checks, one module per invariant id (see the project README)."""
