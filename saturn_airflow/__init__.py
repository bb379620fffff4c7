"""saturn-airflow engine: workload -> profile table -> plan IR -> execution, with no Airflow import."""

__version__ = "0.1.0"
