"""Queue interface and implementations."""
