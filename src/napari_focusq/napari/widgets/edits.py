"""Which exclusion tiles the user set by hand, kept in step with the Labels layer's undo history.

Hand edits (clicks, painting, imported ``Ignore*`` regions) are the pathologist's
decisions: moving the threshold re-applies it only to the other tiles. Every undo step
of the exclusion layer has one entry here, so undo/redo restore the hand-edit record and,
for a threshold move, the threshold. Pure numpy: no Qt, no napari.
"""
from __future__ import annotations

import numpy as np

from napari_focusq.napari.layers import threshold_mask

#: ``manual`` grid value of a tile nobody touched (else the label the user gave it: 0 or 1).
UNTOUCHED = -1


class ExclusionEdits:
    """Hand-edit record of one result's exclusion layer."""

    def __init__(self, labels, defocus_um, threshold_um: float, manual=None):
        self.defocus_um = np.asarray(defocus_um)
        self.threshold_um = float(threshold_um)
        self.manual = (np.full(self.defocus_um.shape, UNTOUCHED, np.int8) if manual is None
                       else np.asarray(manual, np.int8).copy())
        self._last = np.array(labels)
        self.done: list[dict] = []
        self.undone: list[dict] = []
        self.pending: tuple | None = None  # ("threshold", old, new) while a threshold move is written

    @classmethod
    def from_labels(cls, labels, defocus_um, threshold_um: float) -> "ExclusionEdits":
        """Stored exclusions (a review reopened): tiles that differ from the threshold's were set by hand."""
        labels = np.asarray(labels)
        auto = threshold_mask(defocus_um, threshold_um)
        manual = np.where(labels != auto, labels, UNTOUCHED).astype(np.int8)
        return cls(labels, defocus_um, threshold_um, manual)

    @property
    def count(self) -> int:
        """Tiles set by hand."""
        return int((self.manual != UNTOUCHED).sum())

    def for_threshold(self, threshold_um: float) -> np.ndarray:
        """Labels for a threshold: the threshold's, except where the user decided."""
        new = threshold_mask(self.defocus_um, threshold_um)
        hand = self.manual != UNTOUCHED
        new[hand] = self.manual[hand]
        return new

    def record(self, labels, item=None) -> None:
        """One new undo step of the layer (its paint event); hand edits mark the tiles they changed.

        napari emits ``paint`` for a single edit *before* writing the data, so the step's
        own history atoms (``item``, the event's value) say what the labels become.
        """
        cur = _after(self._last, item) if item is not None else None
        if cur is None:
            cur = np.array(labels)
        before = self.manual.copy()
        if self.pending is None:
            changed = cur != self._last
            self.manual[changed] = cur[changed]
        else:
            self.threshold_um = float(self.pending[2])
        self.done.append({"threshold": self.pending, "manual": (before, self.manual.copy())})
        self.undone.clear()
        self._last = cur

    def undo(self, labels_after) -> float | None:
        """After the layer's undo: restore the record; returns the threshold to show again, if any."""
        return self._step(self.done, self.undone, 0, labels_after)

    def redo(self, labels_after) -> float | None:
        """After the layer's redo: the same, forwards."""
        return self._step(self.undone, self.done, 1, labels_after)

    def _step(self, source: list, target: list, side: int, labels_after) -> float | None:
        """Move one step from ``source`` to ``target`` and take its state on ``side`` (0 before, 1 after)."""
        if not source:
            return None
        step = source.pop()
        target.append(step)
        self.manual = step["manual"][side].copy()
        self._last = np.array(labels_after)
        if step["threshold"] is not None:
            self.threshold_um = float(step["threshold"][1 + side])
            return self.threshold_um
        return None


def _after(grid: np.ndarray, item) -> np.ndarray | None:
    """``grid`` with a napari Labels history item applied (None if an atom is not understood)."""
    out = np.array(grid)
    try:
        for atom in item:
            if isinstance(atom, tuple) and len(atom) == 3:  # (indices, before, after) of data_setitem
                indices, _before, after = atom
                out[indices] = after
            elif hasattr(atom, "slice_key") and hasattr(atom, "new_value"):  # a brush/fill stroke
                mask = getattr(atom, "mask", None)
                if mask is None:
                    out[atom.slice_key] = atom.new_value
                else:
                    region = out[atom.slice_key]
                    region[mask] = atom.new_value
                    out[atom.slice_key] = region
            else:
                return None
    except (TypeError, ValueError, IndexError):
        return None
    return out
