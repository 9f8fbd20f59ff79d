"""Results gathered: the summary tables, the paper's claims checked, the end-of-run summary, and the
discovery of every device's results.
"""
