"""Store interface and implementations."""
