"""``worker job``: the remote client of a ``worker serve`` server, over mutual TLS.

- :mod:`.commands` — the plugin module the ``jobcli`` entry point names: it adds the group
- :mod:`.group` — the ``job`` group; each command's module is imported when it runs:
  :mod:`.submitting` (submit, wait), :mod:`.viewing` (get, list), :mod:`.tailing` (tail),
  :mod:`.controlling` (stop, signal, pause, resume, release, purge)
- :mod:`.session` — connecting, and failing in one line
- :mod:`.connection` — where the server and the certificates come from; the channel
- :mod:`.client` — typed calls, each with a deadline, returning jobs as views
- :mod:`.view` — jobs as the commands show them: plain tuples, enums as words
- :mod:`.wire` — the client's conversions between views (or records) and wire messages
- :mod:`.follow` — copying a job's output to this terminal
- :mod:`.render` — everything a human reads, and the ``--json`` records
- :mod:`.filters` — the flag types that choose jobs (labels, times)
- :mod:`.errors`, :mod:`.rpc_errors` — the exit codes, and the table from gRPC status to them
"""
