"""ONNX export and the ONNX Runtime backend (needs the ``onnx`` extra: ``pip install 'twinnet[onnx]'``).

    twinnet export MODEL --format onnx --out DIR [--quantize int8]
    model = twinnet.load(DIR, runtime="onnx")       # same API: embed, verify, galleries, serve

How an encoder is exported is declared by the encoder (or a registry), never by its name here:
see :mod:`twinnet.onnx.spec`.
"""

from twinnet.onnx.spec import EXPORT_SPECS, ExportSpec, OnnxExportError, export_spec, register_export_spec

__all__ = ["EXPORT_SPECS", "ExportSpec", "OnnxExportError", "export_spec", "register_export_spec"]
