"""The onnxmorph engine: its own backward and optimizer graphs on a plain onnxruntime InferenceSession.

Three sessions share the parameters: the training model (forward + backward, `train/autodiff`), the
forward-only evaluation model, and the optimizer step (`train/optim.py`), plus a tiny accumulation
model for gradient accumulation. Trainable initializers become graph inputs; parameters, gradients
and optimizer state are OrtValues on the session's device, bound with IOBinding, and every update
writes into a second buffer that is then swapped in, so a step copies no weight to the host.
"""

from __future__ import annotations


import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxMorphError, UsageError
from ..runtime import onnxruntime
from .autodiff import GRAD_PREFIX, differentiate
from .engine import TrainingSession
from .graph import TrainingGraph
from .optim import accumulate_model, new_name, optimizer_spec, state_name, step_model


def _ort():
    return onnxruntime()


def params_as_inputs(model: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto, dict]:
    """A copy of `model` whose initializers `names` are graph inputs; returns it and their values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    wanted = set(names)
    values, keep = {}, []
    for init in g.initializer:
        if init.name in wanted:
            values[init.name] = onnx.numpy_helper.to_array(init)
        else:
            keep.append(init)
    missing = wanted - set(values)
    if missing:
        raise OnnxMorphError(f"internal error: trainable tensors {sorted(missing)} are not initializers")
    del g.initializer[:]
    g.initializer.extend(keep)
    g.input.extend(helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype),
                                                 list(values[n].shape)) for n in names)
    return out, values


def training_model(tg: TrainingGraph) -> tuple[onnx.ModelProto, onnx.ModelProto, dict]:
    """(forward+backward model, forward-only model, initial parameter values) for `tg`."""
    fwd, values = params_as_inputs(tg.model, tg.trainable)
    del fwd.graph.value_info[:]
    full, _ = differentiate(fwd, tg.outputs[0], tg.trainable)
    return full, fwd, values


def _providers(device: str) -> list[str]:
    ort = _ort()
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UsageError("--device cuda needs onnxruntime-gpu: the installed onnxruntime has no CUDA "
                             "execution provider")
        if not cuda_starts(ort):
            raise UsageError(f"--device cuda: onnxruntime-gpu {ort.__version__} could not start its CUDA provider "
                             "(no GPU visible, or the CUDA/cuDNN libraries it needs are missing); use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def cuda_starts(ort) -> bool:
    """Whether a session really gets the CUDA provider: onnxruntime-gpu lists it even where its libraries
    or the GPU are missing, and then silently falls back to the CPU (with log lines, silenced here)."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    probe = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x],
                                                [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=7)  # any onnxruntime reads it
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    ort.set_default_logger_severity(4)
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts,
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        return "CUDAExecutionProvider" in sess.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(2)


def _session(model: onnx.ModelProto, providers: list[str], threads: int = 0):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
    except Exception as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OnnxMorphError(f"cannot build the training graph: {line[:300]}") from None


