"""Data: sources (random-access or streaming), tokenizers, transforms, Grain pipelines."""
