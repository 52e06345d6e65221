"""A dock widget's hooks on the viewer (a key binding, mouse callbacks), undone when the dock closes.

napari keeps key bindings and mouse callbacks on the viewer, not on the widget, and the
dock's close button only takes the widget out of its dock (``remove_dock_widget`` sets its
parent to None; nothing is deleted). Left bound, a closed Focus QC panel would still
answer its key and clicks. The hooks follow the widget's parent: bound while it sits in a
dock, unbound when it leaves it.
"""
from __future__ import annotations

from qtpy.QtCore import QEvent, QObject


class ViewerHooks(QObject):
    """Bind ``keys`` ({key: callback}) and mouse ``drag``/``move`` callbacks on ``viewer`` while ``widget`` is docked."""

    def __init__(self, viewer, widget, *, keys: dict, drag=(), move=()):
        super().__init__(widget)  # lives and dies with the widget
        self.viewer, self.widget = viewer, widget
        self.keys, self.drag, self.move = dict(keys), list(drag), list(move)
        self.bound = False
        self.bind()
        widget.installEventFilter(self)

    def bind(self) -> None:
        if self.bound:
            return
        for key, fn in self.keys.items():
            self.viewer.bind_key(key, fn, overwrite=True)
        self.viewer.mouse_drag_callbacks.extend(self.drag)
        self.viewer.mouse_move_callbacks.extend(self.move)
        self.bound = True

    def unbind(self) -> None:
        if not self.bound:
            return
        keymap = getattr(self.viewer, "keymap", {})
        for key, fn in self.keys.items():
            bound = {str(k).lower(): v for k, v in keymap.items()}.get(str(key).lower())
            if bound == fn:  # still ours (another panel may have bound the key since)
                self.viewer.bind_key(key, None)
        for cbs, mine in ((self.viewer.mouse_drag_callbacks, self.drag),
                          (self.viewer.mouse_move_callbacks, self.move)):
            for fn in mine:
                if fn in cbs:
                    cbs.remove(fn)
        self.bound = False

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if obj is self.widget and event.type() == QEvent.Type.ParentChange:
            if self.widget.parent() is None:
                self.unbind()
            else:
                self.bind()
        return False
