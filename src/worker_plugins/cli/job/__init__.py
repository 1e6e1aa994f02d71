"""``worker job``: the remote client of a ``worker serve`` server, over mutual TLS.

- :mod:`.commands` — the click commands (the plugin module the ``jobcli`` entry point names)
- :mod:`.connection` — where the server and the certificates come from; the channel
- :mod:`.client` — typed calls, each with a deadline, returning model records
- :mod:`.follow` — copying a job's output to this terminal, and the exit status of a job
- :mod:`.render` — everything a human reads
- :mod:`.errors` — the one table from gRPC status to message and exit code
"""
