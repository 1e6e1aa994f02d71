"""The gRPC transport: the mTLS server that ``worker serve`` starts (``serve_transports``).

The generated wire modules (``worker_pb2``, ``worker_pb2_grpc``) live here too, so the
client CLI imports them as ``worker_plugins.grpc_transport.worker_pb2``. Regenerate them
with ``scripts/gen_proto``; a test fails if the committed copies drift from the proto.

Importing this package sets what gRPC core reads when ``grpc`` is imported (see
:mod:`.core_env`): TLS 1.2 limited to ECDHE AEAD cipher suites (:mod:`.cipher_policy`), and
gRPC's own log off. So it is applied here, before any module of the package imports ``grpc``;
``worker serve`` re-executes itself if something imported ``grpc`` earlier.
"""

from .core_env import apply_core_environment

apply_core_environment()
