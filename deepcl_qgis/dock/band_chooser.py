"""The panel's choice of an image's bands, in the order they are checked: the model reads them in
its order (red, green, blue), and a checkable combo box gives its checked items in the file's
order, so a stack of blue, green, red bands could only be read as red, green, blue by Processing."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from qgis.core import QgsRasterLayer
from qgis.gui import QgsCheckableComboBox
from qgis.PyQt.QtCore import Qt


class BandChooser(QgsCheckableComboBox):
    def __init__(self) -> None:
        super().__init__()
        self._order: List[int] = []  # the checked bands, in the order they were checked
        self.setDefaultText("Bands: automatic")
        self.setToolTip("The bands the model reads, in the order you check them (e.g. red, then green, then blue). "
                        "None checked: found from the band names, else the first bands.")
        self.model().dataChanged.connect(self._follow_checks)  # the user's clicks and choose() alike

    def fill(self, layer: Optional[QgsRasterLayer]) -> None:
        """Offer ``layer``'s bands, none checked."""
        self.clear()
        self._order = []
        if isinstance(layer, QgsRasterLayer):
            for band in range(1, layer.bandCount() + 1):
                self.addItemWithCheckState(layer.bandName(band), Qt.Unchecked, band)

    def bands(self) -> List[int]:
        """The checked band numbers in the order they were checked; empty: automatic."""
        return list(self._order)

    def choose(self, bands: Sequence[int]) -> None:
        """Check ``bands`` in this order (those the image has)."""
        for band in bands:
            index = self.findData(band)
            if index >= 0:
                self.setItemCheckState(index, Qt.Checked)

    def _follow_checks(self, *_: Any) -> None:
        checked = [int(band) for band in self.checkedItemsData()]
        self._order = [band for band in self._order if band in checked] + [
            band for band in checked if band not in self._order]
        self._show_order()

    def _show_order(self) -> None:
        # The combo box writes the checked items in the file's order, also when it is resized
        if self._order:
            self.lineEdit().setText(", ".join(self.itemText(self.findData(band)) for band in self._order))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._show_order()
