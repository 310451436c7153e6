"""Telemetry: Prometheus metrics and log formatting.

Never does: decisions; it only counts and writes what others report.
"""
