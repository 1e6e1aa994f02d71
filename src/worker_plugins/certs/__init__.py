"""``worker certs``: a small certificate authority for the server's mutual TLS.

:mod:`.authority` builds certificates, :mod:`.store` writes and reads the certificate
directory, :mod:`.commands` is the command line (registered through ``register_commands``).
"""
