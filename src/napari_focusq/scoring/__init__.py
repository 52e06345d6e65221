"""Scoring: tile grid, resampling, tissue, the pipeline, FocusMap, pooling, certainty, z-stacks."""
