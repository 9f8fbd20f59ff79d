"""The deployment decision: feasible candidates under the budgets, ties within measurement noise, the
rendered answer, and the ``edgeptq`` command line.
"""
