"""The Open Inference Protocol v2 over gRPC: the ``.proto`` and its generated Python modules.

Import ``edge_agent.proto.inference_pb2`` (messages) and ``edge_agent.proto.inference_pb2_grpc``
(stub and servicer base). They are committed, so the agent needs protobuf and grpcio at run time
but never grpcio-tools; ``python -m edge_agent.proto.generate`` regenerates them. The messages sit
in a private descriptor pool (``inference_pb2.POOL``), so they can share a process with tritonclient.
This package imports nothing itself, so the generator can run before the modules exist.
"""