class NativeSession(TrainingSession):
    def __init__(self, tg: TrainingGraph, *, optimizer: str = "adamw", device: str = "cpu", threads: int = 0):
        self.tg = tg
        self.device = device
        providers = _providers(device)
        self.spec = optimizer_spec(optimizer)
        full, fwd, values = training_model(tg)
        self.train_sess = _session(full, providers, threads)
        self.eval_sess = _session(fwd, providers, threads)
        meta = {n: (list(v.shape), helper.np_dtype_to_tensor_dtype(v.dtype)) for n, v in values.items()}
        self.opt_sess = _session(step_model(self.spec, meta), providers, threads)
        self.acc_sess = _session(accumulate_model(meta), providers, threads)
        self._ort_device = "cuda" if device == "cuda" else "cpu"
        self.names = list(tg.trainable)
        # live buffers and their spares (double buffering: a run never writes what it reads)
        self.p = {n: self._ov(values[n]) for n in self.names}
        self.p_spare = {n: self._ov(values[n]) for n in self.names}
        zeros = {n: np.zeros_like(values[n]) for n in self.names}
        self.state = {(s, n): self._ov(zeros[n]) for s in self.spec.states for n in self.names}
        self.state_spare = {(s, n): self._ov(zeros[n]) for s in self.spec.states for n in self.names}
        self.g = {n: self._ov(zeros[n]) for n in self.names}  # the last step's gradients
        self.acc = {n: self._ov(zeros[n]) for n in self.names}
        self.acc_spare = {n: self._ov(zeros[n]) for n in self.names}
        self.pending = False  # whether `acc` holds gradients of earlier micro-batches
        self.last = self.g  # the gradients the last optimizer step used
        self.step_count = 0
        self.lr = 1e-3
        self.input_names = [i.name for i in self.eval_sess.get_inputs() if i.name not in values]
        self.output_names = list(tg.outputs)
        self.declared = {o.name: o.shape for o in self.eval_sess.get_outputs()
                         if all(isinstance(d, int) for d in o.shape)}

    def _ov(self, a) -> "object":
        """A session-owned OrtValue holding a copy of `a` (ortvalue_from_numpy would alias numpy's memory
        on the CPU, and buffers must never share memory)."""
        ort = _ort()
        a = np.ascontiguousarray(a)
        v = ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype, self._ort_device, 0)
        v.update_inplace(a)
        return v

    # running
    def _bind_inputs(self, io, feeds):
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise OnnxMorphError(f"internal error: training inputs {missing} not fed")
        for n in self.input_names:  # (bind_cpu_input would turn a 0-d array into shape [1])
            io.bind_ortvalue_input(n, self._ov(feeds[n]))
        for n in self.names:
            io.bind_ortvalue_input(n, self.p[n])

    def _host_outputs(self, io, sess_outputs) -> dict[str, np.ndarray]:
        values = io.get_outputs()
        out = {}
        for i, n in enumerate(sess_outputs):
            if n in self.output_names:
                v = values[i].numpy()
                # IOBinding may hand a scalar back as shape [1]: restore the declared shape
                shape = self.declared.get(n)
                out[n] = v.reshape(shape) if shape is not None and v.size == int(np.prod(shape)) else v
        return out

    def train_step(self, feeds, apply: bool = True):
        io = self.train_sess.io_binding()
        self._bind_inputs(io, feeds)
        outs = [o.name for o in self.train_sess.get_outputs()]
        for n in outs:
            if n.startswith(GRAD_PREFIX):
                io.bind_ortvalue_output(n, self.g[n[len(GRAD_PREFIX):]])
            else:
                io.bind_output(n, "cpu")
        self.train_sess.run_with_iobinding(io)
        result = self._host_outputs(io, outs)
        if self.pending or not apply:
            self._accumulate()
        if apply:
            grads = self.acc if self.pending else self.g
            self._optimizer_step(grads)
            self.last = grads
            self.pending = False
        return result

    def _accumulate(self):
        """acc += g (acc starts from g after a step or reset)."""
        if not self.pending:
            self.acc, self.g = self.g, self.acc  # the first micro-batch's gradients are the sum so far
            self.pending = True
            return
        io = self.acc_sess.io_binding()
        for n in self.names:
            io.bind_ortvalue_input(state_name("acc", n), self.acc[n])
            io.bind_ortvalue_input(GRAD_PREFIX + n, self.g[n])
            io.bind_ortvalue_output(new_name(state_name("acc", n)), self.acc_spare[n])
        self.acc_sess.run_with_iobinding(io)
        self.acc, self.acc_spare = self.acc_spare, self.acc

    def _optimizer_step(self, grads):
        self.step_count += 1
        io = self.opt_sess.io_binding()
        for k, v in self.spec.scalars(self.lr, self.step_count).items():
            io.bind_ortvalue_input(k, self._ov(v))
        for n in self.names:
            io.bind_ortvalue_input(n, self.p[n])
            io.bind_ortvalue_input(GRAD_PREFIX + n, grads[n])
            io.bind_ortvalue_output(new_name(n), self.p_spare[n])
            for s in self.spec.states:
                io.bind_ortvalue_input(state_name(s, n), self.state[(s, n)])
                io.bind_ortvalue_output(new_name(state_name(s, n)), self.state_spare[(s, n)])
        self.opt_sess.run_with_iobinding(io)
        self.p, self.p_spare = self.p_spare, self.p
        self.state, self.state_spare = self.state_spare, self.state

    def evaluate(self, feeds):
        io = self.eval_sess.io_binding()
        self._bind_inputs(io, feeds)
        outs = [o.name for o in self.eval_sess.get_outputs()]
        for n in outs:
            io.bind_output(n, "cpu")
        self.eval_sess.run_with_iobinding(io)
        return self._host_outputs(io, outs)

    # state
    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def params(self):
        return {n: self.p[n].numpy().copy() for n in self.names}

    def param(self, name):
        return self.p[name].numpy().copy()

    def load_params(self, values):
        for n, v in values.items():  # float32: the optimizer graph trains float32 weights only
            self.p[n] = self._ov(np.asarray(v, dtype=np.float32).reshape(self.p[n].shape()))

    def grad(self, name):
        return (self.acc if self.pending else self.last)[name].numpy().copy()

    def reset_grad(self):
        self.pending = False

    def reset_optimizer(self):
        for key, v in self.state.items():
            self.state[key] = self._ov(np.zeros(v.shape(), np.float32))
        self.step_count = 0
        self.pending = False

    def save(self, path):
        arrays = {f"param/{n}": self.param(n) for n in self.names}
        arrays.update({f"state/{s}/{n}": v.numpy() for (s, n), v in self.state.items()})
        with open(path, "wb") as f:
            np.savez(f, step=np.array(self.step_count), **arrays)

    def load(self, path):
        with np.load(path) as z:
            self.load_params({n: z[f"param/{n}"] for n in self.names})
            for s, n in self.state:
                key = f"state/{s}/{n}"
                if key in z:
                    self.state[(s, n)] = self._ov(z[key])
            self.step_count = int(z["step"])


__all__ = ["NativeSession", "params_as_inputs", "training_model"]
