"""Reports of a prune: the report dict (`onnxmorph prune --report PATH.json`) and the human report,
one self-contained HTML page rendered from that dict alone (`--report PATH.html`, `onnxmorph report`)."""
