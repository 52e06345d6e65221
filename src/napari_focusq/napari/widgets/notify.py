"""The widgets' messages to the user: napari notifications and yes/no questions.

One place for them, so the tests replace one function (``notify.error``), not a copy per widget.
"""
from __future__ import annotations


def error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


def info(msg: str) -> None:
    from napari.utils.notifications import show_info

    show_info(msg)


def confirm(parent, title: str, question: str) -> bool:
    """Ask a yes/no question (tests replace this function)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, title, question,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def failure_text(exc: BaseException) -> str:
    """An exception as the user reads it: our own errors by their message, others with their type."""
    from napari_focusq.errors import FocusQError

    return str(exc) if isinstance(exc, (FocusQError, ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
