"""The ``worker`` command line's built-in commands: run, plugins, job."""
