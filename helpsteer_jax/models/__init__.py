"""Llama-3 model, config and presets."""
