"""The panel's widgets and their layout, without behaviour (that is :mod:`.panel`)."""
from __future__ import annotations

from qgis.core import QgsApplication, QgsMapLayerProxyModel, QgsProviderRegistry
from qgis.gui import QgsCollapsibleGroupBox, QgsDoubleSpinBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QFrame, QGridLayout, QHBoxLayout, QLabel,
                                 QProgressBar, QPushButton, QSizePolicy, QSlider, QSpinBox, QToolButton,
                                 QVBoxLayout, QWidget)

from .. import threshold_scale
from .band_chooser import BandChooser

ERROR_STYLE = "color: #b00020;"
WHOLE_IMAGE, MAP_VIEW, POLYGONS = "whole", "view", "polygons"
AREAS = (("Whole before image", WHOLE_IMAGE), ("Map view only", MAP_VIEW), ("Inside polygons", POLYGONS))


class PanelForm(QWidget):
    """Every control of the panel as an attribute, laid out top to bottom in the order of use."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addWidget(self._torch_box())
        layout.addLayout(self._inputs())
        layout.addLayout(self._model_and_device())
        layout.addWidget(self._advanced())
        layout.addLayout(self._run_row())
        layout.addWidget(self._results())
        layout.addStretch(1)

    def _torch_box(self) -> QFrame:
        self.torch_box = QFrame()
        self.torch_box.setFrameShape(QFrame.StyledPanel)
        row = QHBoxLayout(self.torch_box)
        self.torch_label = _wrapping_label("")
        self.install_button = QPushButton("Install PyTorch…")
        row.addWidget(self.torch_label, 1)
        row.addWidget(self.install_button)
        return self.torch_box

    def _inputs(self) -> QGridLayout:
        grid = QGridLayout()
        self.before_combo, self.after_combo = _raster_combo(), _raster_combo()
        self.swap_button = QToolButton()
        self.swap_button.setText("⇅")
        self.swap_button.setToolTip("Swap the before and after images")
        self.bands_before, self.bands_after = BandChooser(), BandChooser()
        grid.addWidget(QLabel("Before"), 0, 0)
        grid.addWidget(self.before_combo, 0, 1)
        grid.addWidget(self.swap_button, 0, 2, 2, 1)
        grid.addWidget(QLabel("After"), 1, 0)
        grid.addWidget(self.after_combo, 1, 1)
        grid.addWidget(QLabel("Bands"), 2, 0)
        bands = QHBoxLayout()
        bands.addWidget(self.bands_before)
        bands.addWidget(self.bands_after)
        grid.addLayout(bands, 2, 1)
        self.area_combo = QComboBox()
        for label, value in AREAS:
            self.area_combo.addItem(label, value)
        self.area_combo.setToolTip("Map view: detect only in the part of the before image the map shows, e.g. "
                                   "one town of a large mosaic, in a fraction of the time; the outputs cover "
                                   "that part. Inside polygons: only inside the polygons of a layer (its selected "
                                   "ones when some are selected); nodata outside them.")
        self.area_layer_combo = QgsMapLayerComboBox()
        self.area_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.area_layer_combo.setAllowEmptyLayer(True)  # once its layer is removed: not the next one, unasked
        self.area_layer_combo.setToolTip("The polygons to detect inside: the selected ones, or all when none is "
                                         "selected.")
        self.area_layer_combo.hide()  # shown for "Inside polygons" only
        area = QHBoxLayout()
        area.addWidget(self.area_combo)
        area.addWidget(self.area_layer_combo, 1)
        grid.addWidget(QLabel("Area"), 3, 0)
        grid.addLayout(area, 3, 1)
        grid.setColumnStretch(1, 1)
        return grid

    def _model_and_device(self) -> QFormLayout:
        form = QFormLayout()
        self.model_widget = QgsFileWidget()
        self.model_widget.setFilter("DeepCL model (*.pt)")
        self.model_widget.lineEdit().setPlaceholderText("Bundled model")
        self.model_note = _wrapping_label("")
        form.addRow("Model", self.model_widget)
        form.addRow("", self.model_note)
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, len(threshold_scale.THRESHOLDS) - 1)
        self.threshold_slider.setToolTip("Confidence from which a pixel counts as changed; lower finds more "
                                         "change. Moving it after a run updates the change layer at once.")
        self.threshold_label = QLabel("0.50")
        threshold = QHBoxLayout()
        threshold.addWidget(self.threshold_slider, 1)
        threshold.addWidget(self.threshold_label)
        form.addRow("Threshold", threshold)
        self.device_combo = QComboBox()
        self.device_label = _wrapping_label("")
        form.addRow("Device", self.device_combo)
        form.addRow("", self.device_label)
        return form

    def _advanced(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Advanced")
        box.setCollapsed(True)
        form = QFormLayout(box)
        self.tile_spin = _spin(32, 4096, 32, " px", "Tiles the network works on; smaller ones use less memory.")
        self.overlap_spin = _spin(0, 2047, 16, " px", "Overlap between tiles, blended to hide seams.")
        self.batch_spin = _spin(0, 256, 1, "", "Tiles processed at once; auto: 1 on the CPU, 8 on CUDA, 4 on MPS.")
        self.batch_spin.setSpecialValueText("auto")  # shown for 0
        self.polygons_check = QCheckBox("Write change polygons (GeoPackage)")
        self.min_area_spin = QgsDoubleSpinBox()
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setSuffix(" m²")
        self.min_area_spin.setToolTip("Change polygons smaller than this are dropped: in m², or in pixels for "
                                      "images without georeference.")
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_widget.lineEdit().setPlaceholderText("Temporary folder")
        for label, widget in (("Tile size", self.tile_spin), ("Overlap", self.overlap_spin),
                              ("Batch", self.batch_spin), ("Polygons", self.polygons_check),
                              ("Minimum area", self.min_area_spin), ("Output folder", self.output_widget)):
            form.addRow(label, widget)
        self.advanced_box = box
        return box

    def _run_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.run_button = QPushButton("Detect changes")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.diagnostics_button = QToolButton()
        self.diagnostics_button.setIcon(QgsApplication.getThemeIcon("/mIconInfo.svg"))
        self.diagnostics_button.setToolTip("Diagnostics: versions, devices and install folder, for a bug report")
        row.addWidget(self.run_button, 1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.diagnostics_button)
        return row

    def _results(self) -> QWidget:
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.hide()
        self.status_label = _wrapping_label("")
        self.summary_label = _wrapping_label("")
        self.error_label = _wrapping_label("")
        self.error_label.setStyleSheet(ERROR_STYLE)
        for widget in (self.progress_bar, self.status_label, self.summary_label, self.error_label):
            column.addWidget(widget)
        return box


def _raster_combo() -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox()
    combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
    # Only layers GDAL reads can be detected on: no WMS, WCS, … layer is offered
    combo.setExcludedProviders([name for name in QgsProviderRegistry.instance().providerList() if name != "gdal"])
    combo.setAllowEmptyLayer(True)
    combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    return combo


def _spin(low: int, high: int, step: int, suffix: str, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setSuffix(suffix)
    spin.setToolTip(tip)
    return spin


def _wrapping_label(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label
