"""The DeepCL dock panel: choose two layers, press one button, get styled change layers.

The work is ``deepcl:detectchanges`` in a background task (:mod:`.detection_run`); moving the
threshold afterwards rewrites only the change map from the confidence map (:mod:`.latest_change_map`)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from qgis.core import Qgis, QgsProcessingFeatureSourceDefinition, QgsProcessingUtils, QgsProject, QgsRasterLayer, \
    QgsVectorLayer
from qgis.gui import QgsDockWidget

from ..dependencies import unusable_dependencies, unusable_summary
from .. import pair_checks
from ..algorithms.base import raster_file
from ..engine import as_sentence, core_module, is_engine_error
from ..file_names import name_from
from ..layer_styling import pair_names, run_group_name
from ..paths import bundled_model_path
from .. import threshold_scale
from . import layer_choice, result_layers
from .detection_run import DetectionRun
from .device_info import device_report
from .form import MAP_VIEW, POLYGONS, WHOLE_IMAGE, PanelForm
from .latest_change_map import LatestChangeMap
from .map_view import view_extent, view_problem
from .settings import PanelChoices, load_choices, save_choices
from .summary import run_summary

RUN_FOLDER_NAME_CHARACTERS = 40  # of each name in a run folder's: a product's name holds its date early on
RUN_FOLDER_NAME_BYTES = 70  # of each of its (up to) three names: with the rest, within a file name's 255 bytes


class DeepCLDock(QgsDockWidget):
    def __init__(self, iface: Any, project: Optional[QgsProject] = None) -> None:
        super().__init__("DeepCL change detection")
        self.setObjectName("DeepCLDock")
        self.iface = iface
        self.project = project or QgsProject.instance()
        # Before the combos exist: their models, told first, would already have moved to another layer
        self.project.layersWillBeRemoved['QStringList'].connect(self._on_layers_removed)
        self.form = PanelForm(self)
        self.setWidget(self.form)
        self.run: Optional[DetectionRun] = None
        self.run_folder: Optional[Path] = None
        self.run_group = ""  # the running or latest run's group, named after its layers
        self.cancel_asked = False
        self._shown_model_threshold = -1.0  # the model's threshold for the before layer, last shown
        self._pixel_sizes: Dict[str, Optional[float]] = {}  # by layer source
        self.latest = LatestChangeMap(self.project, self.threshold, self.form.summary_label.setText, self.show_error,
                                      self)
        self._connect()
        self.refresh_dependencies()
        self._hide_results_from_inputs()
        self.apply_choices(load_choices())
        self._adopt_latest_run()  # of a project opened before the panel (QGIS builds it at its first click)

    # --- set-up ---------------------------------------------------------------------------------

    def _connect(self) -> None:
        form = self.form
        form.swap_button.clicked.connect(self.swap_layers)
        # Bound methods, not lambdas: Qt drops a method's connections when the panel is deleted
        form.before_combo.layerChanged.connect(self._on_before_changed)
        form.after_combo.layerChanged.connect(self._on_after_changed)
        form.threshold_slider.valueChanged.connect(self._on_threshold_moved)
        form.area_combo.currentIndexChanged.connect(self._on_area_changed)
        form.run_button.clicked.connect(self.detect)
        form.cancel_button.clicked.connect(self.cancel)
        form.install_button.clicked.connect(self.open_installer)
        form.diagnostics_button.clicked.connect(self.open_diagnostics)
        form.model_widget.fileChanged.connect(self._on_model_changed)
        self.project.legendLayersAdded.connect(self._on_layers_added)  # once in the layer tree
        self.project.cleared.connect(self._on_project_cleared)
        self.project.readProject.connect(self._on_project_read)

    def _on_project_read(self, _document: object) -> None:
        """A project opened: its pair offered (its layers come without legendLayersAdded), and the
        change layer of its latest run follows the slider again, from where it is."""
        self._on_layers_added([])
        self._adopt_latest_run()

    def _adopt_latest_run(self) -> None:
        """The project's latest panel run, if any, followed by the slider from its saved threshold."""
        layer = result_layers.latest_change_layer(self.project)
        if layer is None:
            return
        try:
            self.latest.adopt(layer)
            self._set_threshold(float(layer.customProperty(result_layers.THRESHOLD_PROPERTY)))
        except ValueError:  # a project moved since, or edited by hand: its layer stays as it is
            self.latest.forget()

    def _on_layers_added(self, _layers: list) -> None:
        self._hide_results_from_inputs()
        # A pair added after the panel opened is offered at once, unless both inputs are chosen.
        if self.form.before_combo.currentLayer() is None or self.form.after_combo.currentLayer() is None:
            self.preselect_layers()

    def _hide_results_from_inputs(self) -> None:
        """The panel's own outputs are never an input a user means (the preselection skips them too)."""
        results = result_layers.result_layers_in(self.project)
        for combo in (self.form.before_combo, self.form.after_combo, self.form.area_layer_combo):
            combo.setExceptedLayerList(results)

    def _on_project_cleared(self) -> None:
        """A run's results belong to the project it started in; its summary and messages too."""
        self.latest.forget()
        self.form.summary_label.setText("")
        self.clear_messages()
        self.cancel()

    def _on_layers_removed(self, layer_ids: List[str]) -> None:
        # Left to itself a combo moves to the next layer, e.g. the before layer in both, or other polygons
        for combo in (self.form.before_combo, self.form.after_combo, self.form.area_layer_combo):
            if combo.currentLayer() is not None and combo.currentLayer().id() in layer_ids:
                combo.setLayer(None)

    def refresh_dependencies(self) -> None:
        """Show what is missing (and the install button) or the devices found."""
        unusable = unusable_dependencies()
        self.form.torch_box.setVisible(bool(unusable))
        self.form.torch_label.setText(f"DeepCL cannot use {unusable_summary(unusable)}. It needs PyTorch to detect "
                                      "changes; the plugin can install it into its own folder." if unusable else "")
        self.form.run_button.setEnabled(not unusable)
        report = device_report()
        combo = self.form.device_combo
        current = combo.currentData() or "auto"
        combo.clear()
        for label, value, usable in report.choices:
            combo.addItem(label, value)
            combo.model().item(combo.count() - 1).setEnabled(usable)
        self._choose_device(current)
        self.form.device_label.setText(report.found)
        self._update_model_note()

    def apply_choices(self, choices: PanelChoices) -> None:
        form = self.form
        before, after = self._remembered_or_preselected(choices)
        self._set_layers(before, after)
        for combo, layer, source, bands in ((form.bands_before, before, choices.before_source, choices.bands_before),
                                            (form.bands_after, after, choices.after_source, choices.bands_after)):
            if layer is not None and layer.source() == source:  # the bands chosen for this very layer
                combo.choose([int(band) for band in bands.split(",") if band.strip().isdigit()])
        form.model_widget.setFilePath(choices.model_path)
        self._show_model_threshold()
        if choices.threshold >= 0:
            self._set_threshold(choices.threshold)
        self._choose_device(choices.device)
        form.area_combo.setCurrentIndex(max(0, form.area_combo.findData(choices.area)))
        polygons = [layer for layer in self.project.mapLayers().values() if layer.source() == choices.area_layer_source]
        if polygons:
            form.area_layer_combo.setLayer(polygons[0])
        form.tile_spin.setValue(choices.tile_size)
        form.overlap_spin.setValue(choices.overlap)
        form.batch_spin.setValue(choices.batch_size)
        form.polygons_check.setChecked(choices.polygons)
        form.min_area_spin.setValue(choices.min_area)
        form.output_widget.setFilePath(choices.output_folder)

    def _choose_device(self, value: str) -> None:
        """``value``'s entry when this machine can use it, else Auto: a device remembered from
        another session (a GPU since gone, a CUDA build since replaced) showed greyed out, chosen."""
        combo = self.form.device_combo
        index = combo.findData(value)
        usable = index >= 0 and combo.model().item(index).isEnabled()
        combo.setCurrentIndex(index if usable else max(0, combo.findData("auto")))

    def _remembered_or_preselected(self, choices: PanelChoices) -> tuple:
        layers = layer_choice.recent_raster_layers(self.project)
        by_source = {layer.source(): layer for layer in reversed(layers)}
        before, after = by_source.get(choices.before_source), by_source.get(choices.after_source)
        if before is not None and after is not None and before is not after:
            return before, after
        return layer_choice.preselect(layers)

    def preselect_layers(self) -> None:
        """Choose the two most recent raster layers again (e.g. after adding a pair)."""
        self._set_layers(*layer_choice.preselect(layer_choice.recent_raster_layers(self.project)))

    def current_choices(self) -> PanelChoices:
        form = self.form
        before, after = form.before_combo.currentLayer(), form.after_combo.currentLayer()
        threshold = self.requested_threshold()
        return PanelChoices(
            before_source=before.source() if before else "", after_source=after.source() if after else "",
            bands_before=",".join(str(band) for band in form.bands_before.bands()),
            bands_after=",".join(str(band) for band in form.bands_after.bands()),
            model_path=form.model_widget.filePath(), threshold=-1.0 if threshold is None else threshold,
            device=form.device_combo.currentData() or "auto", area=form.area_combo.currentData(),
            area_layer_source=form.area_layer_combo.currentLayer().source() if form.area_layer_combo.currentLayer()
            else "",
            tile_size=form.tile_spin.value(),
            overlap=form.overlap_spin.value(), batch_size=form.batch_spin.value(),
            polygons=form.polygons_check.isChecked(), min_area=form.min_area_spin.value(),
            output_folder=form.output_widget.filePath())

    # --- inputs ---------------------------------------------------------------------------------

    def swap_layers(self) -> None:
        """The bands chosen go with their layers."""
        form = self.form
        before_bands, after_bands = form.bands_before.bands(), form.bands_after.bands()
        self._set_layers(form.after_combo.currentLayer(), form.before_combo.currentLayer())
        form.bands_before.choose(after_bands)
        form.bands_after.choose(before_bands)

    def _set_layers(self, before: Optional[QgsRasterLayer], after: Optional[QgsRasterLayer]) -> None:
        # layerChanged is not emitted when a combo already shows the layer: fill the bands here too.
        self.form.before_combo.setLayer(before)
        self.form.after_combo.setLayer(after)
        self.form.bands_before.fill(before)
        self.form.bands_after.fill(after)
        self._show_area_unit()

    def _show_area_unit(self) -> None:
        """The engine measures areas in m² on georeferenced images, in pixels on others."""
        unknown = self.form.before_combo.currentLayer() is not None and self._before_pixel_size() is None
        self.form.min_area_spin.setSuffix(" pixels" if unknown else " m²")

    def threshold(self) -> float:
        """The slider's threshold; at the stop nearest the model's own threshold, that threshold
        exactly (a calibrated model's, e.g. 0.284, lies between the slider's round values)."""
        position = self.form.threshold_slider.value()
        if self._shown_model_threshold >= 0 and position == threshold_scale.position_of(self._shown_model_threshold):
            return self._shown_model_threshold
        return threshold_scale.threshold_at(position)

    def requested_threshold(self) -> Optional[float]:
        """The slider's threshold when the user moved it off the model's own, else None: the
        model's own, whichever model and imagery the run and the next session bring."""
        threshold = self.threshold()
        return None if threshold == self._shown_model_threshold else threshold

    def model_path(self) -> Path:
        chosen = self.form.model_widget.filePath().strip()
        return Path(chosen) if chosen else bundled_model_path()

    def _on_after_changed(self, layer: Optional[QgsRasterLayer]) -> None:
        self.form.bands_after.fill(layer)

    def _on_area_changed(self, _index: int) -> None:
        combo = self.form.area_layer_combo
        combo.setVisible(self.form.area_combo.currentData() == POLYGONS)
        if combo.isVisibleTo(self) and combo.currentLayer() is None and combo.count() > 1:
            combo.setCurrentIndex(1)  # the first polygon layer, after the empty choice

    def _on_model_changed(self, _path: str = "") -> None:
        """Another model brings its own decision threshold (chosen on its validation pairs)."""
        self._update_model_note()
        self._show_model_threshold()

    def _on_before_changed(self, layer: Optional[QgsRasterLayer]) -> None:
        """A before image of another pixel size may bring another of the model's thresholds
        (e.g. 10 m Sentinel-2 against aerial imagery); the slider follows only then."""
        self.form.bands_before.fill(layer)
        self._show_area_unit()
        threshold = self._model_threshold()
        if threshold != self._shown_model_threshold:
            self._show_model_threshold(threshold)

    def _show_model_threshold(self, threshold: Optional[float] = None) -> None:
        self._shown_model_threshold = self._model_threshold() if threshold is None else threshold
        self._set_threshold(self._shown_model_threshold)

    def _model_threshold(self) -> float:
        """The chosen model's threshold for the before layer's pixel size; 0.5 while the file cannot
        be read (the run will say why)."""
        try:
            bundle = pair_checks.loaded_model(str(self.model_path()))
        except Exception as exc:  # no file, no torch, a bad model: the run says why
            if not isinstance(exc, (OSError, ImportError)) and not is_engine_error(exc):
                raise
            return 0.5
        return float(bundle.threshold_for(self._before_pixel_size()))

    def _before_pixel_size(self) -> Optional[float]:
        """The before layer's pixel size on the ground, in m; None without georeference (or layer).
        Read from its file once (it may lie on a server: the panel asks on every change of layer)."""
        layer = self.form.before_combo.currentLayer()
        if layer is None:
            return None
        if layer.source() not in self._pixel_sizes:
            self._pixel_sizes[layer.source()] = core_module("area").file_pixel_size(raster_file(layer, "before"))
        return self._pixel_sizes[layer.source()]

    def _set_threshold(self, threshold: float) -> None:
        """Show ``threshold`` without re-classifying the last run (only the user's moves do that)."""
        slider = self.form.threshold_slider
        slider.blockSignals(True)
        slider.setValue(threshold_scale.position_of(threshold))
        slider.blockSignals(False)
        self.form.threshold_label.setText(threshold_scale.label(self.threshold()))

    def _update_model_note(self) -> None:
        if not self.form.model_widget.filePath().strip() and not bundled_model_path().is_file():
            self.form.model_note.setText("No trained model is bundled yet: choose a model file (.pt).")
        else:
            self.form.model_note.setText("")

    # --- the run --------------------------------------------------------------------------------

    def parameters(self) -> Dict[str, Any]:
        """Processing parameters for ``deepcl:detectchanges`` from the panel, outputs in ``run_folder``."""
        form = self.form
        before, after = form.before_combo.currentLayer(), form.after_combo.currentLayer()
        parameters = {
            "BEFORE": before.id() if before else None, "AFTER": after.id() if after else None,
            "MODEL": str(self.model_path()), "THRESHOLD": self.requested_threshold(),
            "DEVICE": form.device_combo.currentData() or "auto", "TILE_SIZE": form.tile_spin.value(),
            "OVERLAP": form.overlap_spin.value(), "BATCH_SIZE": form.batch_spin.value(),
            "MIN_AREA": form.min_area_spin.value(),
            "CHANGE": str(self.run_folder / "change.tif"), "CONFIDENCE": str(self.run_folder / "confidence.tif")}
        for name, combo in (("BANDS_BEFORE", form.bands_before), ("BANDS_AFTER", form.bands_after)):
            bands = combo.bands()
            if bands:
                parameters[name] = bands
        if form.polygons_check.isChecked():
            parameters["POLYGONS"] = str(self.run_folder / "polygons.gpkg")
        if self.in_map_view():
            parameters["EXTENT"] = view_extent(self.iface.mapCanvas())
        polygons = self.area_polygons()
        if polygons is not None:
            parameters["MASK"] = QgsProcessingFeatureSourceDefinition(
                polygons.id(), selectedFeaturesOnly=polygons.selectedFeatureCount() > 0)
        return parameters

    def area_polygons(self) -> Optional[QgsVectorLayer]:
        """The polygon layer to detect inside, with "Inside polygons"; else None."""
        return self.form.area_layer_combo.currentLayer() if self.form.area_combo.currentData() == POLYGONS else None

    def in_map_view(self) -> bool:
        return self.form.area_combo.currentData() == MAP_VIEW

    def detect(self) -> None:
        """Start the detection in the background; problems are reported before anything runs."""
        if self.is_running():
            return
        self.clear_messages()
        before, after = self.form.before_combo.currentLayer(), self.form.after_combo.currentLayer()
        if before is None or after is None:
            self.show_error("Choose a before and an after raster layer.")
            return
        problem = view_problem(view_extent(self.iface.mapCanvas()), before, self.project) if self.in_map_view() else ""
        if self.form.area_combo.currentData() == POLYGONS and self.area_polygons() is None:
            problem = "Choose the polygon layer to detect inside, or another Area."
        if problem:  # in the panel's words: Processing's speak of a "processing extent"
            self.show_error(problem)
            return
        save_choices(self.current_choices())
        # Named now: the layers may be removed meanwhile
        names = pair_names(before.name(), after.name(), before.source(), after.source())
        try:
            self.run_folder = self._new_run_folder(names)
        except OSError as exc:
            self.show_error(f"The results cannot be written in {exc.filename}: {exc.strerror}. "
                            "Choose another output folder.")
            return
        self.run_group = run_group_name(names)
        run = DetectionRun(self.parameters(), self.project, self)
        try:
            problem = run.problem()
        except BaseException:  # a check's own fault: the panel must stay usable, and leave no folder
            self._discard_run_folder()
            raise
        if problem:
            self._discard_run_folder()
            self.show_error(problem)
            return
        self.run = run
        self.run.progress.connect(self._on_progress)
        self.run.message.connect(self.form.status_label.setText)
        self.run.finished.connect(self._on_finished)
        self.cancel_asked = False
        self._set_running(True)
        self.run.start()

    def _new_run_folder(self, names: Tuple[str, str, str]) -> Path:
        base = Path(self.form.output_widget.filePath().strip() or QgsProcessingUtils.tempFolder())
        stem = "_".join(["deepcl"] + [name_from(name, RUN_FOLDER_NAME_CHARACTERS, RUN_FOLDER_NAME_BYTES).strip("_")
                                      for name in names if name])
        folder = base / f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}"
        suffix = 2
        while folder.exists():
            folder, suffix = base / f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}_{suffix}", suffix + 1
        folder.mkdir(parents=True)
        return folder

    def _discard_run_folder(self) -> None:
        # The engine leaves no file behind on failure; the folder was made by this run only.
        if self.run_folder is not None:
            shutil.rmtree(self.run_folder, ignore_errors=True)
        self.run_folder = None

    def _on_progress(self, percent: float) -> None:
        self.form.progress_bar.setValue(int(percent))

    def is_running(self) -> bool:
        return self.run is not None

    def cancel(self) -> None:
        if self.run is not None:
            self.form.status_label.setText("Cancelling…")
            self.cancel_asked = True  # a run that got past its last check still ends as cancelled
            self.run.cancel()

    def _set_running(self, running: bool) -> None:
        form = self.form
        form.run_button.setEnabled(not running)
        form.cancel_button.setVisible(running)
        form.progress_bar.setVisible(running)
        form.progress_bar.setValue(0)
        if running:
            form.summary_label.setText("")
            form.status_label.setText("Starting…")

    def _on_finished(self, ok: bool, results: Dict[str, Any], error: str, seconds: float) -> None:
        parameters, warnings = self.run.parameters, self.run.feedback.warnings
        self.run = None
        self._set_running(False)
        self.form.status_label.setText("")
        if not ok or self.cancel_asked:
            self._discard_run_folder()
            if error and not self.cancel_asked:
                self.show_error(error)
            else:
                self.form.status_label.setText("Cancelled: nothing was added.")
            return
        self._load(results, parameters, seconds)
        self.show_warnings(warnings)

    def _load(self, results: Dict[str, Any], parameters: Dict[str, Any], seconds: float) -> None:
        try:
            layers = result_layers.load_results(self.project, results, self.run_group, results["THRESHOLD_USED"])
        except OSError as exc:
            self.show_error(str(exc))
            return
        self._hide_results_from_inputs()
        threshold, area = results["THRESHOLD_USED"], _area_of(parameters)
        change = layers["CHANGE"]
        self.latest.show_run(change, threshold, seconds, area,
                             run_summary(results, threshold, seconds, area, change.width() * change.height()),
                             polygons="POLYGONS" in layers)

    # --- threshold after the run -----------------------------------------------------------------

    def _on_threshold_moved(self, _position: int) -> None:
        self.form.threshold_label.setText(threshold_scale.label(self.threshold()))
        if not self.is_running():  # a run's end applies the slider
            self.latest.threshold_moved()

    # --- messages and dialogs ----------------------------------------------------------------------

    def show_warnings(self, warnings: List[str]) -> None:
        """The engine's warnings of a finished run (very different pixel sizes, an untrained model,
        batches halved on the GPU), under the summary and in the message bar."""
        self.form.status_label.setText("\n".join(f"Warning: {as_sentence(text)}." for text in warnings))
        for text in warnings:
            self.iface.messageBar().pushMessage("DeepCL", as_sentence(text), Qgis.Warning, 10)

    def show_error(self, text: str) -> None:
        text = as_sentence(text)  # the engine's messages begin in lower case, as a command line's do
        self.form.error_label.setText(text)
        self.iface.messageBar().pushMessage("DeepCL", text.splitlines()[0], Qgis.Critical, 10)

    def clear_messages(self) -> None:
        self.form.error_label.setText("")
        self.form.status_label.setText("")

    def open_installer(self) -> None:
        from .install_dialog import InstallDialog

        dialog = InstallDialog(self)
        dialog.exec_()
        dialog.deleteLater()
        self.refresh_dependencies()
        if self.requested_threshold() is None:  # the slider at 0.5, which stood in for the model's threshold
            self._show_model_threshold()         # while torch could not read it: read it now

    def open_diagnostics(self) -> None:
        from .diagnostics_dialog import DiagnosticsDialog

        dialog = DiagnosticsDialog(self)
        dialog.exec_()
        dialog.deleteLater()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        save_choices(self.current_choices())
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop what runs and keep the choices; called by the plugin's unload."""
        self.latest.stop()
        self.project.legendLayersAdded.disconnect(self._on_layers_added)
        self.project.layersWillBeRemoved['QStringList'].disconnect(self._on_layers_removed)
        self.project.cleared.disconnect(self._on_project_cleared)
        self.project.readProject.disconnect(self._on_project_read)
        self._let_the_run_end_alone()
        save_choices(self.current_choices())

    def _let_the_run_end_alone(self) -> None:
        """Cancel a run and let it end without the panel, which is going: it keeps its own
        reference (the task needs its context and feedback until it ends) and removes its folder
        then, which the panel's end-of-run slot would have done (the folder was left behind)."""
        run, folder = self.run, self.run_folder
        if run is None:
            return
        self.run = self.run_folder = None
        run.setParent(None)
        _ENDING_RUNS.add(run)

        def ended(*_: Any) -> None:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            _ENDING_RUNS.discard(run)

        run.finished.disconnect()
        run.finished.connect(ended)
        run.cancel()


# Runs cancelled by a panel that went away (the plugin unloaded), kept until their tasks end.
_ENDING_RUNS: Set[DetectionRun] = set()


def _area_of(parameters: Dict[str, Any]) -> str:
    """Where a run with these Processing parameters detected (form.AREAS)."""
    return MAP_VIEW if "EXTENT" in parameters else POLYGONS if "MASK" in parameters else WHOLE_IMAGE
