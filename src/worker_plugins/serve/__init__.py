"""``worker serve``: one engine from the configuration, every enabled transport in front of it.

- :mod:`.command` — the click command: flags and the config file into one configuration,
  serve's default plugins, the engine, and the one-line errors.
- :mod:`.transport` — what a transport is (the objects the ``serve_transports`` hook returns).
- :mod:`.running` — the event loop every transport shares, signals, the shutdown order.
- :mod:`.notify` — ``READY=1`` / ``STOPPING=1`` for a ``Type=notify`` systemd service.
- :mod:`.report` — the start-up summary, the warnings and status lines (JSON records with
  ``--log-format json``).
- :mod:`.job_log` — the observer serve adds to its engine: a ``worker.jobs`` line per event.
"""
