"""Airflow operators, sensors and triggers of the saturn provider (installed as saturn_airflow.operators)."""
