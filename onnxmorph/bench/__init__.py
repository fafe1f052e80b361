"""Everything that times this machine: timing primitives, the quiet-state protocol, probes,
calibration of measured profiles, and measured latency of two models."""
