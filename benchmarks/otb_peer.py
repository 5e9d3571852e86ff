"""The classical peer on the same pair, file to file: Orfeo ToolBox's Multivariate Alteration
Detector (``otbcli_MultivariateAlterationDetector``, Debian ``otb-bin``), its change variates
written as a tiled, compressed float GeoTIFF like DeepCL's outputs."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional

from .peak_rss import run_measuring_peak

OTB_MAD = "otbcli_MultivariateAlterationDetector"
OTB_RAM_MB = 256  # OTB's own default streaming budget, stated so the run is reproducible


def otb_available() -> bool:
    return shutil.which(OTB_MAD) is not None


def run_otb_mad(before: Path, after: Path, scratch: Path) -> Optional[Dict]:
    """Seconds and peak RSS (MB) of one OTB MAD run, or None when OTB is not installed. The peak
    is the OTB process's own (:mod:`.peak_rss`)."""
    if not otb_available():
        return None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="otb-") as folder:
        out = f"{Path(folder) / 'mad.tif'}?&gdal:co:TILED=YES&gdal:co:COMPRESS=DEFLATE"
        command = [OTB_MAD, "-in1", str(before), "-in2", str(after), "-out", out, "float", "-ram", str(OTB_RAM_MB)]
        with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: OTB's progress lines never block it
            usage = run_measuring_peak(command, stdout=log, stderr=subprocess.STDOUT)
            log.seek(0)
            error = log.read()
    if usage.status != 0:
        raise RuntimeError(f"{OTB_MAD} failed: {error.strip()[-500:]}")
    return {"seconds": usage.seconds, "peak_rss_mb": usage.peak_rss_mb}
