"""Runs gcp-storage-emulator with the two parts of the GCS JSON API that Orbax's tensorstore and a
run folder's lock rely on and the emulator leaves out:

- media downloads carry `x-goog-generation` and `x-goog-metageneration` headers (tensorstore reads
  an object's generation from them, and fails with "Malformed StorageGeneration" without them);
- uploads honour `ifGenerationMatch` (0: only if the object does not exist; N: only if its
  generation is N), answering 412 Precondition Failed otherwise, as GCS does. Tensorstore's OCDBT
  manifest and the lock's exclusive create depend on it.

    python -m helpsteer_jax.testing.gcs_emulator_server --port=PORT --bucket=NAME
"""

import argparse
import logging
import signal
import threading
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _generation(storage, bucket: str, name: str):
  try:
    return storage.get_file_obj(bucket, name)
  except NotFound:
    return None


def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  obj = _generation(storage, request.params["bucket_name"], request.params["object_id"])
  if obj is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])


def insert(request, response, storage, *args, **kwargs):
  wanted = request.query.get("ifGenerationMatch")
  if wanted:
    name = (request.query.get("name") or [None])[0]
    if name is None and isinstance(request.data, dict):
      name = request.data.get("meta", {}).get("name")
    obj = _generation(storage, request.params["bucket_name"], name) if name else None
    current = "0" if obj is None else str(obj["generation"])
    if wanted[0] != current:
      response.status = HTTPStatus.PRECONDITION_FAILED
      response.json({"error": {"code": 412, "message": "conditionNotMet"}})
      return None
  return _insert(request, response, storage, *args, **kwargs)


_download, _insert = objects.download, objects.insert
objects.download, objects.insert = download, insert
_REPLACE = {_download: download, _insert: insert}
server.HANDLERS = tuple(
  (pattern, {method: _REPLACE.get(handler, handler) for method, handler in handlers.items()})
  for pattern, handlers in server.HANDLERS
)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", required=True)
  args = parser.parse_args()
  logging.basicConfig(level=logging.WARNING)
  emulator = server.create_server("127.0.0.1", args.port, in_memory=True, default_bucket=args.bucket)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  emulator.start()
  try:
    stop.wait()
  finally:
    emulator.stop()


if __name__ == "__main__":
  main()
