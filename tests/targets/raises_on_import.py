"""A worker file that raises while being imported (for the bad-input tests)."""

raise RuntimeError("missing configuration: COMMENTS_URL")
