"""The napari plugin: reader, writer, sample data, layer helpers and widgets (the only Qt/napari code)."""
