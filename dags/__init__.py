"""DAG files: point dags_folder here, or copy them (installed as saturn_airflow.dags)."""
