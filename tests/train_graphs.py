"""Training graphs of test models with one fixed batch: what the engine tests and benchmarks feed."""

from __future__ import annotations

import numpy as np

from onnxmorph.analysis import analyze
from onnxmorph.graph import load_model
from onnxmorph.methods.trained import GatesMethod
from onnxmorph.runtime import run_model
from onnxmorph.train.graph import LABELS, REG_STRENGTH, REG_WEIGHTS, UNIT_MASK, build_training_graph, loss_spec


def training_graph(model, batch: int | None = None, engine: str = "onnxmorph", seed: int = 0):
    """(TrainingGraph, feeds) of `model` instrumented with gates, distilling to random targets."""
    rng = np.random.default_rng(seed)
    shapes = None
    if batch is not None:
        import onnx

        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        inp = proto.graph.input[0]
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        shapes = {inp.name: (batch, *dims[1:])}
    analysis = analyze(load_model(model, shapes))
    method = GatesMethod()
    feeds = {}
    graph = analysis.loaded.graph()
    for t in graph.inputs:
        feeds[t.name] = rng.standard_normal([int(d) for d in t.shape]).astype(np.float32)
    # the loss kinds come from the outputs' values, as in training (logits: KL; others: MSE)
    outputs = dict(zip([o.name for o in graph.outputs], run_model(analysis.loaded.model, feeds)))
    spec = loss_spec(outputs, 4.0)
    tg = build_training_graph(analysis, method, spec, engine=engine)
    for key, name in tg.targets.items():
        shape = next(o.shape for o in graph.outputs if o.name == key.split("::")[0])
        logits = rng.standard_normal([int(d) for d in shape])
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        feeds[name] = (np.log(p) if key.endswith("::logp") else p).astype(np.float32)
    u = analysis.num_units
    feeds[REG_WEIGHTS] = rng.random(u).astype(np.float32)
    feeds[REG_STRENGTH] = np.array(0.5, np.float32)
    feeds[UNIT_MASK] = (rng.random(u) > 0.2).astype(np.float32)
    feeds.update(method.step_inputs(rng, {}, None))
    feeds.pop(LABELS, None)
    return tg, feeds


def steps_after_rollback_and_fresh(tg, feeds, engine: str = "onnxmorph", optimizer: str = "adamw",
                                   reset: bool = True):
    """Weights after one step at 1e-3 of (a) a session that took 3 steps at 3e-3 and went back to its
    start (resetting its optimizer with `reset`), and (b) a new session: equal where the reset works."""
    from onnxmorph.train.engine import open_session

    a, b = open_session(tg, engine=engine, optimizer=optimizer), open_session(tg, engine=engine, optimizer=optimizer)
    try:
        start = a.params()
        for _ in range(3):
            a.set_lr(3e-3)
            a.train_step(feeds)
        a.load_params(start)
        if reset:
            a.reset_optimizer()
        for s in (a, b):
            s.set_lr(1e-3)
            s.train_step(feeds)
        return a.params(), b.params()
    finally:
        a.close()
        b.close()
