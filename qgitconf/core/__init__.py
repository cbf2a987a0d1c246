"""Pure rules and formats: no I/O, no subprocesses, no dulwich."""
