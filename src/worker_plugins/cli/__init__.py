"""The ``worker`` command line's built-in commands: run, plugins, job; the job-spec flags
they share (:mod:`.spec_options`), the values flags take (:mod:`.values`) and their exit
statuses (:mod:`.exit_status`)."""
