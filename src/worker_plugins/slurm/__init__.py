"""The ``slurm`` executor plugin: jobs run as Slurm batch jobs (see :mod:`.plugin`)."""
