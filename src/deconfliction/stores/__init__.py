"""Persistence behind the Store protocol: SQLite (embedded default) and PostgreSQL."""
