"""Schedulers: all Slurm command text, as pure builders and parsers of real Slurm output: `slurm`
(a job: submit, status, cancel, lookups) and `slurm_site` (the site: checks, scaffolding, estimates,
usage); the embedded local runner is `aifactory_cli.backends.localrun`."""
