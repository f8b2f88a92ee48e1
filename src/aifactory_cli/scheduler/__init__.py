"""Schedulers: pure command builders and parsers of real scheduler output (`slurm`), and the
embedded local runner (`aifactory_cli.backends.localrun`)."""
