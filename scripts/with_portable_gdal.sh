#!/bin/bash
# Runs COMMAND with the GDAL bindings scripts/portable_gdal.sh built into FOLDER, on a machine that
# has Python and PyTorch but no GDAL (the lent GPU machine). For make bench's CUDA rows there:
#
#   scripts/with_portable_gdal.sh FOLDER \
#       python3 -m benchmarks.detect_bench --devices cuda --runs pipeline,naive,compute,io
set -euo pipefail
folder=$(realpath "$1"); shift
gdal=$(mktemp -d); trap 'rm -rf "$gdal"' EXIT
tar -xJf "$folder/gdal-libs.tar.xz" -C "$gdal" && cp -r "$folder/osgeo" "$gdal"
export PYTHONPATH=$gdal${PYTHONPATH:+:$PYTHONPATH} GDAL_DATA=$gdal/gdal_data PROJ_DATA=$gdal/proj_data
"$@"
