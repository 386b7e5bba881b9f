"""What only decoding needs: the slot cache, its attention (chunked prefill, ragged, per-slot and
paged decode), and the weight layouts the decode engine runs."""
