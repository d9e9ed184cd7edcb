"""Jobs built from shared steps: resolve inputs -> extract features -> compute tables -> write.

:mod:`ncprobe.api` composes them into ``evaluate``, ``collapse`` and ``layers``; the CLI calls the
API. Errors about parameters name the Python parameters (:class:`~ncprobe.errors.ParameterError`);
the CLI renders them as its flags.
"""
