"""The store's former module name, kept so existing imports keep working; see store/records.py."""

from saturn_airflow.store.records import BY_HAND, PlanStore, ProgressStore, Store, default_store_url  # noqa: F401
