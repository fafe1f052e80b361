#!/usr/bin/env python3
"""Export torchvision classification architectures (random weights) to ONNX.

Builds a local model zoo for onnxmorph coverage and latency benchmarks. This is
a developer tool: it needs torch + torchvision, which onnxmorph itself never
imports, so run it from a separate environment, e.g.

    python3 -m venv /work/.venv-tv
    /work/.venv-tv/bin/pip install torch torchvision "onnx<1.18" \
        onnxruntime-training-cpu==1.19.2 numpy
    /work/.venv-tv/bin/python tools/export_zoo.py                 # curated list -> /work/zoo
    /work/.venv-tv/bin/python tools/export_zoo.py --models resnet18,swin_t --force
    /work/.venv-tv/bin/python tools/export_zoo.py --all            # every classification model

Every model is built with ``weights=None`` after ``torch.manual_seed(0)``. By
default its constant parameters (norm gamma/beta, zero biases, layer scales, the
zero ViT head) are then drawn at random and its BatchNorm statistics recalibrated
on random inputs, so outputs are O(1) rather than 0 or 1e10 (see
``realistic_init``; ``--raw-init`` keeps torchvision's init). It is put in
eval mode and exported with the TorchScript exporter (``dynamo=False``, opset 17,
constant folding, input "input", output "logits", static batch 1). After export
the file is checked with ``onnx.checker`` and run once in ONNX Runtime against
the torch output. ``index.json`` in the output dir maps model name ->
``{file, input_shape, ...}``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

DEFAULT_OUT = "/work/zoo"
OPSET = 17
MAX_IR_VERSION = 9  # onnxruntime 1.19 reads up to IR 10; stay at <= 9 for older consumers
SIZE_LIMIT_MB = 300.0  # --all skips larger models unless they are named explicitly

# One model per torchvision classification family (plus a few variants that
# exercise different graph patterns: bottlenecks, grouped convs, SE, channel
# shuffle, dense concat, inception branches, layer norm, attention).
DEFAULT_MODELS = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "vgg11_bn",
    "alexnet",
    "squeezenet1_0",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mnasnet0_5",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
]

DEFAULT_SIZE = 64  # small input keeps files and runtimes small

# Small variants torchvision has no builder for: name -> (input size, builder)
CUSTOM_MODELS = {
    # a ViT-Tiny-like torchvision VisionTransformer (4 layers, 3 heads, width 192) at 64x64, patch 8: the
    # same graph pattern as vit_b_16 at a training cost the zoo benchmarks can afford on a CPU
    "vit_tiny": (64, lambda: __import__("torchvision").models.VisionTransformer(
        image_size=64, patch_size=8, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768)),
}


def input_size_for(name: str) -> int:
    """Smallest square input we export `name` at.

    64x64 works for every CNN that ends in a global pool. The exceptions:
    - vit_*: the positional embedding is fixed to image_size=224.
    - maxvit_*: every block's input must be divisible by the partition size 7
      (224 -> 112 -> 56/28/14/7); the builder checks it.
    - swin_*: runs at 64 only by padding every stage up to the 7x7 window and
      dropping the shifted windows, which is not the real graph; use 224.
    - alexnet / vgg*: AdaptiveAvgPool2d((6,6)) / ((7,7)) before the classifier;
      the TorchScript exporter only supports adaptive pooling when the feature
      map is a multiple of the output, i.e. a 224 input.
    - inception_v3: valid-padded stem needs >= 75x75; 128 leaves a 2x2 final map.
    """
    if name in CUSTOM_MODELS:
        return CUSTOM_MODELS[name][0]
    if name.startswith(("vit_", "maxvit_", "swin_", "vgg", "alexnet")):
        return 224
    if name.startswith("inception_v3"):
        return 128
    return DEFAULT_SIZE


def builder_kwargs(name: str) -> dict:
    kw: dict = {"weights": None}
    if name == "googlenet":
        kw.update(aux_logits=False, init_weights=True)
    elif name == "inception_v3":
        kw.update(aux_logits=False, init_weights=True)
    return kw


def realistic_init(model, shape: list[int], seed: int = 0, calib_batches: int = 4, calib_batch_size: int = 8) -> None:
    """Make a torchvision random init look more like a trained network, in place.

    torchvision's init leaves many tensors constant: BatchNorm/LayerNorm gamma=1 and
    beta=0, most biases 0, ConvNeXt layer_scale=1e-6, the ViT head and class token 0,
    and BN running stats at mean 0 / var 1. Exported as is, outputs are degenerate
    (vit_b_16 outputs exactly 0, efficientnet_b0 ~1e-14, inception_v3 ~1e10), so a
    pruned-vs-masked check passes whatever the pruner did, and every channel of a
    norm layer ties on magnitude. This function:
      1. draws every constant parameter from a distribution around a sensible value
         (norm weight U(0.5, 1.5), norm/other bias N(0, 0.05), layer_scale
         U(0.1, 1.0), zero matrices N(0, 1/fan_in), zero tokens N(0, 0.02));
      2. recalibrates BatchNorm running statistics on random N(0, 1) inputs
         (cumulative average over `calib_batches` batches), so activations stay O(1).
    Only values change: the architecture and the exported graph structure do not.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed + 1)
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

    def draw(like, kind):
        if kind == "uniform":
            lo, hi = like
            return lambda t: t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
        std = like
        return lambda t: t.copy_(torch.randn(t.shape, generator=gen) * std)

    with torch.no_grad():
        mods = dict(model.named_modules())
        for pname, p in model.named_parameters():
            if p.numel() <= 1 or not bool((p == p.reshape(-1)[0]).all()):
                continue
            modname, _, leaf = pname.rpartition(".")
            mod = mods.get(modname)
            if isinstance(mod, norm_types) or type(mod).__name__.startswith("LayerNorm"):
                fill = draw((0.5, 1.5), "uniform") if leaf == "weight" else draw(0.05, "normal")
            elif "layer_scale" in leaf:
                fill = draw((0.1, 1.0), "uniform")
            elif p.dim() >= 2 and isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                fan_in = p[0].numel()
                fill = draw(fan_in ** -0.5, "normal")
            elif p.dim() >= 2:
                fill = draw(0.02, "normal")  # class tokens, embeddings
            else:
                fill = draw(0.05, "normal")  # biases
            fill(p)

        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bns:
            model.eval()
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative moving average
                bn.train()
            for _ in range(calib_batches):
                model(torch.randn([calib_batch_size] + list(shape[1:]), generator=gen))
            for bn in bns:
                bn.momentum = 0.1
        model.eval()


