"""Running a model for its intermediate tensors, wave by wave, over calibration rows.

The closed-form refit and the BatchNorm re-estimation handle layers in waves: a layer waits for
every handled layer upstream of it. Each wave needs some intermediate tensors of the model as it
stands after the earlier waves. ONNX Runtime runs every node of a graph whatever outputs a run asks
for, so each run gets a graph cut down to what it needs; `Forward` also starts each wave from the
tensors the earlier waves left behind, so a model is run about once in all instead of once per wave
(ppocr-rec has 46 waves).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx

from ..runtime import make_session

FRONTIER_BYTES = 2 << 30  # kept tensors past this: the next wave runs from the model's inputs again


def has_subgraphs(model: onnx.ModelProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in model.graph.node for a in n.attribute)


def with_outputs(model: onnx.ModelProto, names: list[str], nodes: list[int] | None = None,
                 inputs: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """`model` computing exactly `names`. `nodes` (indices into the graph's nodes, default: every
    node `names` depend on) and `inputs` (tensors fed in place of the graph's inputs, an example
    value of each) cut it further. Graphs with subgraphs keep every node (a
    branch may read any outer tensor by name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    wanted = list(dict.fromkeys(names))
    del out.graph.output[:]
    out.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in wanted)
    if has_subgraphs(out):
        return out
    every = list(out.graph.node)
    keep = sorted(nodes) if nodes is not None else _ancestors(every, wanted, set())
    del out.graph.node[:]
    out.graph.node.extend(every[i] for i in keep)
    read = {i for n in out.graph.node for i in n.input if i} | set(wanted)
    if inputs is not None:
        del out.graph.input[:]
        out.graph.input.extend(
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for name, v in inputs.items() if name in read)
    used = read | {i.name for i in out.graph.input}
    inits = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    return out


def _ancestors(nodes: list[onnx.NodeProto], names: list[str], stop: set[str]) -> list[int]:
    """Indices of the nodes `names` depend on, not looking past the tensors in `stop`."""
    producers = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    todo, seen, found = [t for t in names if t not in stop], set(), set()
    while todo:
        t = todo.pop()
        if t in seen or t not in producers:
            continue
        seen.add(t)
        i = producers[t]
        if i not in found:
            found.add(i)
            todo.extend(x for x in nodes[i].input if x and x not in stop)
    return sorted(found)


def run_rows(session, names: list[str], feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """`names` over every row of `feeds`, `batch` rows a run (a static batch: the last chunk wraps
    around and is trimmed)."""
    n = next(iter(feeds.values())).shape[0]
    parts = []
    for i in range(0, n, batch):
        idx = np.arange(i, i + batch) % n
        outs = session.run(names, {k: v[idx] for k, v in feeds.items()})
        parts.append([o[:min(batch, n - i)] for o in outs])
    return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}


def runner(model: onnx.ModelProto, outputs: list[str], fixed_batch: int):
    """Run `model` (static batch `fixed_batch`) for `outputs` on any number of rows."""
    graph_inputs = {i.name for i in model.graph.input}
    computed = [o for o in dict.fromkeys(outputs) if o not in graph_inputs]  # ORT returns no graph input
    session = make_session(with_outputs(model, computed)) if computed else None

    def run(feeds):
        got = run_rows(session, computed, feeds, fixed_batch) if session else {}
        got.update({name: feeds[name] for name in outputs if name in graph_inputs})
        return got
    return run


