"""Jepsen-style checks of the delivery promise: a recording sink, a harness, a checker.

python -m tests.chaos --seed 7 --duration 90 --messages 3000
"""
