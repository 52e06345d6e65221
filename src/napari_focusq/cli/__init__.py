"""``focusq``, the command line: ``app`` holds the parser and the dispatch, thin over the rest.

``main`` is re-exported here because the console script (``napari_focusq.cli:main``) and
``python -m napari_focusq.cli`` call it; the parser module is ``app``, not ``main``, so that
the function ``napari_focusq.cli.main`` is never shadowed by a submodule of the same name.
"""
from napari_focusq.cli.app import main

__all__ = ["main"]
