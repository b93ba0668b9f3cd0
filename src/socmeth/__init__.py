"""socmeth: a distributed cron scheduler with a web UI."""

__version__ = "0.1.0"
