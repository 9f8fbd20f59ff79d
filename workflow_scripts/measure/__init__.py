"""Measuring: the timed compression stages, CPU/memory/GPU monitors, energy, noise (steal, other processes)
and the statistics behind every interval.
"""
