"""Exporting trained speaker models for deployment: TorchScript and ONNX.

Both take fbank features ``[B, T, F]`` and give embeddings ``[B, E]``; RepVGG
models are fused into their deploy form first. Every export is checked against
the eager model before it is written, and records the model it holds
(:mod:`~wespeaker_py.export.metadata`).

    from wespeaker_py.export import (export_onnx, export_torchscript, exportable_model,
                                     load_exportable_embedder)
"""
from wespeaker_py.export.checks import (ExportMismatchError, check_against_eager, exportable_model,
                                        load_exportable_embedder)
from wespeaker_py.export.onnx_export import export_onnx, require_onnx_packages
from wespeaker_py.export.torchscript import export_torchscript, to_torchscript

__all__ = ["ExportMismatchError", "check_against_eager", "export_onnx", "export_torchscript",
           "exportable_model", "load_exportable_embedder", "require_onnx_packages",
           "to_torchscript"]
