"""DeepCL for QGIS: change detection between a before and an after image (Processing provider
``deepcl``). QGIS calls :func:`classFactory` to load the plugin."""


def classFactory(iface):  # noqa: N802 (QGIS API)
    # Imported here so that importing the package (e.g. by tests or qgis_process) stays cheap.
    from .plugin import DeepCLPlugin

    return DeepCLPlugin(iface)
