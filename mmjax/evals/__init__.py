"""Evaluations: zero-shot classification (more to come: retrieval, linear probe, kNN)."""
