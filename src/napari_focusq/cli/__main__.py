"""``python -m napari_focusq.cli``: the same as the ``focusq`` console script."""
import sys

from napari_focusq.cli.app import main

sys.exit(main())
