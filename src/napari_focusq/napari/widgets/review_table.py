"""Review slides' list: one row a slide (name, state, median and p90 defocus, review), sortable and filtered.

Rows keep the index of their entry (``Qt.UserRole`` of the first cell), so sorting and
filtering never lose which slide a row is.
"""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ("slide", "state", "median µm", "p90 µm", "review")
FILTERS = ("all", "to review", "not scored", "pass", "fail", "error", "reviewed")


class _Item(QTableWidgetItem):
    """A cell that sorts by its number (empty last) when it has one, else by text."""

    def __init__(self, text: str, number: float | None = None):
        super().__init__(text)
        self.number = number
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other):
        a, b = self.number, getattr(other, "number", None)
        if a is not None or b is not None:
            return (a is None, a or 0.0) < (b is None, b or 0.0)
        return self.text().lower() < other.text().lower()


def _num(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def matches(e: dict, state_filter: str, text: str) -> bool:
    """Whether entry ``e`` is shown under the filter (one of FILTERS) and the name search ``text``."""
    text = text.strip().lower()
    if text and text not in e["stem"].lower():
        return False
    if state_filter == "to review":
        return e["status"] in ("ok", "") and e["state"] not in ("accepted", "rejected")
    if state_filter == "reviewed":
        return e["state"] in ("accepted", "rejected")
    return state_filter == "all" or e["state"] == state_filter


class SlideTable(QTableWidget):
    """The slides of a review folder; ``fill`` shows the entries, ``show_only`` filters them."""

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.horizontalHeader()
        header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)  # by name until the user sorts otherwise
        self.setSortingEnabled(True)
        self.verticalHeader().setVisible(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.setToolTip("Click a slide to open it with its stored heatmap; click a header to sort.")
        self.setMinimumHeight(160)

    def fill(self, entries: list[dict]) -> None:
        self.setSortingEnabled(False)
        self.setRowCount(len(entries))
        for row, e in enumerate(entries):
            self.fill_row(row, e, index=row)
        self.setSortingEnabled(True)

    def refill_row(self, index: int, e: dict) -> None:
        """Show entry ``index`` again (its review changed)."""
        row = self.row_of(index)
        if row is not None:
            self.setSortingEnabled(False)
            self.fill_row(row, e, index)
            self.setSortingEnabled(True)

    def fill_row(self, row: int, e: dict, index: int) -> None:
        rev = e.get("review") or {}
        review = (f"{rev.get('verdict', '')} by {rev.get('reviewed_by') or '?'}" if rev.get("verdict") else
                  ("unreadable review" if e.get("review_error") else ""))
        cells = [_Item(e["stem"]), _Item(e["state"]), _Item(e.get("median_um", ""), _num(e.get("median_um"))),
                 _Item(e.get("p90_um", ""), _num(e.get("p90_um"))), _Item(review)]
        cells[0].setData(Qt.ItemDataRole.UserRole, index)
        cells[0].setToolTip(e.get("input", ""))
        if e["state"] == "error":
            cells[1].setToolTip(e.get("error", ""))
        for col, item in enumerate(cells):
            self.setItem(row, col, item)

    def row_of(self, index: int) -> int | None:
        for row in range(self.rowCount()):
            item = self.item(row, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == index:
                return row
        return None

    def index_of_row(self, row: int) -> int | None:
        item = self.item(row, 0)
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def show_only(self, entries: list[dict], state_filter: str, text: str) -> None:
        for row in range(self.rowCount()):
            i = self.index_of_row(row)
            self.setRowHidden(row, i is None or not matches(entries[i], state_filter, text))

    def visible_order(self) -> list[int]:
        """Entry indices in the order shown (sorted, filtered)."""
        return [self.index_of_row(r) for r in range(self.rowCount()) if not self.isRowHidden(r)]
