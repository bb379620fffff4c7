"""Persistence: records in a database (store/records.py, store/database.py), names in store/keys.py."""
