"""Batched KV-cache generation."""
