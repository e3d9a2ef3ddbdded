"""mrg: radiology report generation with multimodal LLMs.

The package is a small library with a thin command-line interface on top (``mrg --help``).
Data flows one way through it: manifests -> dataset -> model -> trainer -> generator -> metrics -> reports.
"""

__version__ = "0.1.0"