def human_mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models)) + sorted(CUSTOM_MODELS)


def estimate_param_bytes(name: str) -> int:
    """fp32 parameter+buffer bytes of the architecture, built on the meta device (no memory)."""
    import torch
    import torchvision

    if name in CUSTOM_MODELS:
        return 4 * sum(p.numel() for p in CUSTOM_MODELS[name][1]().parameters())
    kw = builder_kwargs(name)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, **kw)
    except Exception:  # some init routines refuse meta tensors: build for real
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, **kw)
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return 4 * n


def onnx_input_shape(path: Path) -> list:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return []


def export_one(name: str, out_dir: Path, size: int, raw_init: bool = False, keep_bn: bool = False) -> dict:
    """Export one model; returns an index entry. Raises on failure."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CUSTOM_MODELS[name][1]() if name in CUSTOM_MODELS else \
            torchvision.models.get_model(name, **builder_kwargs(name))
    model.eval()
    n_bytes = 4 * sum(t.numel() for t in list(model.parameters()) + list(model.buffers()))
    if n_bytes > 1.9 * 2**30:
        raise RuntimeError(f"weights ~{human_mb(n_bytes)} exceed the 2 GB single-file ONNX (protobuf) limit; "
                           "this tool does not write external-data models")
    shape = [1, 3, size, size]
    if not raw_init:
        realistic_init(model, shape, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    with torch.no_grad():
        ref = model(x)
    if not isinstance(ref, torch.Tensor):  # e.g. namedtuple outputs with aux heads
        raise RuntimeError(f"model returned {type(ref).__name__}, expected a tensor")

    final = out_dir / f"{name}{'_bn' if keep_bn else ''}.onnx"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".onnx.tmp", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        captured = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["logits"],
                # PRESERVE on an eval-mode model skips the exporter's Conv+BN folding: BatchNormalization
                # nodes stay (what `--method gamma` needs), with their stored statistics
                training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
            )
        proto = onnx.load(str(tmp))
        if proto.ir_version > MAX_IR_VERSION:
            proto.ir_version = MAX_IR_VERSION
            onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))

        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})[0]
        want = ref.numpy()
        if got.shape != want.shape:
            raise RuntimeError(f"ORT output shape {got.shape} != torch {want.shape}")
        max_diff = float(np.max(np.abs(got - want)))
        ref_scale = float(np.max(np.abs(want)))
        if not np.isfinite(got).all():
            raise RuntimeError("ORT output has NaN/Inf")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()

    ops = sorted({n.op_type for n in proto.graph.node})
    n_params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer)
    return {
        "file": final.name,
        "input_shape": shape,
        "size_bytes": final.stat().st_size,
        "params": n_params,
        "opset": OPSET,
        "ir_version": proto.ir_version,
        "nodes": len(proto.graph.node),
        "op_types": ops,
        "ort_vs_torch_max_abs_diff": max_diff,
        "torch_output_max_abs": ref_scale,
        "init": "torchvision" if raw_init else "realistic",
    }


def load_index(out_dir: Path) -> dict:
    p = out_dir / "index.json"
    if p.exists():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            print(f"warning: {p} is not valid JSON; rewriting it", file=sys.stderr)
    return {}


def save_index(out_dir: Path, index: dict) -> None:
    p = out_dir / "index.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--models", help="comma-separated torchvision model names (default: curated list)")
    sel.add_argument("--all", action="store_true", help="every torchvision classification model")
    ap.add_argument("--force", action="store_true", help="re-export models whose file already exists")
    ap.add_argument("--size-limit-mb", type=float, default=SIZE_LIMIT_MB,
                    help="with --all, skip models whose weights exceed this (default %(default)s)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="override the square input size for every model (default: per model)")
    ap.add_argument("--raw-init", action="store_true",
                    help="keep torchvision's init exactly (constant norm params, BN stats 0/1); "
                         "default: randomize constant params and recalibrate BN (see realistic_init)")
    ap.add_argument("--keep-bn", action="store_true",
                    help="keep BatchNormalization nodes (not folded into the convs); files are <name>_bn.onnx")
    ap.add_argument("--list", action="store_true", help="print the selected models and input sizes, export nothing")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    known = classification_models()
    if args.models:
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        explicit = True
    elif args.all:
        names = known
        explicit = False
    else:
        names = list(DEFAULT_MODELS)
        explicit = True  # the curated list is chosen on purpose (vit_b_16 and vgg11_bn exceed the limit)
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: not torchvision classification models: {', '.join(unknown)}", file=sys.stderr)
        return 2

    if args.list:
        for n in names:
            s = args.input_size or input_size_for(n)
            print(f"{n:24s} 1x3x{s}x{s}")
        return 0

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = load_index(out_dir)
    results = {"exported": [], "existing": [], "skipped": [], "failed": []}
    t_all = time.perf_counter()
    for name in names:
        size = args.input_size or input_size_for(name)
        final = out_dir / f"{name}{'_bn' if args.keep_bn else ''}.onnx"
        if final.exists() and not args.force:
            entry = index.get(final.stem) or {}
            entry.setdefault("file", final.name)
            entry["input_shape"] = onnx_input_shape(final)
            entry["size_bytes"] = final.stat().st_size
            index[final.stem] = entry
            save_index(out_dir, index)
            print(f"{name:24s} exists   {human_mb(final.stat().st_size):>10s}  "
                  f"input {'x'.join(map(str, entry['input_shape']))}  (use --force to re-export)", flush=True)
            results["existing"].append(name)
            continue
        if not explicit:
            est = estimate_param_bytes(name)
            if est > args.size_limit_mb * 2**20:
                print(f"{name:24s} skipped  ~{human_mb(est):>9s}  weights exceed --size-limit-mb "
                      f"{args.size_limit_mb:g}; name it in --models to export it", flush=True)
                results["skipped"].append(name)
                continue
        t0 = time.perf_counter()
        try:
            entry = export_one(name, out_dir, size, raw_init=args.raw_init, keep_bn=args.keep_bn)
        except Exception as e:  # report and go on with the next model
            dt = time.perf_counter() - t0
            msg = " ".join(f"{type(e).__name__}: {e}".split())
            print(f"{name:24s} FAILED   after {dt:.1f}s: {msg[:300]}", flush=True)
            if os.environ.get("EXPORT_ZOO_TRACEBACK"):
                traceback.print_exc()
            results["failed"].append((name, msg))
            continue
        dt = time.perf_counter() - t0
        entry["export_seconds"] = round(dt, 2)
        index[final.stem] = entry
        save_index(out_dir, index)
        print(f"{name:24s} exported {human_mb(entry['size_bytes']):>10s}  input "
              f"{'x'.join(map(str, entry['input_shape']))}  {dt:6.1f}s  nodes {entry['nodes']}  "
              f"|logits|max {entry['torch_output_max_abs']:.3g}  "
              f"ort-vs-torch {entry['ort_vs_torch_max_abs_diff']:.1e}", flush=True)
        results["exported"].append(name)

    print(f"\n{len(results['exported'])} exported, {len(results['existing'])} already there, "
          f"{len(results['skipped'])} skipped, {len(results['failed'])} failed "
          f"in {time.perf_counter() - t_all:.0f}s -> {out_dir}/index.json")
    for name, msg in results["failed"]:
        print(f"  failed: {name}: {msg[:300]}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
