"""Is a TFLite model full-integer? Find the operators a quantizer left in float.

ai-edge-quantizer quantizes what it has int8 kernels for and silently leaves the rest in float,
with a DEQUANTIZE in front and a QUANTIZE behind (``LEAKY_RELU``, standalone ``RELU6``,
``MINIMUM``...). Such a model runs on a CPU, but the Edge TPU compiler stops mapping at the first
float operator and a full-integer profile must refuse it. So every static int8 TFLite artifact is
scanned: any float32 tensor an operator reads or writes, and any QUANTIZE or DEQUANTIZE operator,
means the model is not full-integer. A QUANTIZE from integer to integer is not a conversion but a
requantization (to a new scale, as in front of a CONCATENATION of differently scaled inputs): the
Edge TPU compiler maps it, so it stays. The one exception is float I/O when it was asked for: a
QUANTIZE that reads a graph input, and a DEQUANTIZE that writes a graph output, are the float
edges of an otherwise integer model.

The judgement (``find_float_ops``) is a pure function over a plain description of the graph
(``OpView``); ``scan_tflite`` reads that description from a file with LiteRT's flatbuffer schema.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class OpView:
    """One operator: its builtin name and the type names and indices of the tensors it touches."""

    name: str
    inputs: tuple[tuple[int, str], ...]  # (tensor index, type name such as "INT8" or "FLOAT32")
    outputs: tuple[tuple[int, str], ...]
    subgraph: int = 0


@dataclass(frozen=True)
class GraphView:
    """The operators of every subgraph, and subgraph 0's input and output tensor indices."""

    ops: tuple[OpView, ...]
    inputs: frozenset[int] = frozenset()
    outputs: frozenset[int] = frozenset()


@dataclass(frozen=True)
class IntegerScan:
    """What keeps a model from being full-integer: float operators, and Q/DQ ops inside the graph."""

    float_ops: tuple[str, ...] = ()  # operators that compute in float, one entry per operator
    conversions: tuple[str, ...] = ()  # QUANTIZE/DEQUANTIZE ops that are not float I/O edges
    edges: int = field(default=0, compare=False)  # Q/DQ ops accepted as float I/O edges

    @property
    def full_integer(self) -> bool:
        return not self.float_ops and not self.conversions

    def describe(self) -> str:
        """``LEAKY_RELU x2 in float; 2 QUANTIZE/DEQUANTIZE inside the graph`` (empty when full-integer)."""
        parts = []
        if self.float_ops:
            parts.append(f"{_counted(self.float_ops)} in float")
        if self.conversions:
            parts.append(f"{_counted(self.conversions)} inside the graph")
        return "; ".join(parts)


def find_float_ops(graph: GraphView, *, float_io: bool) -> IntegerScan:
    """Judge ``graph``; ``float_io`` accepts a QUANTIZE reading a graph input, a DEQUANTIZE writing an output."""
    float_ops: list[str] = []
    conversions: list[str] = []
    edges = 0
    for op in graph.ops:
        if op.name == "QUANTIZE" and not _touches_float(op):
            continue  # int8 → int8 with a new scale (before a CONCATENATION): the Edge TPU maps it
        if op.name in CONVERSION_OPS:
            if float_io and _is_io_edge(op, graph):
                edges += 1
            else:
                conversions.append(op.name)
            continue
        if _touches_float(op):
            float_ops.append(op.name)
    return IntegerScan(float_ops=tuple(float_ops), conversions=tuple(conversions), edges=edges)


def _touches_float(op: OpView) -> bool:
    return any(kind in FLOAT_TYPES for _, kind in (*op.inputs, *op.outputs))


def _is_io_edge(op: OpView, graph: GraphView) -> bool:
    if op.subgraph != 0:
        return False
    if op.name == "QUANTIZE":
        return all(index in graph.inputs for index, _ in op.inputs)
    return all(index in graph.outputs for index, _ in op.outputs)


def _counted(names: Sequence[str]) -> str:
    counts = Counter(names)
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(counts.items()))


def read_graph(path: Path) -> GraphView:
    """The ``GraphView`` of a ``.tflite`` file, read with LiteRT's flatbuffer schema (no interpreter:
    a delegate would hide the operators it takes)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    ops: list[OpView] = []
    for number, subgraph in enumerate(model.subgraphs):
        tensors = subgraph.tensors

        def typed(indices: Any, tensors: list[Any] = tensors) -> tuple[tuple[int, str], ...]:
            return tuple(
                (int(i), type_names.get(tensors[i].type, str(tensors[i].type)))
                for i in (indices if indices is not None else [])
                if i >= 0
            )

        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = op_names.get(builtin, str(builtin))
            if name == "CUSTOM" and code.customCode:
                custom = code.customCode
                name = custom.decode() if isinstance(custom, bytes) else str(custom)
            ops.append(OpView(name, typed(op.inputs), typed(op.outputs), subgraph=number))
    main = model.subgraphs[0]
    return GraphView(
        ops=tuple(ops),
        inputs=frozenset(int(i) for i in main.inputs),
        outputs=frozenset(int(i) for i in main.outputs),
    )


def scan_tflite(path: Path, *, float_io: bool) -> IntegerScan:
    """Scan the model at ``path``: see the module's docstring."""
    return find_float_ops(read_graph(path), float_io=float_io)
