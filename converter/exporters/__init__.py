"""Exporters per format: ONNX (and its quantizers), TFLite (litert-torch), OpenVINO IR (NNCF).

Each module imports its toolchain inside its functions, so importing ``converter`` stays light.
"""
