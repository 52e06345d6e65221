"""Per-input outputs: maps, masks, polygons/GeoJSON for QuPath, the report."""
