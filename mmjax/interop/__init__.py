"""Interop with other codebases' checkpoints (open_clip). torch is imported lazily, if at all."""
