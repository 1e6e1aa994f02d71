"""The ``memory`` plugin (loaded by default): job records and output kept in this process.

:mod:`.jobs` holds the records, :mod:`.output` the output logs and their followers. Both
answer their provider hook last, so a durable store enabled beside them (``sqlite``,
``spool``) wins; they are what a library user gets without a state directory.
"""
