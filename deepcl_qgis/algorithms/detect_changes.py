"""deepcl:detectchanges: change between a before and an after raster layer, as Processing."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeatureRequest, QgsProcessing, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBand,
                       QgsProcessingParameterBoolean, QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorDestination,
                       QgsProcessingUtils, QgsRasterLayer, QgsVectorFileWriter)

from .. import pair_checks
from ..threshold_scale import THRESHOLDS
from ..engine import core_module
from ..layer_styling import attach_post_processors, pair_names, run_group_name
from .base import (DeepCLAlgorithm, add_help, optional_number, processing_run, progress_to, raster_file,
                   raster_input, typed_bands_problem, typed_number_problem)


Bounds = Tuple[float, float, float, float]  # x min, y min, x max, y max, as the engine takes an extent


class DetectChangesAlgorithm(DeepCLAlgorithm):
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    BANDS_BEFORE = "BANDS_BEFORE"
    BANDS_AFTER = "BANDS_AFTER"
    MODEL = "MODEL"
    THRESHOLD = "THRESHOLD"
    DEVICE = "DEVICE"
    EXTENT = "EXTENT"
    MASK = "MASK"
    TILE_SIZE = "TILE_SIZE"
    INPUT_SCALE = "INPUT_SCALE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    MIN_AREA = "MIN_AREA"
    CHANGE = "CHANGE"
    CONFIDENCE = "CONFIDENCE"
    DISTANCE = "DISTANCE"
    POLYGONS = "POLYGONS"
    CHANGED_AREA_M2 = "CHANGED_AREA_M2"
    CHANGED_PERCENT = "CHANGED_PERCENT"
    CHANGED_PIXELS = "CHANGED_PIXELS"
    VALID_PIXELS = "VALID_PIXELS"
    POLYGON_COUNT = "POLYGON_COUNT"
    DEVICE_USED = "DEVICE_USED"
    INPUT_SCALE_USED = "INPUT_SCALE_USED"
    THRESHOLD_USED = "THRESHOLD_USED"

    DEVICES = ["auto", "cpu", "cuda", "mps"]
    PRECISION = "PRECISION"
    PRECISIONS = ["auto", "fp32", "bf16"]
    COMPRESSION = "COMPRESSION"
    OVERVIEWS = "OVERVIEWS"
    ICON = "detect"
    COMMAND_LINE_OPTIONS = {
        "--device": DEVICE, "--model": MODEL, "--threshold": THRESHOLD, "--tile": TILE_SIZE, "--overlap": OVERLAP,
        "--batch": BATCH_SIZE, "--input-scale": INPUT_SCALE, "--precision": PRECISION, "--compression": COMPRESSION,
        "--overviews": OVERVIEWS, "--min-area": MIN_AREA, "--extent": EXTENT, "--mask": MASK,
        "--bands-before": BANDS_BEFORE, "--bands-after": BANDS_AFTER, "--change": CHANGE, "--confidence": CONFIDENCE,
        "--distance": DISTANCE, "--polygons": POLYGONS}

    def name(self) -> str:
        return "detectchanges"

    def displayName(self) -> str:  # noqa: N802 (Qt API)
        return self.tr("Detect changes")

    def tags(self) -> List[str]:
        return self.tr("change,detection,deep learning,deepcl,before,after,bitemporal,urban,damage,"
                       "deforestation,siamese,torch").split(",")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Finds what changed between a <b>before</b> and an <b>after</b> image of the same place with the "
            "DeepCL network, on the GPU when there is one, else on the CPU.<br><br>"
            "Outputs, on the before image's grid: <b>Change</b> (1 changed, 0 unchanged, nodata where either "
            "image has no data), <b>Confidence</b> (the probability of change 0–1, as the model's "
            "calibration on its validation pairs estimates it; the network's own score for uncalibrated models) "
            "and, on request, the network's <b>Distance</b> map and change <b>Polygons</b> "
            "(GeoPackage) with their area. The after image is reprojected onto the before grid on the fly.<br><br>"
            "The changed area (m² and percent of the area both images cover) is returned as outputs that "
            "graphical models can use. An optional processing extent or mask layer limits the work to an "
            "area of interest. Sentinel-2 products: give each one's 10 m bands (or true-colour image) "
            "layer; the part of a tile the swath does not reach is nodata, and so are a Level-2A product's "
            "clouds, cloud shadows and cirrus (its scene classification). Needs PyTorch.")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802
        for parameter, help_text, advanced in self._input_parameters() + self._output_parameters():
            self.addParameter(add_help(parameter, help_text, advanced))
        self._add_result_outputs()

    def _input_parameters(self) -> List[Tuple[Any, str, bool]]:
        # The engine's output formats and tiles (importing them needs no torch)
        outputs, tiling = core_module("outputs"), core_module("tiling")
        return [
            (QgsProcessingParameterRasterLayer(self.BEFORE, self.tr("Before image")),
             self.tr("The image taken before the change; outputs are written on its grid and CRS."), False),
            (QgsProcessingParameterRasterLayer(self.AFTER, self.tr("After image")),
             self.tr("The image taken after the change; reprojected onto the before grid if needed."), False),
            (QgsProcessingParameterBand(self.BANDS_BEFORE, self.tr("Bands of the before image"), None,
                                        self.BEFORE, optional=True, allowMultiple=True),
             self.tr("The bands the model reads, in the model's order (e.g. red, green, blue). "
                     "Empty: found from the band names (Sentinel-2's B4, B3, B2 too), else the first bands, "
                     "unless the names rule the model's bands out; a one-band paletted image gives its "
                     "colours (red, green, blue). In qgis_process: BANDS_BEFORE=1;2;3."), False),
            (QgsProcessingParameterBand(self.BANDS_AFTER, self.tr("Bands of the after image"), None,
                                        self.AFTER, optional=True, allowMultiple=True),
             self.tr("The same bands, in the same order, for the after image."), False),
            # Optional, so that scripts and qgis_process may leave it out: empty means the bundled model.
            # No default: the modeler saves a step's defaults in the .model3, where the bundled model's
            # path (in this user's profile) would name a file no other machine has.
            (QgsProcessingParameterFile(self.MODEL, self.tr("Model file"), extension="pt", optional=True),
             self.tr("A DeepCL model file (.pt). Empty: the model bundled with the plugin."), False),
            (QgsProcessingParameterNumber(self.THRESHOLD, self.tr("Change threshold"),
                                          QgsProcessingParameterNumber.Double, None, True,
                                          THRESHOLDS[0], THRESHOLDS[-1]),
             self.tr("Confidence from which a pixel counts as changed. Empty: the model's own threshold for the "
                     "before image's pixel size (models calibrated on Sentinel-2 pairs have one for 10 m imagery). "
                     "Lower finds more change (and more false alarms)."), False),
            (QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), self.DEVICES, defaultValue="auto",
                                        usesStaticStrings=True),
             self.tr("auto: an NVIDIA GPU (cuda) or Apple GPU (mps) when available, else the CPU."), False),
            (QgsProcessingParameterExtent(self.EXTENT, self.tr("Processing extent"), optional=True),
             self.tr("Only detect change inside this extent. Empty: the whole before image."), False),
            (QgsProcessingParameterFeatureSource(self.MASK, self.tr("Mask (area of interest polygons)"),
                                                 [QgsProcessing.TypeVectorPolygon], optional=True),
             self.tr("Only detect change inside these polygons; outside them the outputs are nodata and "
                     "nothing counts in the changed area. Needs georeferenced images."), False),
            (QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size (pixels)"),
                                          QgsProcessingParameterNumber.Integer, tiling.DEFAULT_TILE, False, 32, 4096),
             self.tr("The network works on tiles of this size (a multiple of 32). Smaller tiles use less "
                     "memory but give the network less context near their edges, so maps of other tile sizes "
                     "differ near the tiles' edges, most near the threshold."), True),
            (QgsProcessingParameterNumber(self.INPUT_SCALE, self.tr("Enlargement for the network"),
                                          QgsProcessingParameterNumber.Integer, 0, False, 0, 4),
             self.tr("How many times larger the network sees the images (1–4), so that small objects of "
                     "coarse imagery span more of its pixels; 2 costs 4× the time. 0: the model's choice for the "
                     "before image's pixel size, set when it was calibrated, together with its threshold and "
                     "confidence scaling: another enlargement shifts the scores they read."), True),
            (QgsProcessingParameterNumber(self.OVERLAP, self.tr("Tile overlap (pixels)"),
                                          QgsProcessingParameterNumber.Integer, tiling.DEFAULT_OVERLAP, False, 0,
                                          2047),
             self.tr("Overlap between neighbouring tiles, blended to hide seams; under half the tile size."), True),
            (QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size (tiles)"),
                                          QgsProcessingParameterNumber.Integer, 0, False, 0, 256),
             self.tr("Tiles the network processes at once. 0: the device's default (1 on the CPU, 8 on "
                     "CUDA, 4 on MPS); when the GPU runs out of memory the batch is lowered by itself."), True),
            # Figures: the time, 32.1 s (docs/benchmarks_bf16.md) against 44.8 s in fp32 (docs/benchmarks.md as
            # committed in 6eba60c); the pixels, `python -m benchmarks.precision --precision bf16 PAIRS`.
            (QgsProcessingParameterEnum(self.PRECISION, self.tr("Precision"), self.PRECISIONS, defaultValue="auto",
                                        usesStaticStrings=True),
             self.tr("auto: fp16 on NVIDIA GPUs, fp32 elsewhere. fp32: full precision everywhere. bf16: "
                     "about 30 % less time end to end on CPUs with bf16 instructions (AMX, AVX512-BF16; an "
                     "8,192² pair took 32.1 s against 44.8 s in fp32 on a 2-core Intel Xeon), but about 0.9 % "
                     "of pixels may change class."), True),
            (QgsProcessingParameterEnum(self.COMPRESSION, self.tr("Output compression"), list(outputs.COMPRESSIONS),
                                        defaultValue=outputs.DEFAULT_COMPRESSION, usesStaticStrings=True),
             self.tr("Of the output GeoTIFFs. zstd: fast; read by GDAL 2.3 and later (QGIS 3.4 and later). "
                     "deflate: a little slower to write, read by older software too."), True),
            # Figures: `python -m benchmarks.overviews --size 8192 --rounds 1` (2 CPU cores, 38.5 s run).
            (QgsProcessingParameterBoolean(self.OVERVIEWS, self.tr("Build overviews (pyramids)"), defaultValue=True),
             self.tr("Overviews inside the output maps, so that QGIS draws a large map quickly at any zoom; they "
                     "add about a third to the files' size, and to an 8,192² run about 1.4 s on two CPU cores."),
             True),
            (QgsProcessingParameterNumber(self.MIN_AREA, self.tr("Minimum polygon area (m²)"),
                                          QgsProcessingParameterNumber.Double, 0.0, False, 0.0),
             self.tr("Change polygons smaller than this are dropped (in pixels for images without "
                     "georeference)."), False),
        ]

    def _output_parameters(self) -> List[Tuple[Any, str, bool]]:
        return [
            (QgsProcessingParameterRasterDestination(self.CHANGE, self.tr("Change")),
             self.tr("GeoTIFF: 1 changed, 0 unchanged, 255 nodata."), False),
            (QgsProcessingParameterRasterDestination(self.CONFIDENCE, self.tr("Confidence")),
             self.tr("GeoTIFF: the probability of change 0–1 (the network's own score for an uncalibrated model), "
                     "-1 nodata."), False),
            (QgsProcessingParameterRasterDestination(self.DISTANCE, self.tr("Distance map"), optional=True,
                                                     createByDefault=False),
             self.tr("GeoTIFF: the network's feature distance between the dates (0–2); optional."), False),
            (QgsProcessingParameterVectorDestination(self.POLYGONS, self.tr("Change polygons"),
                                                     QgsProcessing.TypeVectorPolygon, optional=True,
                                                     createByDefault=False),
             self.tr("GeoPackage of the changed areas with their area (m²) and mean confidence; optional."), False),
        ]

    def _add_result_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_AREA_M2, self.tr("Changed area (m²)")))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_PERCENT, self.tr("Changed pixels (% of valid pixels)")))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_PIXELS, self.tr("Changed pixels")))
        self.addOutput(QgsProcessingOutputNumber(self.VALID_PIXELS, self.tr("Valid pixels")))
        self.addOutput(QgsProcessingOutputNumber(self.POLYGON_COUNT,
                                                 self.tr("Number of change polygons (when the polygons are written)")))
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, self.tr("Device used")))
        self.addOutput(QgsProcessingOutputNumber(self.INPUT_SCALE_USED, self.tr("Enlargement used for the network")))
        self.addOutput(QgsProcessingOutputNumber(self.THRESHOLD_USED, self.tr("Change threshold used")))

    # --- checks -------------------------------------------------------------------------------

    def precheck(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
        for name, role in ((self.BEFORE, "before"), (self.AFTER, "after")):
            problem = (pair_checks.raster_source_problem(parameters.get(name), role)
                       or typed_bands_problem(parameters.get(f"BANDS_{role.upper()}"), f"Bands of the {role} image"))
            if problem:
                return problem
        return (typed_number_problem(parameters.get(self.THRESHOLD), "Change threshold")
                or pair_checks.model_file_problem(self.model_path(parameters, context)))

    def check_inputs(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Tuple[bool, str]:
        before = self.parameterAsRasterLayer(parameters, self.BEFORE, context)
        after = self.parameterAsRasterLayer(parameters, self.AFTER, context)
        bands_before = self.parameterAsInts(parameters, self.BANDS_BEFORE, context)
        bands_after = self.parameterAsInts(parameters, self.BANDS_AFTER, context)
        pair_checks.check_distinct(before, after)
        pair_checks.check_overlap(raster_file(before, "before"), raster_file(after, "after"))
        pair_checks.check_bands(before, bands_before, "before")
        pair_checks.check_bands(after, bands_after, "after")
        pair_checks.check_band_counts(bands_before, bands_after)
        model = self.model_path(parameters, context)
        pair_checks.check_model(model, before, bands_before, "before")
        pair_checks.check_model(model, after, bands_after, "after")
        self._check_area_of_interest(parameters, context, before)
        self._check_output_names(parameters, context)
        self._options(parameters, context, core_module("detect")).validate()  # tile and overlap together, …
        return True, ""

    def _check_area_of_interest(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                                before: QgsRasterLayer) -> None:
        """The engine's check that the extent, and the mask layer's extent, cover part of the before image."""
        if self._has(parameters, self.MASK) and not before.crs().isValid():
            raise QgsProcessingException("A mask layer needs georeferenced images; use a processing extent "
                                         "instead, or georeference the images first.")
        area = self._area_of_interest(parameters, context, before)
        if area is not None:
            from osgeo import gdal  # only needed with an area of interest

            dataset = gdal.Open(raster_file(before, "before"))
            if dataset is not None:  # else the run says why GDAL cannot read it
                core_module("area_of_interest").pixel_window(dataset, area)

    def _check_output_names(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> None:
        """Before the run, the engine's check that each file name ends as its format does (Processing
        lets any raster or vector ending be typed in). Asked of a scratch context: asking for an
        output layer queues it for loading, and a temporary output gets a new name each time, so the
        run's context would wait for files that are never written ("not correctly generated")."""
        scratch = QgsProcessingContext()
        scratch.copyThreadSafeSettings(context)
        outputs = self._outputs(parameters, scratch)
        if outputs.polygons is not None and str(outputs.polygons).startswith("ogr:"):  # a table URI, typed in
            raise QgsProcessingException("The change polygons are written to a GeoPackage file of their own: "
                                         "give a .gpkg file name, not a table of an existing database.")
        outputs.check_names()

    # --- run ------------------------------------------------------------------------------------

    def prepareAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        """What the run needs of the layers, read here, in the main thread: processAlgorithm runs in
        a background thread, and the project and its layers belong to the main thread."""
        self.check_before_running(parameters, context)
        before = raster_input(self, parameters, self.BEFORE, context, "before")
        after = raster_input(self, parameters, self.AFTER, context, "after")
        if before is None or after is None:
            raise QgsProcessingException("Give a before and an after raster layer.")
        self._before, self._after = before, after
        self._extent = self._extent_in(parameters, context, before.crs)
        # A mask of a project layer's selected features is written to a file from the layer: here too
        # (from the background thread it crashed QGIS while the map canvas refreshed).
        self._mask = self._mask_file(parameters, context, feedback) if self._has(parameters, self.MASK) else ("", "")
        return True

    def _mask_file(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> Tuple[str, str]:
        """The mask's file and layer for the engine, which reads files: the layer's own, or a copy
        Processing writes (its selected features, another format); a copy of the polygons as QGIS shows
        them when the layer has unsaved edits, which its file lacks (the run used the file's)."""
        layer = self.parameterAsVectorLayer(parameters, self.MASK, context)
        if layer is None or not layer.isModified():
            return self.parameterAsCompatibleSourceLayerPathAndLayerName(parameters, self.MASK, context,
                                                                        ["gpkg", "shp"], "gpkg", feedback)
        source = self.parameterAsSource(parameters, self.MASK, context)  # with the edits, and the selection
        path = QgsProcessingUtils.generateTempFilename("mask_with_unsaved_edits.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        writer = QgsVectorFileWriter.create(path, source.fields(), source.wkbType(), source.sourceCrs(),
                                            context.transformContext(), options)
        # As the layer's file would be read: invalid polygons are GDAL's to rasterise, not Processing's to check
        request = QgsFeatureRequest().setInvalidGeometryCheck(QgsFeatureRequest.GeometryNoCheck)
        if writer.hasError() or not writer.addFeatures(list(source.getFeatures(request))):
            raise QgsProcessingException(f"The polygons of the mask layer {layer.name()} with its unsaved edits "
                                         f"could not be written for the run: {writer.errorMessage()}")
        del writer  # closing writes the file
        return path, ""

    @processing_run
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        self.require_dependencies()
        detect = core_module("detect")
        outputs = self._outputs(parameters, context)
        with self.engine_errors(), self.replacements_said(feedback, *outputs.rasters(), outputs.polygons):
            options = self._options(parameters, context, detect)
            options.area = self._engine_area()
            result = detect.detect_changes(self._before.source, self._after.source, outputs, options,
                                           progress=progress_to(feedback), cancel=feedback.isCanceled)
        self._report(result, feedback)
        if result.changed_area_m2 is None:  # the files hold no CRS (with one in either, both must)
            for raster in (self._before, self._after):
                warning = pair_checks.assigned_crs_warning(raster.crs, raster.name)
                if warning:
                    feedback.pushWarning(warning)
        self._style_outputs(context, outputs, run_group_name(pair_names(self._before.name, self._after.name,
                                                                        self._before.source, self._after.source)))
        return self._results(outputs, result)

    def _options(self, parameters: Dict[str, Any], context: QgsProcessingContext, detect: Any) -> Any:
        return detect.DetectOptions(
            model=Path(self.model_path(parameters, context)),
            bands_before=self.parameterAsInts(parameters, self.BANDS_BEFORE, context) or None,
            bands_after=self.parameterAsInts(parameters, self.BANDS_AFTER, context) or None,
            threshold=optional_number(self, parameters, self.THRESHOLD, context),
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            input_scale=self.parameterAsInt(parameters, self.INPUT_SCALE, context) or None,
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None,
            device=self.choice(parameters, self.DEVICE, context) or "auto",
            precision=self.choice(parameters, self.PRECISION, context) or "auto",
            compression=self.choice(parameters, self.COMPRESSION, context) or detect.DEFAULT_COMPRESSION,
            overviews=self.parameterAsBoolean(parameters, self.OVERVIEWS, context),
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            overwrite=True)  # Processing asks before overwriting; the engine still never leaves partial files

    def _engine_area(self) -> Optional[Any]:
        """The engine's AreaOfInterest: the extent (in the before layer's CRS) and the mask as a file
        GDAL reads (Processing writes one for a memory layer or selected features), as prepared."""
        mask, mask_layer = self._mask
        if self._extent is None and not mask:
            return None
        return core_module("area_of_interest").AreaOfInterest(self._extent, mask or None, mask_layer or None)

    def _area_of_interest(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                          before: QgsRasterLayer) -> Optional[Bounds]:
        """The box of the extent and the mask layer's extent together, in the before layer's CRS."""
        area = self._extent_in(parameters, context, before.crs())
        if self._has(parameters, self.MASK):
            mask = _bounds(self._mask_extent(parameters, context, before))
            area = mask if area is None else core_module("area_of_interest").intersection(area, mask)
        return area

    def _extent_in(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                   crs: QgsCoordinateReferenceSystem) -> Optional[Bounds]:
        """The processing extent in ``crs`` (the before layer's), or None when unset."""
        if not self._has(parameters, self.EXTENT):
            return None
        return _bounds(self.parameterAsExtent(parameters, self.EXTENT, context, crs))

    def _mask_extent(self, parameters: Dict[str, Any], context: QgsProcessingContext, before: QgsRasterLayer) -> Any:
        source = self.parameterAsSource(parameters, self.MASK, context)
        if source is None:
            raise QgsProcessingException("The mask layer could not be read.")
        if source.sourceExtent().isNull():  # no feature, or none with a geometry: its extent is infinite
            raise QgsProcessingException(f"The mask layer {source.sourceName()} holds no polygon; draw the area to "
                                         "detect inside, or choose another layer.")
        from qgis.core import QgsCoordinateTransform  # only needed with a mask
        transform = QgsCoordinateTransform(source.sourceCrs(), before.crs(), context.transformContext())
        return transform.transformBoundingBox(source.sourceExtent())

    def _outputs(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Any:
        """The engine's DetectOutputs for the destinations chosen."""
        return core_module("detect").DetectOutputs(
            change=Path(self.parameterAsOutputLayer(parameters, self.CHANGE, context)),
            confidence=Path(self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context)),
            distance=self._optional_path(parameters, self.DISTANCE, context),
            polygons=self._optional_path(parameters, self.POLYGONS, context))

    def _optional_path(self, parameters: Dict[str, Any], name: str, context: QgsProcessingContext) -> Optional[Path]:
        path = self.parameterAsOutputLayer(parameters, name, context) if self._has(parameters, name) else ""
        return Path(path) if path else None

    def _report(self, result: Any, feedback: QgsProcessingFeedback) -> None:
        self.push_warnings(feedback, result.warnings)
        area = (f"{result.changed_area_m2:,.0f} m²" if result.changed_area_m2 is not None
                else "area unknown (images not georeferenced)")
        feedback.pushInfo(f"Changed: {result.changed_pixels} of {result.valid_pixels} valid pixels "
                          f"({result.changed_percent:.2f} %), {area}; threshold {result.threshold:g}, "
                          f"images enlarged {result.input_scale}× for the network, "
                          f"{result.tiles} tile{'' if result.tiles == 1 else 's'} on {result.device} "
                          f"({result.precision}) in {result.seconds:.1f} s")

    def _style_outputs(self, context: QgsProcessingContext, outputs: Any, group: str) -> None:
        layers = ((self.CHANGE, outputs.change, "change", "Change"),
                  (self.CONFIDENCE, outputs.confidence, "confidence", "Confidence"),
                  (self.DISTANCE, outputs.distance, "distance", "Distance"),
                  (self.POLYGONS, outputs.polygons, "polygons", "Change polygons"))
        loaded = {str(path): (style, name, self.parameterDefinition(parameter).description())
                  for parameter, path, style, name in layers if path is not None}
        attach_post_processors(context, loaded, group)

    def _results(self, outputs: Any, result: Any) -> Dict[str, Any]:
        return {
            self.CHANGE: str(outputs.change), self.CONFIDENCE: str(outputs.confidence),
            self.DISTANCE: str(outputs.distance) if outputs.distance else None,
            self.POLYGONS: str(outputs.polygons) if outputs.polygons else None,
            self.CHANGED_AREA_M2: result.changed_area_m2, self.CHANGED_PERCENT: result.changed_percent,
            self.CHANGED_PIXELS: result.changed_pixels, self.VALID_PIXELS: result.valid_pixels,
            self.POLYGON_COUNT: result.polygons, self.DEVICE_USED: result.device,
            self.INPUT_SCALE_USED: result.input_scale, self.THRESHOLD_USED: result.threshold,
        }


def _bounds(rectangle: Any) -> Bounds:
    """A QgsRectangle as the engine's (x min, y min, x max, y max)."""
    return rectangle.xMinimum(), rectangle.yMinimum(), rectangle.xMaximum(), rectangle.yMaximum()
