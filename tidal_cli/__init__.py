"""tidal's command line (``tidal compile | run | sim | compare | report``) and latency reports.

``tidal_cli.report`` is importable on its own: ``build_report(program)`` gives the report as
a dict (schema in ``docs/report-schema.md``), ``render_text``, ``render_markdown`` and
``render_html`` format it, ``plot_timeline`` draws the Gantt chart of the cores.
"""

from importlib import metadata

try:
    __version__ = metadata.version("tidal")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