class Forward:
    """One model's intermediate tensors on every calibration row, wave by wave: each `run` computes
    only the nodes no earlier run has, fed from the tensors the earlier runs left behind. Valid as
    long as every node already run keeps its value: the caller only changes weights downstream of
    what it has asked for (a wave refits the layers whose inputs it asked for).

    The rows go in chunks of the model's static batch, and the tensors left behind are kept per
    chunk as the runs made them: some are not per row at all (a computed shape). What a run asks
    for comes back a chunk at a time, so only the kept tensors are held for every row."""

    def __init__(self, inputs: dict[str, np.ndarray], fixed_batch: int, max_bytes: int = FRONTIER_BYTES):
        self.rows = next(iter(inputs.values())).shape[0]
        self.batch, self.max_bytes = fixed_batch, max_bytes
        self.chunks = [np.arange(i, i + fixed_batch) % self.rows for i in range(0, self.rows, fixed_batch)]
        self.raw = inputs
        self.inputs = {k: [v[idx] for idx in self.chunks] for k, v in inputs.items()}
        self.restart()

    def restart(self) -> None:
        self.frontier: dict[str, list[np.ndarray]] = dict(self.inputs)  # per chunk: tensors pending nodes read
        self.done: set[int] = set()

    def run(self, model: onnx.ModelProto, names: list[str], rows: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """`names` (tensors with the row axis first) on every row, `rows` rows at a time (default: the
        static batch), in order. The kept tensors move on once the last chunk has run."""
        names = list(dict.fromkeys(names))
        if has_subgraphs(model):  # a branch may read any tensor: no cutting, no frontier
            self.restart()
            yield from _rebatch([runner(model, names, self.batch)(self.raw)], rows or self.batch)
            return
        nodes = list(model.graph.node)
        todo = [i for i in _ancestors(nodes, names, set(self.frontier)) if i not in self.done]
        done = self.done | set(todo)
        pending = {x for i, n in enumerate(nodes) if i not in done for x in n.input}
        keep = [o for i in todo for o in nodes[i].output if o in pending]
        outs = list(dict.fromkeys([t for t in names if t not in self.frontier] + keep))
        kept: dict[str, list[np.ndarray]] = {t: [] for t in keep}
        session, fed = None, []
        if todo:
            cut = with_outputs(model, outs, todo, {k: v[0] for k, v in self.frontier.items()})
            session, fed = make_session(cut), [i.name for i in cut.graph.input]

        def chunks():
            last = len(self.chunks) - 1
            for c in range(last + 1):
                got = dict(zip(outs, session.run(outs, {k: self.frontier[k][c] for k in fed}))) if session else {}
                got.update({t: self.frontier[t][c] for t in names if t not in got})
                for t in keep:
                    kept[t].append(got[t])
                if c == last:  # before the last rows go out: a caller zipping two runs may stop there
                    self._advance(pending, kept, done)
                real = min(self.batch, self.rows - c * self.batch)  # the last chunk wrapped around
                yield {t: got[t][:real] for t in names}

        yield from _rebatch(chunks(), rows or self.batch)

    def _advance(self, pending: set[str], kept: dict[str, list[np.ndarray]], done: set[int]) -> None:
        frontier = {t: v for t, v in self.frontier.items() if t in pending}
        frontier.update(kept)
        self.frontier, self.done = frontier, done
        if sum(a.nbytes for v in frontier.values() for a in v) > self.max_bytes:
            self.restart()


def _rebatch(parts: Iterable[dict[str, np.ndarray]], rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Row-wise dicts of arrays regrouped into `rows` rows each (the last may have fewer)."""
    pending: list[dict[str, np.ndarray]] = []
    have = 0
    for part in parts:
        pending.append(part)
        have += len(next(iter(part.values())))
        while have >= rows:
            joined = {k: np.concatenate([p[k] for p in pending]) for k in part}
            yield {k: v[:rows] for k, v in joined.items()}
            pending, have = [{k: v[rows:] for k, v in joined.items()}], have - rows
            if not have:
                pending = []
    if have:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


def wave_of(model: onnx.ModelProto, items: list[tuple[str, str]]) -> dict[str, int]:
    """For (node, input tensor) pairs in topological order: the pass in which each can be handled,
    one after every listed node upstream of its input."""
    producers = {o: n for n in model.graph.node for o in n.output}
    wave: dict[str, int] = {}
    for node, tensor in items:
        stack, seen, level = [tensor], set(), 0
        while stack:
            t = stack.pop()
            if t in seen or t not in producers:
                continue
            seen.add(t)
            p = producers[t]
            if p.name in wave:
                level = max(level, wave[p.name] + 1)
                continue
            stack.extend(p.input)
        wave[node] = level
    return wave
