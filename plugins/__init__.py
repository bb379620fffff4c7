"""Airflow UI plugin of the saturn provider (installed as saturn_airflow.plugins)."""
