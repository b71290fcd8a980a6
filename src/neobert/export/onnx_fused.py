"""The exported graph rewritten for onnxruntime's CPU kernels, before int8 quantisation: each layer's rotary
positions and attention become onnxruntime's fused `RotaryEmbedding` and `MultiHeadAttention` operators
(com.microsoft), and the packed SwiGLU projection `w12` two matrix products, so that no copy splits its
output. The traced graph spends about a third of an int8 forward pass outside its matrix products, mostly
in the element-wise rotary arithmetic, the head transposes and those slices; fused, a quarter.

The vectors do not move: the float32 graph rewritten here gives the traced graph's vectors to 1e-7. Only
onnxruntime reads the result (OpenVINO and Text Embeddings Inference know no com.microsoft operators),
which is why `neobert export --onnx --int8` writes it beside the portable files, never over them."""

from __future__ import annotations

import re
from collections import deque

import numpy as np

LAYER_QKV = re.compile(r"/encoder/transformer_encoder\.(\d+)/qkv/MatMul")
MICROSOFT = "com.microsoft"


class UnfusableGraph(RuntimeError):
    """The traced graph lacks a node the rewrite looks for (the model code changed under the exporter)."""


def fuse_for_onnxruntime(model, num_heads: int):
    """Rewrite the traced NeoBERT graph in place (see the module docstring); returns it."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    weights = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    cos = [node.output[0] for node in graph.node if node.op_type == "Cos"]
    sin = [node.output[0] for node in graph.node if node.op_type == "Sin"]
    layers = sorted(int(match.group(1)) for node in graph.node if (match := LAYER_QKV.fullmatch(node.name)))
    if len(cos) != 1 or len(sin) != 1 or not layers:
        raise UnfusableGraph("the graph has no single rotary (cos, sin) table or no qkv projection")
    added = [helper.make_node("Cast", ["attention_mask"], ["fused/key_mask"], to=TensorProto.INT32, name="fused/mask")]
    graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=np.int64), "fused/first_position"))
    removed = set()
    for layer in layers:
        prefix = f"/encoder/transformer_encoder.{layer}/"
        qkv, wo = nodes[f"{prefix}qkv/MatMul"], nodes.get(f"{prefix}wo/MatMul")
        if wo is None or qkv.input[1] not in weights:
            raise UnfusableGraph(f"layer {layer}: no output projection or no constant qkv weight")
        # Columns come per head as [q, k, v] (the model's view); the fused operators want all q, all k, all v.
        packed = numpy_helper.to_array(weights[qkv.input[1]])
        hidden = packed.shape[0]
        grouped = packed.reshape(hidden, num_heads, 3, hidden // num_heads).transpose(0, 2, 1, 3)
        weights[qkv.input[1]].CopyFrom(
            numpy_helper.from_array(np.ascontiguousarray(grouped.reshape(hidden, 3 * hidden)), qkv.input[1])
        )
        name = f"fused/{layer}/"
        graph.initializer.append(numpy_helper.from_array(np.full(3, hidden, dtype=np.int64), name + "thirds"))
        rotary = dict(domain=MICROSOFT, interleaved=1, num_heads=num_heads)  # pairs (2i, 2i+1), as the model
        table = ["fused/first_position", cos[0], sin[0]]
        added += [
            helper.make_node("Split", [qkv.output[0], name + "thirds"], [name + c for c in "qkv"], axis=-1),
            *(helper.make_node("RotaryEmbedding", [name + c, *table], [name + "r" + c], **rotary) for c in "qk"),
            helper.make_node(
                "MultiHeadAttention",
                [name + "rq", name + "rk", name + "v", "", "fused/key_mask"],
                [name + "attention"],
                domain=MICROSOFT,
                num_heads=num_heads,
            ),
        ]
        wo.input[0] = name + "attention"
        added += _split_swiglu(nodes.get(f"{prefix}ffn/w12/MatMul"), consumers, weights, graph, name, removed)
    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(_reachable_in_order(kept + added, [output.name for output in graph.output]))
    used = {name for node in graph.node for name in node.input}
    live = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    if not any(opset.domain == MICROSOFT for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    return model


def _split_swiglu(w12, consumers: dict, weights: dict, graph, name: str, removed: set) -> list:
    """Two matrix products for w12's gate and up halves, producing what the two slices of its output did."""
    from onnx import helper, numpy_helper

    if w12 is None:
        return []  # a layer without SwiGLU keeps its feed-forward graph
    slices = [node for node in consumers.get(w12.output[0], []) if node.op_type == "Slice"]
    gate = [node for node in slices if any(c.op_type == "Sigmoid" for c in consumers.get(node.output[0], []))]
    if len(slices) != 2 or len(gate) != 1 or w12.input[1] not in weights:
        raise UnfusableGraph(f"{w12.name}: its output is not sliced into a gate and an up half")
    up = next(node for node in slices if node is not gate[0])
    packed = numpy_helper.to_array(weights[w12.input[1]])
    half = packed.shape[1] // 2
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(packed[:, :half]), name + "w1"),
            numpy_helper.from_array(np.ascontiguousarray(packed[:, half:]), name + "w2"),
        ]
    )
    removed.update({id(w12), id(gate[0]), id(up)})
    return [
        helper.make_node("MatMul", [w12.input[0], name + "w1"], [gate[0].output[0]], name=name + "w1/MatMul"),
        helper.make_node("MatMul", [w12.input[0], name + "w2"], [up.output[0]], name=name + "w2/MatMul"),
    ]


def _reachable_in_order(nodes: list, outputs: list[str]) -> list:
    """The nodes the graph outputs depend on, in an order where each follows its inputs' producers."""
    producer = {name: node for node in nodes for name in node.output if name}
    needed, stack = {}, [producer[name] for name in outputs]
    while stack:
        node = stack.pop()
        if id(node) not in needed:
            needed[id(node)] = node
            stack.extend(producer[name] for name in node.input if name in producer)
    waiting = {key: sum(1 for name in node.input if name in producer) for key, node in needed.items()}
    users: dict[str, list] = {}
    for node in needed.values():
        for name in node.input:
            if name in producer:
                users.setdefault(name, []).append(node)
    ready = deque(node for key, node in needed.items() if waiting[key] == 0)
    ordered = []
    while ready:
        node = ready.popleft()
        ordered.append(node)
        for name in node.output:
            for user in users.get(name, []):
                waiting[id(user)] -= 1
                if waiting[id(user)] == 0:
                    ready.append(user)
    return ordered
