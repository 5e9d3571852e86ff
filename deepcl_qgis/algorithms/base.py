"""What every DeepCL algorithm shares: group, icon, the dependency check, turning engine errors
into Processing errors, and feeding engine progress into Processing feedback."""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeatureRequest, QgsGeometry, QgsProcessingAlgorithm,
                       QgsProcessingContext, QgsProcessingException, QgsProcessingFeatureSource,
                       QgsProcessingFeatureSourceDefinition, QgsProcessingFeedback,
                       QgsProcessingOutputLayerDefinition, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum, QgsProcessingParameterNumber,
                       QgsProcessingUtils, QgsProperty, QgsProviderRegistry, QgsRasterLayer)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..dependencies import dependency_problem
from ..engine import as_sentence, core_module, core_package, engine_errors_as, gdal_return_values
from ..paths import bundled_model_path, icon

# Detection's "Device used" on the first (or the current) CUDA device; the others have no choice here.
_CUDA_USED = re.compile(r"cuda(?::0)?(?: \(.*\))?")


class DeepCLAlgorithm(QgsProcessingAlgorithm):
    """Base class; subclasses define ``ICON`` and the usual Processing methods."""

    ICON = "deepcl"
    # The command line's options that this algorithm has as parameters ({"--crop": "CROP"}): the
    # engine's messages name them so, a Processing user knows them by their labels.
    COMMAND_LINE_OPTIONS: Dict[str, str] = {}

    def createInstance(self) -> "DeepCLAlgorithm":  # noqa: N802 (Qt API)
        return type(self)()

    def group(self) -> str:
        return self.tr("Change detection")

    @staticmethod
    def _has(parameters: Dict[str, Any], name: str) -> bool:
        """Whether the optional parameter ``name`` is set (the batch dialog gives an optional output
        left blank as a destination without a file)."""
        value = parameters.get(name)
        if isinstance(value, QgsProcessingOutputLayerDefinition) and \
                value.sink.propertyType() == QgsProperty.StaticProperty:
            value = value.sink.staticValue()
        return value not in (None, "")

    def feature_sources(self, parameters: Dict[str, Any], names: Tuple[str, ...],
                        context: QgsProcessingContext) -> Dict[str, Optional[QgsProcessingFeatureSource]]:
        """The polygon parameters ``names`` as feature sources (None when unset), for
        ``prepareAlgorithm``: a source is made from its layer, which belongs to the main thread (see
        :class:`RasterInput`); reading its features in ``processAlgorithm``'s thread is what sources are for."""
        return {name: self.parameterAsSource(parameters, name, context) if self._has(parameters, name) else None
                for name in names}

    @staticmethod
    def geometry_check(parameters: Dict[str, Any], name: str, context: QgsProcessingContext) -> int:
        """The invalid-geometry setting for polygon parameter ``name``: its own where the user set one
        (the input's advanced options in the dialog), else Processing's."""
        value = parameters.get(name)
        if (isinstance(value, QgsProcessingFeatureSourceDefinition)
                and value.flags & QgsProcessingFeatureSourceDefinition.FlagOverrideDefaultGeometryCheck):
            return value.geometryCheck
        return context.invalidGeometryCheck()

    @staticmethod
    def polygons_wkb(source: QgsProcessingFeatureSource, crs: QgsCoordinateReferenceSystem, check: int,
                     context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> List[bytes]:
        """The polygons of ``source`` as WKB in ``crs`` (as they are where it is not valid), with the
        invalid-geometry setting ``check`` (:meth:`geometry_check`) applied here, in words: QGIS's own
        check raises a C++ exception through the feature iterator, which left the Python interpreter
        broken ("SystemError: unknown opcode") when the loop ran in a generator."""
        request = QgsFeatureRequest().setNoAttributes()
        if crs.isValid():
            request.setDestinationCrs(crs, context.transformContext())
        polygons, skipped = [], 0
        for feature in source.getFeatures(request, QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks):
            if not feature.hasGeometry():
                continue
            geometry = feature.geometry()
            if check != QgsFeatureRequest.GeometryNoCheck and not geometry.isGeosValid():
                if check == QgsFeatureRequest.GeometrySkipInvalid:
                    skipped += 1
                    continue
                errors = geometry.validateGeometry(QgsGeometry.ValidatorGeos)
                raise QgsProcessingException(
                    f"Feature {feature.id()} of “{source.sourceName()}” has an invalid geometry"
                    f"{f' ({errors[0].what()})' if errors else ''}: repair it (Vector geometry ▸ Fix geometries), "
                    "or set Processing's “Invalid features filtering” to skip or not check such features.")
            polygons.append(bytes(geometry.asWkb()))
        if skipped:
            feedback.pushWarning(f"{skipped} feature(s) of “{source.sourceName()}” with an invalid geometry "
                                 "skipped, as Processing's “Invalid features filtering” asks.")
        return polygons

    def in_processing_words(self, text: str) -> str:
        """One of the engine's messages as a sentence, with the command line's option names replaced by
        the labels of the parameters, and those this algorithm has not (--lr) said to be the command line's."""
        missing: List[str] = []

        def label(match: "re.Match[str]") -> str:
            definition = self.parameterDefinition(self.COMMAND_LINE_OPTIONS.get(match.group(), ""))
            if definition is None and match.group() not in missing:
                missing.append(match.group())
            return f"“{definition.description()}”" if definition is not None else match.group()

        text = as_sentence(re.sub(r"(?<![\w/.-])--[a-z][a-z-]*", label, text))  # not inside a path: run--out/
        if missing:
            which = f"{missing[0]} is an option" if len(missing) == 1 else f"{', '.join(missing)} are options"
            text = f"{text.rstrip('.')} ({which} of the `deepcl` command line, not of this algorithm)."
        return text

    @contextmanager
    def engine_errors(self) -> Iterator[None]:
        """Show engine errors (missing band, bad model, cancelled …) as Processing errors, with the
        engine's own user-facing message in Processing's words and no traceback."""
        with engine_errors_as(lambda message: QgsProcessingException(self.in_processing_words(message))):
            yield

    @contextmanager
    def engine_warnings_to(self, feedback: QgsProcessingFeedback) -> Iterator[None]:
        """The engine's logged warnings (e.g. a training pair skipped for a missing label) in the
        Processing log, where a QGIS user looks, not only on QGIS's stderr."""
        handler = _WarningsTo(feedback, self.in_processing_words)
        logger = logging.getLogger(core_package())  # deepcl_qgis.deepcl_core in the plugin's zip
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)

    def push_warnings(self, feedback: QgsProcessingFeedback, warnings: List[str]) -> None:
        """A run's warnings (``DetectionResult.warnings``) in the Processing log."""
        for warning in warnings:
            feedback.pushWarning(self.in_processing_words(warning))

    @staticmethod
    @contextmanager
    def replacements_said(feedback: QgsProcessingFeedback, *paths: Optional[Path]) -> Iterator[None]:
        """Around a run writing ``paths``: each that existed before it and was replaced, said in the
        log. Processing writes over files without asking in batches (alike autofilled names)."""
        existed = [path for path in paths if path is not None and path.exists()]
        yield
        for path in existed:
            feedback.pushWarning(f"{path} existed and was replaced by this run's output.")

    def groupId(self) -> str:  # noqa: N802
        return "changedetection"

    def icon(self) -> QIcon:
        return icon(self.ICON)

    def helpUrl(self) -> str:  # noqa: N802
        return "https://github.com/deepcl-qgis/deepcl-qgis#readme"

    @staticmethod
    def tr(text: str) -> str:
        return QCoreApplication.translate("DeepCL", text)

    @gdal_return_values
    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        problem = dependency_problem()
        if problem:
            return False, problem
        parameters = self.choices_by_name(parameters)
        problem = (self._form_problem(parameters) or self._choice_problem(parameters)
                   or self.precheck(parameters, context) or self._range_problem(parameters)
                   or self._device_problem(parameters))
        if problem:  # before the generic checks, whose "Incorrect parameter value" says too little
            return False, problem
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            with self.engine_errors():
                return self.check_inputs(parameters, context)
        except QgsProcessingException as exc:
            return False, str(exc)

    def check_before_running(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> None:
        """The checks of :meth:`checkParameterValues`, for ``prepareAlgorithm``: QGIS makes them
        before the toolbox, ``processing.run`` and ``qgis_process`` run an algorithm, not before a
        batch row or a graphical model's step."""
        ok, message = self.checkParameterValues(parameters, context)
        if not ok:
            raise QgsProcessingException(message)

    def _choices(self) -> Iterator[QgsProcessingParameterEnum]:
        """The choices given by name (``usesStaticStrings``)."""
        return (definition for definition in self.parameterDefinitions()
                if isinstance(definition, QgsProcessingParameterEnum) and definition.usesStaticStrings())

    def choices_by_name(self, parameters: Dict[str, Any]) -> Dict[str, Any]:
        """``parameters`` with each choice given by its number given by its option's name: ``qgis_process
        help`` lists the options by number, and a graphical model's Enum input passes the number. A
        device given as detection's "Device used" says ("cuda:0 (NVIDIA H200)"), as a graphical model
        passes one step's device on to the next, is the device it names."""
        named = dict(parameters)
        for definition in self._choices():
            value = named.get(definition.name())
            number = value if isinstance(value, int) and not isinstance(value, bool) else \
                int(value) if isinstance(value, str) and value.isdigit() else None
            if number is not None and number < len(definition.options()):
                named[definition.name()] = definition.options()[number]
            elif isinstance(value, str) and _CUDA_USED.fullmatch(value) and "cuda" in definition.options():
                named[definition.name()] = "cuda"
        return named

    def choice(self, parameters: Dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The name of the option chosen for ``name``, given by name or by number."""
        return self.parameterAsEnumString(self.choices_by_name(parameters), name, context)

    def _form_problem(self, parameters: Dict[str, Any]) -> str:
        """A parameter given more than once (qgis_process makes a list of a repeated KEY=, which QGIS
        reads as empty or 0: a repeated MODEL= ran the bundled model), or a yes-or-no value other than
        true, false, 1 or 0 (QGIS reads any other text, "no" too, as yes)."""
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if isinstance(value, list) and not _takes_several(definition):
                return f"“{definition.description()}” is given {len(value)} times; give it once."
            if isinstance(definition, QgsProcessingParameterBoolean) and isinstance(value, str) and \
                    value.strip().lower() not in ("true", "false", "1", "0"):
                return f"“{definition.description()}” is true or false (or 1 or 0); got “{value}”."
        return ""

    def _choice_problem(self, parameters: Dict[str, Any]) -> str:
        """A choice given as neither one of its names nor one of their numbers."""
        for definition in self._choices():
            value = parameters.get(definition.name())
            if value not in (None, "") and str(value) not in definition.options():
                options = definition.options()
                return (f"{definition.description()} is one of {', '.join(options)} (or their numbers, 0 to "
                        f"{len(options) - 1}); got {value}.")
        return ""

    def _range_problem(self, parameters: Dict[str, Any]) -> str:
        """A number outside its parameter's range, in words (Processing says "Incorrect parameter value"),
        or with decimals where a whole number is asked for (Processing rounded 1.5 to 2 silently)."""
        for definition in self.parameterDefinitions():
            if not isinstance(definition, QgsProcessingParameterNumber):
                continue
            try:
                value = float(parameters.get(definition.name()))
            except (TypeError, ValueError):  # unset, an expression, or not a number (precheck's)
                continue
            if not definition.minimum() <= value <= definition.maximum():
                low, high = _bounds(definition)
                words = (f"between {low:g} and {high:g}" if low is not None and high is not None
                         else f"at least {low:g}" if low is not None else f"at most {high:g}")
                return f"{definition.description()} must be {words}; got {value:g}."
            if definition.dataType() == QgsProcessingParameterNumber.Integer and not value.is_integer():
                return f"{definition.description()} must be a whole number; got {value:g}."
        return ""

    def _device_problem(self, parameters: Dict[str, Any]) -> str:
        """A device this machine has not (CUDA with a CPU-only PyTorch), said before the run starts:
        a batch or a model found it at its step's start."""
        device = parameters.get("DEVICE")
        if self.parameterDefinition("DEVICE") is None or device in (None, ""):
            return ""
        try:
            with engine_errors_as(QgsProcessingException):
                core_module("device").resolve_device(str(device))
        except QgsProcessingException as exc:
            return str(exc)
        return ""

    def precheck(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
        """A problem to report before Processing's generic parameter checks, or ''."""
        return ""

    def check_inputs(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Tuple[bool, str]:
        """Algorithm-specific checks, in words a GIS user understands."""
        return True, ""

    def model_path(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
        """The MODEL parameter's file, or the bundled model when it is left empty."""
        return self.parameterAsFile(parameters, "MODEL", context) or str(bundled_model_path())

    @staticmethod
    def require_dependencies() -> None:
        problem = dependency_problem()
        if problem:
            raise QgsProcessingException(problem)


def add_help(parameter: QgsProcessingParameterDefinition, help_text: str,
             advanced: bool = False) -> QgsProcessingParameterDefinition:
    """Per-parameter help (tooltip in the dialog, text in ``qgis_process help``), with the default,
    range and choices, which ``qgis_process help`` 3.22 does not print."""
    facts = " ".join(_parameter_facts(parameter))
    parameter.setHelp(f"{help_text} {facts}" if facts else help_text)
    if advanced:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


def _parameter_facts(parameter: QgsProcessingParameterDefinition) -> Iterator[str]:
    if isinstance(parameter, QgsProcessingParameterEnum):
        options = parameter.options()
        yield f"One of {', '.join(options)} (or their numbers, 0 to {len(options) - 1})."
    if isinstance(parameter, QgsProcessingParameterNumber):
        low, high = _bounds(parameter)
        if low is not None and high is not None:
            yield f"From {low:g} to {high:g}."
        elif low is not None:
            yield f"At least {low:g}."
        elif high is not None:
            yield f"At most {high:g}."
    default = parameter.defaultValue()
    if default not in (None, "") and not parameter.isDestination():
        yield f"Default: {default:g}." if isinstance(default, float) else f"Default: {default}."
    elif parameter.flags() & QgsProcessingParameterDefinition.FlagOptional and not parameter.isDestination():
        yield "Optional."


def _bounds(parameter: QgsProcessingParameterNumber) -> Tuple[Optional[float], Optional[float]]:
    """The parameter's minimum and maximum, None for an open end (Processing's are ±DBL_MAX)."""
    low, high = parameter.minimum(), parameter.maximum()
    return (low if low > -1e300 else None), (high if high < 1e300 else None)


def processing_run(process_algorithm: Callable) -> Callable:
    """For every ``processAlgorithm``: GDAL's return values while it runs (a host may have turned its
    exceptions on), the datasets its traceback's frames hold let go on error (Processing keeps the
    exception: the engine's ``releases_locals_on_error``), and SIGTERM under ``qgis_process`` taken
    as Cancel (:func:`_cancelled_by_sigterm`)."""
    releases_locals_on_error = core_module("errors").releases_locals_on_error
    return _cancelled_by_sigterm(releases_locals_on_error(gdal_return_values(process_algorithm)))


@contextmanager
def run_folder(prefix: str) -> Iterator[Path]:
    """A folder of the run's own in QGIS's temporary folder, for files of no use after it (left,
    they stay until QGIS exits), removed however the run ends. On an error the traceback's frames
    let go of their datasets first: Windows deletes no file GDAL holds open."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=QgsProcessingUtils.tempFolder()))
    try:
        yield work
    except BaseException as error:
        core_module("errors").release_locals(error)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cancelled_by_sigterm(process_algorithm: Callable) -> Callable:
    """``qgis_process`` runs an algorithm in its main thread, where SIGTERM
    (kill, a job scheduler, a container stopping) ended the process at once and left the run's
    hidden partial outputs. It now cancels the run as the Cancel button does, and once the run has
    cleaned up, the process ends as the signal asked. QGIS itself runs algorithms in a task's
    thread, and a handler set outside Python (which could not be restored) is left alone."""
    @functools.wraps(process_algorithm)
    def wrapper(self: QgsProcessingAlgorithm, parameters: Dict[str, Any], context: QgsProcessingContext,
                feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
            return process_algorithm(self, parameters, context, feedback)
        received = []

        def cancel(signum: int, _frame: Any) -> None:
            received.append(signum)
            feedback.cancel()

        signal.signal(signal.SIGTERM, cancel)
        try:
            return process_algorithm(self, parameters, context, feedback)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if received:
                os.kill(os.getpid(), signal.SIGTERM)
    return wrapper


def _takes_several(definition: QgsProcessingParameterDefinition) -> bool:
    """Whether a parameter's value may be a list: several layers, bands or choices, a matrix, a range."""
    allows = getattr(definition, "allowMultiple", None)
    return definition.type() in ("multilayer", "matrix", "range") or bool(allows and allows())


class _WarningsTo(logging.Handler):
    """The warnings logged in this thread: another run's, in another thread, are not this run's."""

    def __init__(self, feedback: QgsProcessingFeedback, words: Callable[[str], str]) -> None:
        super().__init__(logging.WARNING)
        self.feedback, self.words = feedback, words
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.feedback.pushWarning(self.words(record.getMessage()))


def progress_to(feedback: QgsProcessingFeedback, start: float = 0.0,
                span: float = 100.0) -> Callable[[float, str], None]:
    """An engine progress callable mapping its 0–1 fraction onto ``start``…``start+span`` %."""
    def report(fraction: float, message: str) -> None:
        feedback.setProgress(start + span * max(0.0, min(1.0, fraction)))
        if message:
            feedback.setProgressText(message)
    return report


@dataclass(frozen=True)
class RasterInput:
    """What a run needs of a raster layer, read in ``prepareAlgorithm``: that runs in the main
    thread, which owns the project and its layers, while ``processAlgorithm`` runs in a background
    thread beside the map canvas (reading the layers there crashed QGIS now and then)."""

    source: str  # the name GDAL opens (raster_file)
    name: str
    crs: QgsCoordinateReferenceSystem


def raster_input(algorithm: QgsProcessingAlgorithm, parameters: Dict[str, Any], name: str,
                 context: QgsProcessingContext, role: str) -> Optional[RasterInput]:
    """The layer of parameter ``name`` as a :class:`RasterInput`; None when none is given."""
    layer = algorithm.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        return None
    return RasterInput(raster_file(layer, role), layer.name(), QgsCoordinateReferenceSystem(layer.crs()))


def raster_file(layer: Optional[QgsRasterLayer], role: str) -> str:
    """The name GDAL opens for a raster layer: its file, or its /vsizip/… path, GPKG table or
    subdataset, as QGIS's GDAL provider opens it (less the open options QGIS keeps in the source);
    other providers (WMS, …) cannot be read by the engine."""
    if layer is None:
        raise QgsProcessingException(f"No {role} raster layer was given.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {role} layer '{layer.name()}' is not a file GDAL can read (provider "
            f"'{layer.providerType()}'); save it as a GeoTIFF (Export ▸ Save As…) and use that.")
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    parts.pop("openOptions", None)
    return QgsProviderRegistry.instance().encodeUri("gdal", parts) or layer.source()


def typed_number_problem(value: Any, label: str) -> str:
    """Why a number as typed (``qgis_process``, a script) is not one, or ''. QGIS 3.22 lets an
    optional number it cannot read through its checks, and the run then gets 0 for it."""
    if not isinstance(value, str) or not value.strip():
        return ""
    try:
        float(value)
        return ""
    except ValueError:
        return f"{label} '{value}' is not a number; write decimals with a point (e.g. 0.5)."


def typed_bands_problem(value: Any, label: str) -> str:
    """Why a list of bands as typed is not one Processing reads, or '': it splits on ';' only, so
    '3,2,1' became band 0."""
    if isinstance(value, str) and re.search(r"[,\s]", value.strip()):
        return f"{label}: separate band numbers with ';' (e.g. 3;2;1); got '{value}'."
    return ""


def optional_number(algorithm: QgsProcessingAlgorithm, parameters: Dict[str, Any], name: str,
                    context: QgsProcessingContext) -> Optional[float]:
    """The number, or None when an optional number parameter is left unset."""
    if parameters.get(name) in (None, ""):
        return None
    return algorithm.parameterAsDouble(parameters, name, context)
