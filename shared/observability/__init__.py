"""Logs, Prometheus metrics and health endpoints of the daemons."""
