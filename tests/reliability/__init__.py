"""Reliability tests of issue 7: scale-out on RQ workers, crash safety, fault soak, quota exhaustion.

Worker processes and the services they need come from ``tests.reliability.processes``.
"""
