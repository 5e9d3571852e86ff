"""DeepCL change detection engine: numpy, GDAL and torch only (no Qt, no QGIS)."""

__version__ = "0.2.0"
