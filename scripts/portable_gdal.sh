#!/bin/bash
# GDAL's Python bindings for a machine that has Python and PyTorch but no GDAL and no network (the
# lent GPU machine): GDAL 3.10.3's bindings (PyPI sdist) compiled for PYTHON's version against the
# GDAL 3.10.3 library that rasterio 1.4.4's manylinux wheel bundles with PROJ and its data, using
# the headers of Debian 13's libgdal-dev 3.10.3. Writes FOLDER/osgeo/ and FOLDER/gdal-libs.tar.xz
# (those libraries, GDAL's and PROJ's data; xz keeps them small enough to carry);
# scripts/with_portable_gdal.sh runs a command with them there.
#
#   scripts/portable_gdal.sh FOLDER PYTHON   (PYTHON: an interpreter of the GPU machine's x.y, with headers)
set -euo pipefail
folder=$(realpath -m "$1"); python=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$folder" && rm -rf "$folder/osgeo" "$folder/gdal-libs.tar.xz"

platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" -d "$work" rasterio==1.4.4
"$python" -m pip install -q --target "$work/numpy" numpy==2.0.2  # headers; numpy 2.x keeps their ABI
sdist=$(curl -fsS https://pypi.org/simple/gdal/ | grep -o 'https://[^"#]*/gdal-3\.10\.3\.tar\.gz' | head -1)
curl -fsS "$sdist" | tar xz -C "$work"

# Debian 13's libgdal-dev, fetched with apt-get from a sources list of our own.
mkdir -p "$work/apt/lists/partial"
echo "deb http://deb.debian.org/debian trixie main" > "$work/apt/sources.list"
apt=(-oDir::Etc::SourceList="$work/apt/sources.list" -oDir::Etc::SourceParts=/dev/null
     -oDir::State::Lists="$work/apt/lists" -oAPT::Architecture=amd64)
apt-get -qq "${apt[@]}" update
(cd "$work" && apt-get -qq "${apt[@]}" download libgdal-dev=3.10.3+dfsg-1 && dpkg -x libgdal-dev_*.deb headers)

(cd "$work" && python3 -m zipfile -e rasterio-*.whl wheel >/dev/null)
library=$(basename "$work"/wheel/rasterio.libs/libgdal-*.so.*)
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
mkdir -p "$folder/osgeo" && cp "$work"/gdal-3.10.3/osgeo/*.py "$folder/osgeo/"
build() {  # DT_RPATH, not RUNPATH: it also finds the bundled libraries libgdal itself needs
    local compiler=g++; [[ $1 == *.c ]] && compiler=gcc
    $compiler -O2 -fPIC -shared -w -DSWIG_PYTHON_SILENT_MEMLEAK -I"$include" -I"$work/numpy/numpy/_core/include" \
        -I"$work/headers/usr/include/gdal" "$work/gdal-3.10.3/extensions/$1" -o "$folder/osgeo/$2$suffix" \
        -L"$work/wheel/rasterio.libs" -l:"$library" -Wl,--disable-new-dtags,-rpath,'$ORIGIN/../rasterio.libs'
}
build gdal_wrap.cpp _gdal & build osr_wrap.cpp _osr & build ogr_wrap.cpp _ogr &
build gdal_array_wrap.cpp _gdal_array & build gdalconst_wrap.c _gdalconst & wait
ls "$folder/osgeo"/_*"$suffix" | wc -l | grep -qx 5 || { echo "portable_gdal: a module failed to build" >&2; exit 1; }
XZ_OPT=-T0 tar -cJf "$folder/gdal-libs.tar.xz" -C "$work/wheel" rasterio.libs -C rasterio gdal_data proj_data
echo "GDAL bindings for Python $version in $folder"
