"""The pathologist's review queue and tile collections (no Qt)."""
