"""Fine-tune the gated graph with ONNX Runtime training (no PyTorch): lowering, losses, engine, loop."""
