"""aifactory: one portable job file, run on the EuroHPC supercomputers over SSH and Slurm."""

__version__ = "0.1.0"
