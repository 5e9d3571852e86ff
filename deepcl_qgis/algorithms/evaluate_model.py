"""deepcl:evaluatemodel: accuracy of a change map (given, or made by a model from a pair) against
a reference label raster or polygons of changed areas."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from osgeo import gdal
from qgis.core import (QgsProcessing, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingOutputNumber, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer)

from .. import accuracy, pair_checks
from ..engine import core_module
from ..report_html import metric_text, write_report
from ..threshold_scale import THRESHOLDS
from .base import (DeepCLAlgorithm, add_help, optional_number, processing_run, progress_to, raster_file,
                   raster_input, run_folder, typed_number_problem)

METRICS = ["PRECISION", "RECALL", "F1", "IOU", "OA", "KAPPA"]
COUNTS = ["TP", "FP", "FN", "TN"]
# What a graphical model's designer reads in the list of outputs ("OA", "TP" said little)
OUTPUT_LABELS = {"PRECISION": "Precision of the change class", "RECALL": "Recall of the change class",
                 "F1": "F1 score of the change class", "IOU": "IoU of the change class", "OA": "Overall accuracy",
                 "KAPPA": "Cohen's kappa", "TP": "Changed pixels found (true positives)",
                 "FP": "False alarms (false positives, pixels)", "FN": "Missed changes (false negatives, pixels)",
                 "TN": "Unchanged pixels found unchanged (true negatives)"}
RELIABILITY = ["BRIER", "ECE"]  # of the confidence, when the algorithm runs the model


class EvaluateModelAlgorithm(DeepCLAlgorithm):
    CHANGE = "CHANGE"
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    MODEL = "MODEL"
    THRESHOLD = "THRESHOLD"
    DEVICE = "DEVICE"
    REFERENCE = "REFERENCE"
    REFERENCE_POLYGONS = "REFERENCE_POLYGONS"
    OUTPUT_HTML = "OUTPUT_HTML"
    THRESHOLD_USED = "THRESHOLD_USED"

    DEVICES = ["auto", "cpu", "cuda", "mps"]
    ICON = "evaluate"
    COMMAND_LINE_OPTIONS = {"--device": DEVICE, "--model": MODEL, "--threshold": THRESHOLD}

    def name(self) -> str:
        return "evaluatemodel"

    def displayName(self) -> str:  # noqa: N802 (Qt API)
        return self.tr("Evaluate a change map or model")

    def tags(self) -> List[str]:
        return self.tr("accuracy,evaluation,validation,f1,iou,kappa,precision,recall,reference,"
                       "ground truth,change detection,deepcl").split(",")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Measures how well a change map matches a reference.<br><br>"
            "Give either a <b>change map</b> (e.g. the Change output of 'Detect changes'), or a <b>model</b> "
            "with a <b>before</b> and an <b>after</b> image, which is then run first. Give the reference as a "
            "<b>label raster</b> (0 = unchanged; 1, 255 or a colour = changed) or as <b>polygons of the changed "
            "areas</b> (everything else counts as unchanged).<br><br>Returns precision, recall, F1, IoU of the change class, overall "
            "accuracy and Cohen's kappa as outputs, and optionally an HTML report; when it runs the model, also "
            "how far its confidence reads as a probability on your pairs (Brier score and expected calibration "
            "error; if they are poor, calibrate the model on such pairs) and the change threshold it used. "
            "Pixels that are nodata in the change map or the reference are not counted.")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802
        for parameter, help_text in self._parameters():
            self.addParameter(add_help(parameter, help_text))
        for key in METRICS + COUNTS:
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(OUTPUT_LABELS[key])))
        self.addOutput(QgsProcessingOutputNumber("BRIER", self.tr("Brier score of the confidence (model runs only)")))
        self.addOutput(QgsProcessingOutputNumber("ECE", self.tr("Expected calibration error of the confidence "
                                                                "(model runs only)")))
        # As detection's: which threshold made the figures; unknown for a change map given
        self.addOutput(QgsProcessingOutputNumber(self.THRESHOLD_USED, self.tr("Change threshold used "
                                                                              "(model runs only)")))

    def _parameters(self) -> List[Tuple[Any, str]]:
        return [
            (QgsProcessingParameterRasterLayer(self.CHANGE, self.tr("Change map"), optional=True),
             self.tr("A raster with 1 for changed and 0 for unchanged pixels. Leave empty to run a model.")),
            (QgsProcessingParameterRasterLayer(self.BEFORE, self.tr("Before image (to run a model)"), optional=True),
             self.tr("With the after image and a model: detect change first, then evaluate it.")),
            (QgsProcessingParameterRasterLayer(self.AFTER, self.tr("After image (to run a model)"), optional=True),
             self.tr("The image taken after the change.")),
            (QgsProcessingParameterFile(self.MODEL, self.tr("Model file (to run a model)"), extension="pt",
                                        optional=True),
             self.tr("The DeepCL model (.pt) to evaluate on the before/after pair; empty: the bundled model.")),
            (QgsProcessingParameterNumber(self.THRESHOLD, self.tr("Change threshold"),
                                          QgsProcessingParameterNumber.Double, None, True,
                                          THRESHOLDS[0], THRESHOLDS[-1]),  # detection's: its THRESHOLD_USED fits
             self.tr("Used when running a model. Empty: the model's own threshold for each pair's pixel size.")),
            (QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), self.DEVICES, defaultValue="auto",
                                        usesStaticStrings=True),
             self.tr("Used when running a model.")),
            (QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference label raster"), optional=True),
             self.tr("Ground truth: 0 (black) = unchanged, 1 or 255 (white or a colour) = changed, in any band; a "
                     "paletted one read as drawn. Reprojected onto the change map's grid if needed.")),
            (QgsProcessingParameterFeatureSource(self.REFERENCE_POLYGONS, self.tr("Reference changed-area polygons"),
                                                 [QgsProcessing.TypeVectorPolygon], optional=True),
             self.tr("Ground truth as polygons of the changed areas; all other pixels count as unchanged.")),
            (QgsProcessingParameterFileDestination(self.OUTPUT_HTML, self.tr("Evaluation report"),
                                                   self.tr("HTML files (*.html)"), optional=True,
                                                   createByDefault=False),
             self.tr("Optional: an HTML page with the metrics and pixel counts.")),
        ]

    # --- checks -------------------------------------------------------------------------------

    def precheck(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
        return typed_number_problem(parameters.get(self.THRESHOLD), "Change threshold")

    def check_inputs(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Tuple[bool, str]:
        self._check_report_path(parameters, context)
        has = {name: parameters.get(name) not in (None, "") for name in
               (self.CHANGE, self.BEFORE, self.AFTER, self.MODEL, self.THRESHOLD, self.REFERENCE,
                self.REFERENCE_POLYGONS)}
        if has[self.REFERENCE] == has[self.REFERENCE_POLYGONS]:
            return False, self.tr("Give the reference either as a label raster or as changed-area polygons "
                                  "(one of them).")
        if has[self.CHANGE]:
            if has[self.BEFORE] or has[self.AFTER]:
                return False, self.tr("Give either a change map, or a before and an after image with a model, "
                                      "not both.")
            if has[self.MODEL] or has[self.THRESHOLD]:  # else dropped without a word: the figures are the map's
                return False, self.tr("A change map is given: the model file and the change threshold are used only "
                                      "to run a model on a before and an after image; leave them empty (the change "
                                      "map's classes are compared as they are).")
            return True, ""
        if not (has[self.BEFORE] and has[self.AFTER]):
            return False, self.tr("Give a change map, or a before and an after image (and a model) to produce one.")
        before = self.parameterAsRasterLayer(parameters, self.BEFORE, context)
        after = self.parameterAsRasterLayer(parameters, self.AFTER, context)
        pair_checks.check_distinct(before, after)
        pair_checks.check_overlap(raster_file(before, "before"), raster_file(after, "after"))
        model = self.model_path(parameters, context)
        pair_checks.check_model(model, before, [], "before")
        pair_checks.check_model(model, after, [], "after")
        return True, ""

    def _check_report_path(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> None:
        """The engine's check of an output's folder, as detection makes it: the report is written
        last, and a missing folder failed only then, after the model run and the metrics, with a
        traceback. Nor may it replace an input: Processing asks before replacing a file only in its
        dialog, and the report was written over the reference, the model or the change map."""
        if not self._has(parameters, self.OUTPUT_HTML):
            return
        report = Path(self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context))
        for label, path in self._input_files(parameters, context):
            if Path(path).resolve() == report.resolve():
                raise QgsProcessingException(f"The report would replace the {label} {path}, an input; "
                                             "choose another file name for it.")
        core_module("outputs").check_output_paths([report], [], overwrite=True)  # Processing asks first

    def _input_files(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> List[Tuple[str, str]]:
        """(what, file) of each input given."""
        files = [(role, raster_file(layer, role)) for name, role in (
            (self.CHANGE, "change map"), (self.BEFORE, "before image"), (self.AFTER, "after image"),
            (self.REFERENCE, "reference")) if (layer := self.parameterAsRasterLayer(parameters, name, context))]
        polygons = self.parameterAsVectorLayer(parameters, self.REFERENCE_POLYGONS, context)
        if polygons is not None:
            files.append(("reference polygons", polygons.source().split("|")[0]))
        if self._has(parameters, self.MODEL):
            files.append(("model file", self.parameterAsFile(parameters, self.MODEL, context)))
        return files

    # --- run ------------------------------------------------------------------------------------

    def prepareAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        """The raster and polygon layers, read in the main thread (see RasterInput)."""
        self.check_before_running(parameters, context)
        self._rasters = {name: raster_input(self, parameters, name, context, role) for name, role in (
            (self.CHANGE, "change map"), (self.BEFORE, "before"), (self.AFTER, "after"),
            (self.REFERENCE, "reference"))}
        self._reference_polygons = self.feature_sources(parameters, (self.REFERENCE_POLYGONS,), context)[
            self.REFERENCE_POLYGONS]
        return True

    @processing_run
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        self.require_dependencies()
        with run_folder("deepcl_evaluation_") as work:  # for the maps a model makes
            return self._evaluate(parameters, context, feedback, work)

    def _evaluate(self, parameters: Dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                  work: Path) -> Dict[str, Any]:
        change_path, confidence_path, change_name, detection = self._change_map(parameters, context, feedback, work)
        details = self._model_run_details(parameters, context, detection)
        if details:
            feedback.pushInfo("Model run — " + "; ".join(f"{label.lower()}: {text}" for label, text in details))
        else:
            feedback.pushInfo("The threshold that made the change map given is not known here (THRESHOLD_USED is "
                              "left empty); 'Detect changes' reports the one it used.")
        change = accuracy.open_change_map(change_path)
        reference, reference_name, polygon_count = self._reference(parameters, context, feedback, change)
        feedback.setProgressText("Comparing with the reference")
        with self.engine_warnings_to(feedback):  # what the reference shows as the engine's labels show it
            metrics = accuracy.confusion(change, reference, feedback.isCanceled,
                                         lambda fraction: feedback.setProgress(50 + 50 * fraction),
                                         gdal.Open(confidence_path) if confidence_path else None)
        if polygon_count and metrics["tp"] + metrics["fn"] == 0:  # near the map, as a region's layer, but not on it
            feedback.pushWarning(f"No reference polygon of “{reference_name}” covers a valid pixel of the change "
                                 "map: the reference says nothing changed there (recall n/a). If something did, "
                                 "draw the changed areas over the change map (or check the layer's CRS).")
        feedback.pushInfo(", ".join(f"{key}: {metric_text(key, metrics)}"
                                    for key in ("precision", "recall", "f1", "iou", "oa", "kappa")))
        if metrics.get("brier") is not None:
            feedback.pushInfo(f"Confidence as a probability: Brier score {metrics['brier']:.4f}, expected "
                              f"calibration error {metrics['ece']:.4f} (lower is better)")
        results: Dict[str, Any] = {key: metrics[key.lower()] for key in METRICS}
        results.update({key: int(metrics[key.lower()]) for key in COUNTS})
        results.update({key: metrics.get(key.lower()) for key in RELIABILITY})
        results[self.THRESHOLD_USED] = detection.threshold if detection is not None else None
        results[self.OUTPUT_HTML] = None  # every declared output, as detection's: a model's later step may ask
        if self._has(parameters, self.OUTPUT_HTML):
            report = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
            with self.replacements_said(feedback, Path(report)):
                write_report(Path(report), metrics, change_name, reference_name, details)
            results[self.OUTPUT_HTML] = report
        return results

    def _change_map(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                    feedback: QgsProcessingFeedback, work: Path) -> Tuple[str, str, str, Optional[Any]]:
        """The change map's file, the confidence map's ("" for a given change map), the change map's
        name and the detection's result (None for a given map): the given layer, or maps made by the
        model in ``work``."""
        change = self._rasters[self.CHANGE]
        if change is not None:
            return change.source, "", change.name, None
        before, after = self._rasters[self.BEFORE], self._rasters[self.AFTER]
        model = Path(self.model_path(parameters, context)).name
        change_path, confidence_path, result = self._run_model(parameters, context, feedback, work)
        name = f"detected by the model {model} between {before.name} and {after.name}"
        return change_path, confidence_path, name, result

    def _run_model(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback, work: Path) -> Tuple[str, str, Any]:
        detect = core_module("detect")
        before, after = self._rasters[self.BEFORE], self._rasters[self.AFTER]
        if before is None or after is None:
            raise QgsProcessingException("Give a change map, or a before and an after image (and a model).")
        outputs = detect.DetectOutputs(change=work / "change.tif", confidence=work / "confidence.tif")
        options = detect.DetectOptions(
            model=Path(self.model_path(parameters, context)),
            threshold=optional_number(self, parameters, self.THRESHOLD, context),
            device=self.choice(parameters, self.DEVICE, context) or "auto")
        with self.engine_errors():
            result = detect.detect_changes(before.source, after.source, outputs, options,  # no band choice here
                                           progress=progress_to(feedback, 0, 50), cancel=feedback.isCanceled,
                                           bands_by_hand=False)
        self.push_warnings(feedback, result.warnings)  # what detection says of its inputs, e.g. an untrained model
        return str(outputs.change), str(outputs.confidence), result

    def _model_run_details(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                           detection: Optional[Any]) -> List[Tuple[str, str]]:
        """(label, text) of the model run that made the change map, as ``deepcl evaluate`` reports
        it (model, threshold, input scale); none for a given change map."""
        if detection is None:
            return []
        if optional_number(self, parameters, self.THRESHOLD, context) is not None:
            whose = "given"
        elif detection.pixel_size_m:
            whose = f"the model's for pixels of {detection.pixel_size_m:.3g} m"
        else:
            whose = "the model's"
        details = [("Model", self.model_path(parameters, context)), ("Threshold", f"{detection.threshold:g} ({whose})")]
        if detection.input_scale > 1:
            details.append(("Input scale", f"images enlarged {detection.input_scale}× for the network"))
        return details

    def _reference(self, parameters: Dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                   change: Any) -> Tuple[Any, str, Optional[int]]:
        """The reference on the change map's grid, its name and (for polygons) how many it holds."""
        reference = self._rasters[self.REFERENCE]
        if reference is not None:
            return accuracy.reference_on_grid(change, reference.source), reference.name, None
        source = self._reference_polygons
        if source is None:
            raise QgsProcessingException("The reference polygon layer could not be read.")
        # The map's CRS as QGIS has it, as training takes the before layer's: one assigned there ("Set
        # layer CRS") to a file that holds none counts; the model writes on the before image's grid
        crs = (self._rasters[self.CHANGE] or self._rasters[self.BEFORE]).crs
        polygons = self.polygons_wkb(source, crs, self.geometry_check(parameters, self.REFERENCE_POLYGONS, context),
                                     context, feedback)
        name = source.sourceName()
        if not polygons:  # a reference without change: every pixel unchanged, as a label of 0s says
            feedback.pushWarning(f"The reference polygon layer “{name}” holds no polygon (none is selected, with "
                                 "“Selected features only”?): every pixel counts as unchanged.")
        elif not accuracy.polygons_meet_map(change, polygons):  # as training refuses polygons off its image
            raise QgsProcessingException(f"No reference polygon of “{name}” lies on the change map; give polygons "
                                         "of the changed areas over the change map (or check the layer's CRS).")
        return accuracy.rasterize_polygons(change, polygons), name, len(polygons)
