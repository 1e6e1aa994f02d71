"""The built-in plugins. Each is an ordinary plugin, registered through the ``worker.plugins``
entry-point group exactly as a third party's would be."""
