"""What the tests share: pytest fixtures (`fixtures`, loaded as a plugin by tests/conftest.py),
reference computations, tiny models, local servers (a judge, a GCS emulator) and a subprocess
runner. Needs the `test` extra; nothing else in the package imports it."""
