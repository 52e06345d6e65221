"""A dock's layout inside a vertical scroll area (a dock taller than the screen scrolls)."""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


class _VScroll(QScrollArea):
    """Scrolls vertically only: the dock still widens to its content's width, as it did without the area."""

    def _with_width(self, hint, inner_hint):
        hint.setWidth(inner_hint.width() + self.verticalScrollBar().sizeHint().width())
        return hint

    def minimumSizeHint(self):  # noqa: N802 (Qt's name)
        w = self.widget()
        hint = super().minimumSizeHint()
        return hint if w is None else self._with_width(hint, w.minimumSizeHint())

    def sizeHint(self):  # noqa: N802 (Qt's name)
        w = self.widget()
        hint = super().sizeHint()
        return hint if w is None else self._with_width(hint, w.sizeHint())


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A layout inside a scroll area filling ``widget``."""
    inner = QWidget()
    scroll = _VScroll()
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)
