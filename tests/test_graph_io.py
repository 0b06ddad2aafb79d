"""parplan.graph/1 files: lossless round trips and path-qualified errors."""

from __future__ import annotations

import json

import pytest

from parplan.errors import InvalidInputError
from parplan.graph import (
    Edge,
    Op,
    OpGraph,
    build_model,
    graph_from_json,
    graph_to_json,
    list_models,
    make_attrs,
    random_dag,
    read_graph,
    write_graph,
)


@pytest.mark.parametrize("name", [m.name for m in list_models()])
def test_every_zoo_model_round_trips_through_a_file(name, tmp_path):
    g = build_model(name)
    path = tmp_path / f"{name}.json"
    write_graph(g, path)
    back = read_graph(path)
    assert back == g
    assert back.meta_dict == g.meta_dict
    assert [op.attrs for op in back.ops] == [op.attrs for op in g.ops]


@pytest.mark.parametrize(("ops", "seed", "width"), [(1, 0, 4), (2, 1, 1), (57, 3, 5), (500, 9, 16)])
def test_random_dags_round_trip(ops, seed, width, tmp_path):
    g = random_dag(ops=ops, seed=seed, width=width, cost_spread=7.5)
    path = tmp_path / "g.json"
    write_graph(g, path)
    assert read_graph(path) == g
    assert graph_from_json(json.loads(json.dumps(graph_to_json(g)))) == g


def test_tuple_attrs_and_meta_round_trip():
    g = OpGraph(
        name="t",
        ops=(Op(name="a", kind="other", attrs=make_attrs(shape=(2, 3), tp="row")),),
        edges=(),
        meta=(("dims", (1, 2)),),
    )
    assert graph_from_json(json.loads(json.dumps(graph_to_json(g)))) == g


def _tiny() -> dict:
    return {
        "format": "parplan.graph/1",
        "name": "tiny",
        "meta": {},
        "ops": [
            {"name": "a", "kind": "linear", "fwd_flops": 1, "out_bytes": 8},
            {"name": "b", "kind": "linear", "fwd_flops": 2},
            {"name": "c", "kind": "elementwise"},
            {"name": "d", "kind": "loss"},
        ],
        "edges": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "c", "bytes": 3}, {"src": "c", "dst": "d"}],
    }


def test_hand_written_file_uses_defaults():
    g = graph_from_json(_tiny())
    assert [op.name for op in g.ops] == ["a", "b", "c", "d"]
    assert g.ops[1].bwd_input_flops == 0 and g.ops[0].layer is None and g.ops[0].attrs == ()
    assert g.edges[0] == Edge(src=0, dst=1, bytes=8)  # default: the producer's out_bytes
    assert g.edges[1].bytes == 3


def _mutated(fn) -> dict:
    d = _tiny()
    fn(d)
    return d


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["ops"][3].update(fwd_flops=-1), "graph.ops[3].fwd_flops: must be >= 0, got -1"),
        (lambda d: d["ops"][1].update(act_bytes="x"), "graph.ops[1].act_bytes: must be a number, got 'x'"),
        (lambda d: d["ops"][1].update(act_bytes=True), "graph.ops[1].act_bytes: must be a number, got True"),
        (
            lambda d: d["ops"][0].update(out_bytes=float("inf")),
            "graph.ops[0].out_bytes: must be finite, got inf",
        ),
        (
            lambda d: d["ops"][2].update(name="a"),
            "graph.ops[2].name: 'a' repeats graph.ops[0]; names must be unique",
        ),
        (lambda d: d["ops"][2].update(kind="conv2d"), "graph.ops[2].kind: unknown 'conv2d'; use one of"),
        (
            lambda d: d["ops"][2].update(fwd_flop=1),
            "graph.ops[2].fwd_flop: unknown field (did you mean 'fwd_flops'?)",
        ),
        (
            lambda d: d["ops"][2].update(layer=-2),
            "graph.ops[2].layer: must be null or an integer >= 0, got -2",
        ),
        (lambda d: d["edges"][1].update(dst="cc"), "graph.edges[1].dst: unknown op 'cc'; did you mean 'c'?"),
        (lambda d: d["edges"][0].update(bytes=-5), "graph.edges[0].bytes: must be >= 0, got -5"),
        (lambda d: d["edges"].append({"src": "b", "dst": "b"}), "graph.edges[3]: self loop on 'b'"),
        (
            lambda d: d["edges"].append({"src": "a", "dst": "b"}),
            "graph.edges[3]: 'a' -> 'b' repeats graph.edges[0]",
        ),
        (
            lambda d: d["edges"].append({"src": "d", "dst": "b"}),
            "graph.edges: cycle b -> c -> d -> b; a graph must be acyclic",
        ),
        (
            lambda d: d.update(format="parplan.graph/9"),
            "graph.format: expected 'parplan.graph/1', got 'parplan.graph/9'",
        ),
        (lambda d: d.update(ops=[]), "graph.ops: must list at least one operator"),
        (lambda d: d.update(edges={}), "graph.edges: must be a JSON array, got dict"),
    ],
)
def test_bad_graphs_give_path_qualified_errors(mutate, message):
    with pytest.raises(InvalidInputError) as info:
        graph_from_json(_mutated(mutate))
    assert str(info.value).startswith(message)


def test_file_errors_name_the_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "format": "parplan.graph/1",\n  "ops": [\n    {"name": "a",}\n  ]\n}\n')
    with pytest.raises(InvalidInputError, match=r"bad\.json:4:18: malformed JSON: Expecting property name"):
        read_graph(path)
    path.write_text(json.dumps(_mutated(lambda d: d["ops"][0].update(param_bytes=-1))))
    with pytest.raises(
        InvalidInputError, match=r"bad\.json: graph\.ops\[0\]\.param_bytes: must be >= 0, got -1"
    ):
        read_graph(path)
    with pytest.raises(InvalidInputError, match=r"nope\.json: no such graph file"):
        read_graph(tmp_path / "nope.json")


def test_written_file_is_line_per_record(tmp_path):
    g = build_model("gpt-tiny", num_layers=1)
    path = tmp_path / "g.json"
    write_graph(g, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 1 + g.num_ops + 1 + 1 + len(g.edges) + 1 + 1
    assert json.loads(path.read_text())["format"] == "parplan.graph/1"
