"""The ``spool`` plugin: every job's stdout and stderr in files under the state directory.

A byte offset of a stream is an offset in its file, so replay is a read of the file (page
cache, not the server's heap), any number of followers read at their own pace, and output
outlives the process. Layout, under ``STATE/output/<job id>/`` (directories 0700, files 0600):

- ``stdout``, ``stderr`` — the bytes, each at its own offset; a lost range is a hole.
- ``index`` — the order of arrival across the two streams and the ranges that were lost
  (:mod:`.index`), so a replay of both streams interleaves exactly as the live output did.

Each file is made when first needed (a silent job has no directory; one that writes only
stdout has no index, its file being its order); a missing file reads as empty.

Modules, one job each:

- :mod:`.config` — the ``[plugins.spool]`` section.
- :mod:`.index` — the index file's format and the scan that rebuilds a job's state from its files.
- :mod:`.layout` — job ids as paths (validated first), private directories and files.
- :mod:`.joblog` — one job's log: writing, losses (disk full, quota), what followers see.
- :mod:`.follower` — a reader of one job's files at its own pace.
- :mod:`.store` — :class:`~.store.SpoolOutputStore`, the ``OutputStore`` the engine feeds.
- :mod:`.plugin` — the hook implementations.
"""
