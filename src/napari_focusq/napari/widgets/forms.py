"""Small builders for the docks' form rows (spin boxes, path rows, buttons) with their tool tips."""
from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox


def spin(lo: float, hi: float, value: float | None = None, *, tip: str, decimals: int | None = None,
         step: float | None = None, suffix: str = "", prefix: str = "", special: str = ""):
    """A QDoubleSpinBox (``decimals`` given) or a QSpinBox over ``lo``..``hi``."""
    box = QSpinBox() if decimals is None else QDoubleSpinBox()
    if decimals is not None:
        box.setDecimals(decimals)  # before the range: a double spin box rounds its bounds to it
    box.setRange(lo, hi)
    if step is not None:
        box.setSingleStep(step)
    if value is not None:
        box.setValue(value)
    for text, setter in ((suffix, box.setSuffix), (prefix, box.setPrefix), (special, box.setSpecialValueText)):
        if text:
            setter(text)
    box.setToolTip(tip)
    return box


def combo(items, tip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setToolTip(tip)
    return box


def button(text: str, tip: str, enabled: bool = True) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    b.setEnabled(enabled)
    return b


def label(text: str = "", tip: str = "", wrap: bool = True) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(wrap)
    if tip:
        lab.setToolTip(tip)
    return lab


def hrow(*widgets, stretch: int | None = None) -> QHBoxLayout:
    """The widgets side by side (widget number ``stretch`` taking the room left, if given)."""
    row = QHBoxLayout()
    for i, w in enumerate(widgets):
        row.addWidget(w, 1 if i == stretch else 0)
    return row


def path_row(tip: str, button_text: str, button_tip: str, placeholder: str = "", text: str = ""):
    """(row, line edit, button): a path field with its Browse… button beside it."""
    edit = QLineEdit(text)
    if placeholder:
        edit.setPlaceholderText(placeholder)
    edit.setToolTip(tip)
    btn = button(button_text, button_tip)
    return hrow(edit, btn, stretch=0), edit, btn
