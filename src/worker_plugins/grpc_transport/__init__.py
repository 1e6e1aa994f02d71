"""The gRPC transport: the `worker serve` command and the mTLS server behind it.

The generated wire modules (``worker_pb2``, ``worker_pb2_grpc``) live here too, so the
client CLI imports them as ``worker_plugins.grpc_transport.worker_pb2``. Regenerate them
with ``scripts/gen_proto``; a test fails if the committed copies drift from the proto.

Importing this package restricts TLS 1.2 to ECDHE AEAD cipher suites for gRPC in this
process (see :mod:`.cipher_policy`). gRPC reads that setting when ``grpc`` is imported, so
it is applied here, before any module of the package imports ``grpc``; ``worker serve``
re-executes itself if something imported ``grpc`` earlier.
"""

from .cipher_policy import apply_cipher_policy

apply_cipher_policy()
