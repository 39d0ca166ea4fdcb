"""Keras/larq model -> LCE TFLite flatbuffer, and what the flatbuffer contains.

Submodules import TensorFlow lazily; importing this package stays cheap.
"""
from edgebvit.converters.export import ExportOptions, ExportReport, export, format_export_report
from edgebvit.converters.inspect import FlatbufferReport, OpInfo, format_report, inspect_flatbuffer, plot_macs
from edgebvit.converters.parity import Divergence, ParityResult, check_parity, locate_divergence
from edgebvit.converters.precheck import Finding, precheck
from edgebvit.converters.rewrites import RewriteResult, rewrite_quant_dense

__all__ = [
    "Divergence", "ExportOptions", "ExportReport", "Finding", "FlatbufferReport", "OpInfo", "ParityResult",
    "RewriteResult", "check_parity", "export", "format_export_report", "format_report", "inspect_flatbuffer",
    "locate_divergence", "plot_macs", "precheck", "rewrite_quant_dense",
]
