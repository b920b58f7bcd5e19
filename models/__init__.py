"""What travels between the parts of edgefleet: the bundle format, shared statistics, the model zoo.

Kept light on purpose: the edge agent imports it, so nothing here may pull in torch,
tensorflow, nncf or onnx.
"""
