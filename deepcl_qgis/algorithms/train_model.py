"""deepcl:trainmodel: train or fine-tune a DeepCL model from QGIS, on folders of labelled pairs or
on a before/after raster pair with digitised changed areas."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessing, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingOutputNumber, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer)

from .. import pair_checks
from ..engine import core_module
from ..file_names import name_from
from ..training_pair import write_pair_folder
from .base import (DeepCLAlgorithm, add_help, processing_run, progress_to, raster_file, raster_input,
                   run_folder)


class TrainModelAlgorithm(DeepCLAlgorithm):
    DATA_FOLDER = "DATA_FOLDER"
    VALIDATION_FOLDER = "VALIDATION_FOLDER"
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    CHANGED_AREAS = "CHANGED_AREAS"
    AREA_OF_INTEREST = "AREA_OF_INTEREST"
    INIT_MODEL = "INIT_MODEL"
    EPOCHS = "EPOCHS"
    ITERATIONS = "ITERATIONS"
    BATCH_SIZE = "BATCH_SIZE"
    CROP = "CROP"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    F1, IOU, PRECISION, RECALL = "F1", "IOU", "PRECISION", "RECALL"
    BEST_EPOCH = "BEST_EPOCH"

    DEVICES = ["auto", "cpu", "cuda", "mps"]
    ICON = "train"
    COMMAND_LINE_OPTIONS = {"--device": DEVICE, "--crop": CROP, "--batch": BATCH_SIZE, "--epochs": EPOCHS,
                            "--iterations-per-epoch": ITERATIONS, "--init": INIT_MODEL, "--val": VALIDATION_FOLDER,
                            "--out": OUTPUT}

    def name(self) -> str:
        return "trainmodel"

    def displayName(self) -> str:  # noqa: N802 (Qt API)
        return self.tr("Train a change detection model")

    def tags(self) -> List[str]:
        return self.tr("train,fine-tune,training,deep learning,model,labels,change detection,deepcl").split(",")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Trains a DeepCL model, or fine-tunes one (<b>initial model</b>) on your own region.<br><br>"
            "Give the training pairs either as a <b>folder of pairs</b> (searched recursively: one folder per "
            "pair holding before.*, after.* and label.* rasters, or the LEVIR-CD A/ B/ label/ layout), or as "
            "a <b>before</b> and an <b>after</b> raster with a <b>polygon layer of changed areas</b>: the polygons "
            "are rasterised onto the before grid, and everything else inside the optional <b>area of "
            "interest</b> (or the whole image) counts as unchanged.<br><br>"
            "Writes a model file (.pt) usable by 'Detect changes' and reports the validation metrics (from "
            "the validation folder, or from pairs held out of the training folder). Training on a CPU is "
            "slow: keep the epochs low or use a GPU.")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802
        for parameter, help_text, advanced in self._parameters():
            self.addParameter(add_help(parameter, help_text, advanced))
        for key, label in ((self.F1, "Validation F1"), (self.IOU, "Validation IoU"),
                           (self.PRECISION, "Validation precision"), (self.RECALL, "Validation recall"),
                           (self.BEST_EPOCH, "Epoch of the kept weights")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def _parameters(self) -> List[Tuple[Any, str, bool]]:
        number = QgsProcessingParameterNumber
        return [
            (QgsProcessingParameterFile(self.DATA_FOLDER, self.tr("Folder of training pairs"),
                                        QgsProcessingParameterFile.Folder, optional=True),
             self.tr("Searched recursively for labelled pairs. Leave empty to train on the layers below."), False),
            (QgsProcessingParameterFile(self.VALIDATION_FOLDER, self.tr("Folder of validation pairs"),
                                        QgsProcessingParameterFile.Folder, optional=True),
             self.tr("Pairs to measure the model on. Empty: a fifth of the training pairs of each data set "
                     "is held out (when no data set holds two pairs: no validation, the last epoch is kept)."), False),
            (QgsProcessingParameterRasterLayer(self.BEFORE, self.tr("Before image"), optional=True),
             self.tr("With the after image and the changed areas: one training pair from layers."), False),
            (QgsProcessingParameterRasterLayer(self.AFTER, self.tr("After image"), optional=True),
             self.tr("The image taken after the change."), False),
            (QgsProcessingParameterFeatureSource(self.CHANGED_AREAS, self.tr("Changed areas (polygons)"),
                                                 [QgsProcessing.TypeVectorPolygon], optional=True),
             self.tr("Polygons of what changed between the two images."), False),
            (QgsProcessingParameterFeatureSource(self.AREA_OF_INTEREST, self.tr("Area of interest (polygons)"),
                                                 [QgsProcessing.TypeVectorPolygon], optional=True),
             self.tr("Where the changed areas were mapped completely; pixels outside it are not used. "
                     "Empty: the whole before image."), False),
            (QgsProcessingParameterFile(self.INIT_MODEL, self.tr("Initial model (fine-tune)"), extension="pt",
                                        optional=True),
             self.tr("A model file to start from; its encoder, bands and normalisation are kept, and its "
                     "thresholds and confidence scaling where the validation pairs do not choose them anew. "
                     "Empty: a new model (ImageNet-pretrained MobileNetV2 encoder, red/green/blue bands)."), False),
            (number(self.EPOCHS, self.tr("Epochs"), number.Integer, 20, False, 1, 1000),
             self.tr("Passes over the training data; each is followed by validation."), False),
            (number(self.ITERATIONS, self.tr("Steps per epoch"), number.Integer, 200, False, 1, 100000),
             self.tr("Training batches per epoch."), True),
            (number(self.BATCH_SIZE, self.tr("Batch size (crops)"), number.Integer, 8, False, 2, 256),
             self.tr("Crops per training step; lower it if the GPU runs out of memory."), True),
            (number(self.CROP, self.tr("Crop size (pixels)"), number.Integer, 256, False, 32, 2048),
             self.tr("Side of the random training crops, a multiple of 32."), True),
            (QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), self.DEVICES, defaultValue="auto",
                                        usesStaticStrings=True),
             self.tr("auto: an NVIDIA GPU (cuda) or Apple GPU (mps) when available, else the CPU."), False),
            (QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("Trained model"),
                                                   self.tr("DeepCL model (*.pt)")),
             self.tr("The model file to write (.pt)."), False),
        ]

    # --- checks -------------------------------------------------------------------------------

    def check_inputs(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Tuple[bool, str]:
        from_folder = self._has(parameters, self.DATA_FOLDER)
        from_layers = [self._has(parameters, name) for name in (self.BEFORE, self.AFTER, self.CHANGED_AREAS)]
        if from_folder == any(from_layers):
            both = " (not both)" if from_folder else ""
            return False, self.tr("Give either a folder of training pairs, or a before image, an after image "
                                  "and changed-area polygons{}.").format(both)
        if not from_folder:
            if not all(from_layers):
                return False, self.tr("Training from layers needs a before image, an after image and a polygon "
                                      "layer of the changed areas.")
            before = self.parameterAsRasterLayer(parameters, self.BEFORE, context)
            after = self.parameterAsRasterLayer(parameters, self.AFTER, context)
            pair_checks.check_distinct(before, after)
            pair_checks.check_overlap(raster_file(before, "before"), raster_file(after, "after"))
        elif self._has(parameters, self.AREA_OF_INTEREST):  # else dropped without a word, and recorded as used
            return False, self.tr("The area of interest applies only to training from layers; leave it empty with "
                                  "a folder of pairs.")
        if self._has(parameters, self.VALIDATION_FOLDER):  # else "data folder not found", after the burning
            validation = self.parameterAsFile(parameters, self.VALIDATION_FOLDER, context)
            if not Path(validation).is_dir():
                return False, self.tr("The folder of validation pairs {} does not exist.").format(validation)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if self._has(parameters, self.INIT_MODEL):
            init = self.parameterAsFile(parameters, self.INIT_MODEL, context)
            problem = pair_checks.model_file_problem(init)
            if problem:
                return False, problem
            core_module("training.options").check_not_the_initial_model(Path(out), Path(init))
        if not out.lower().endswith(".pt"):  # the dialog adds it; qgis_process and scripts do not
            return False, self.tr("The trained model's file name must end in .pt (got {}); detection and "
                                  "evaluation open only .pt model files.").format(Path(out).name)
        crop = self.parameterAsInt(parameters, self.CROP, context)
        if crop % 32:
            return False, self.tr("The crop size must be a multiple of 32 (e.g. {}); got {}.").format(
                max(32, crop // 32 * 32), crop)
        return True, ""

    # --- run ------------------------------------------------------------------------------------

    def prepareAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        """The raster and polygon layers of a pair given as layers, read in the main thread (see RasterInput)."""
        self.check_before_running(parameters, context)
        self._before = raster_input(self, parameters, self.BEFORE, context, "before")
        self._after = raster_input(self, parameters, self.AFTER, context, "after")
        self._polygons = self.feature_sources(parameters, (self.CHANGED_AREAS, self.AREA_OF_INTEREST), context)
        # The record of the run: the layers' sources, where the pair made from them names only the
        # run's temporary files; here, as it looks layers up in the project
        self._command_line = self.asPythonCommand(parameters, context)
        return True

    @processing_run
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        self.require_dependencies()
        training = core_module("training")
        # For a pair made from layers and the checkpoint, of no use after the run: Processing cannot resume
        with run_folder("deepcl_training_") as work:
            options = self._options(parameters, context, feedback, training, work)
            with self.engine_errors(), self.engine_warnings_to(feedback), self.replacements_said(feedback, options.out):
                try:
                    result = training.train(options, progress=progress_to(feedback), cancel=feedback.isCanceled)
                except core_module("errors").Cancelled:
                    raise QgsProcessingException("Training cancelled; no model file was written.") from None
        metrics = result.best_metrics
        if metrics:
            feedback.pushInfo(f"Validation of the model written (epoch {result.best_epoch}'s weights, at its "
                              f"thresholds): F1 {metrics.get('f1', 0):.4f}, IoU {metrics.get('iou', 0):.4f}")
        else:
            feedback.pushWarning("No validation pairs: the model is the last epoch's, with no measured accuracy.")
        feedback.pushInfo(self.threshold_text(result))
        feedback.pushInfo(f"Model written to {result.out} after {result.epochs_completed} epoch(s) "
                          f"in {result.seconds:.0f} s; trained on {len(result.train_pairs)} pair(s).")
        return {self.OUTPUT: str(result.out), self.BEST_EPOCH: result.best_epoch,
                **{key: metrics.get(key.lower()) for key in (self.F1, self.IOU, self.PRECISION, self.RECALL)}}

    @staticmethod
    def threshold_text(result: Any) -> str:
        """The model's thresholds and what each applies to (a class of pixel size without a scaling
        of its own keeps the network's score, as ModelBundle.platt_scaling_for says)."""
        scalings = dict(result.platt_scalings_by_pixel_size)

        def on(scaling: Any) -> str:
            return "the network's own score" if scaling is None or scaling.is_identity else "the calibrated confidence"

        parts = [f"{result.threshold:.3g} on {on(result.platt_scaling)}"] + [
            f"{threshold:.3g} on {on(scalings.get(size))} for pixels of {size:g} m or coarser"
            for size, threshold in result.thresholds_by_pixel_size]
        return "Decision threshold " + "; ".join(parts) + "."

    def _options(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback, training: Any, work: Path) -> Any:
        """The engine's options; ``work``: a folder of the run's own files, removed after it."""
        data_dirs, single_pair = self._data_dirs(parameters, context, feedback, work)
        validation = self.parameterAsFile(parameters, self.VALIDATION_FOLDER, context)
        has_init = self._has(parameters, self.INIT_MODEL)
        init = self.parameterAsFile(parameters, self.INIT_MODEL, context) if has_init else ""
        return training.TrainOptions(
            data_dirs=data_dirs, out=Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context)),
            init=Path(init) if init else None, epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            val_dirs=(Path(validation),) if validation else (),
            val_fraction=0.2 if not (single_pair or validation) and self._holds_out_some(data_dirs, training) else 0.0,
            device=self.choice(parameters, self.DEVICE, context) or "auto",
            crop=self.parameterAsInt(parameters, self.CROP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            iterations_per_epoch=self.parameterAsInt(parameters, self.ITERATIONS, context),
            overwrite=True,  # Processing asks before replacing the file; it has no --resume, so a run starts anew
            checkpoint=work / "training.ckpt", checkpoint_kept=False, command_line=self._command_line)

    def _holds_out_some(self, data_dirs: List[Path], training: Any) -> bool:
        """Whether a fifth held out per data set leaves a validation pair (a data set of one pair
        gives none); otherwise training goes without validation, as the help says."""
        with self.engine_errors():
            groups = [pair.group for pair in training.find_pairs(data_dirs)]
        return any(groups.count(group) > 1 for group in set(groups))

    def _data_dirs(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback, work: Path) -> Tuple[List[Path], bool]:
        """The folders to search for pairs, and whether they hold one pair made from layers (in
        ``work``, named after the before layer, as messages about the pair call it)."""
        if self._has(parameters, self.DATA_FOLDER):
            return [Path(self.parameterAsFile(parameters, self.DATA_FOLDER, context))], False
        before, after = self._before, self._after
        if before is None or after is None:
            raise QgsProcessingException("Training from layers needs a before and an after image.")
        folder = work / "layers" / (name_from(before.name).strip("._") or "pair")
        changed = self._polygons_of(parameters, self.CHANGED_AREAS, context, feedback, before.crs)
        aoi = (self._polygons_of(parameters, self.AREA_OF_INTEREST, context, feedback, before.crs)
               if self._polygons[self.AREA_OF_INTEREST] is not None else None)
        if changed:  # none is refused in words by write_pair_folder
            feedback.pushInfo(f"Rasterising {len(changed)} changed-area polygon(s) onto the before grid")
        write_pair_folder(before.source, after.source, changed, aoi, folder,
                          min_side=self.parameterAsInt(parameters, self.CROP, context))
        return [folder.parent], True

    def _polygons_of(self, parameters: Dict[str, Any], name: str, context: QgsProcessingContext,
                     feedback: QgsProcessingFeedback, crs: QgsCoordinateReferenceSystem) -> List[bytes]:
        """The polygons of parameter ``name`` as WKB in the before image's CRS ``crs``."""
        source = self._polygons[name]
        if source is None:
            raise QgsProcessingException(f"The polygon layer for {name} could not be read.")
        return self.polygons_wkb(source, crs, self.geometry_check(parameters, name, context), context, feedback)
