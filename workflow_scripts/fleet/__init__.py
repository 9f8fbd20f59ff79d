"""Running elsewhere: job placement (local, SLURM partitions per device), the on-device runner for boards
without Snakemake, and GPU validation of a TensorRT install.
"""
