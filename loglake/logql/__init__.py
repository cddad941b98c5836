"""logql package."""
