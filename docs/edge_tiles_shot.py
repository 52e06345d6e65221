"""Before/after screenshot of partial edge tiles (the steps of tests/_qt/test_review_followups.py::test_edge_tiles_drawn_only_over_the_slide).

xvfb-run -a -s "-screen 0 1600x1000x24" python docs/edge_tiles_shot.py docs/edge_tiles_after.png (before: the same on f6ad43f)
"""
import sys
import numpy as np
import napari
from napari_focusq.scoring.focusmap import FocusMap
from napari_focusq.io.formats import open_image, sample_slide_path
PX = 0.499
out = sys.argv[1]
with open_image(sample_slide_path()) as s:
    img = np.asarray(s.read_plane())[2000:3000, 650:1650]
d = np.add.outer(np.linspace(0, 2.5, 4), np.linspace(0, 2.5, 4)).astype(np.float32); d[0, 0] = np.nan
fm = FocusMap(d, np.where(np.isfinite(d), 0.9, 0.0), tile_size_px=300.0, image_shape=(1000, 1000),
              pixel_size_um=PX, modality="brightfield", model="m", source="slide.tif")
viewer = napari.Viewer(show=True)
image = viewer.add_image(img, rgb=True, name="slide", scale=(PX, PX), units=("µm", "µm"), metadata={"pixel_size_um": PX})
_, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
w.show_stored(fm, image, excluded=np.isfinite(d) & (d > 3.5), threshold_um=2.0)
viewer.reset_view()
viewer.window._qt_window.resize(1500, 950)
from qtpy.QtWidgets import QApplication
for _ in range(10): QApplication.processEvents()
viewer.screenshot(out, canvas_only=False, flash=False)
viewer.close()
