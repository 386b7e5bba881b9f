"""An OpenAI-compatible server over the decode engine: `python -m helpsteer_jax.serve`.

protocol.py holds the request and response records, engine_loop.py the thread that owns the
engine and batches every open request into it, model_service.py what one model answers, app.py
the HTTP routes (FastAPI on uvicorn)."""
