"""Operator graphs: records, the JSON format, the model zoo and random DAGs."""

from parplan.graph.io import graph_from_json, graph_to_json, read_graph, write_graph
from parplan.graph.ops import OP_KINDS, Edge, Op, OpGraph, make_attrs
from parplan.graph.random_dag import parse_random_dag_spec, random_dag
from parplan.graph.zoo import ModelInfo, build_model, list_models, resolve_model

__all__ = [
    "OP_KINDS",
    "Edge",
    "ModelInfo",
    "Op",
    "OpGraph",
    "build_model",
    "graph_from_json",
    "graph_to_json",
    "list_models",
    "make_attrs",
    "parse_random_dag_spec",
    "random_dag",
    "read_graph",
    "resolve_model",
    "write_graph",
]
