"""Provider metadata for Airflow's provider discovery (entry point `apache_airflow_provider`).

Plain data, no Airflow import. The `[saturn]` config section declared here is read by the operators;
every option also works from the environment as AIRFLOW__SATURN__<OPTION>.
"""

from . import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-saturn",
        "name": "Saturn",
        "description": "Plan and run sweeps of deep-learning training jobs on GPU pools (Saturn's SPASE MILP).",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Saturn", "external-doc-url": "https://arxiv.org/abs/2309.01226", "tags": ["software"]}
        ],
        "operators": [{"integration-name": "Saturn", "python-modules": ["saturn_airflow.operators.planning", "saturn_airflow.operators.training"]}],
        "sensors": [{"integration-name": "Saturn", "python-modules": ["saturn_airflow.operators.drift"]}],
        "triggers": [{"integration-name": "Saturn", "python-modules": ["saturn_airflow.operators.triggers"]}],
        "config": {
            "saturn": {
                "description": "saturn-airflow provider settings.",
                "options": {
                    "store_url": {
                        "description": "Where plans, progress and checkpoints live: a local folder or an fsspec URL (s3://, gs://). Default: $SATURN_HOME, else $AIRFLOW_HOME/saturn.",
                        "version_added": "0.1.0", "type": "string", "example": "s3://bucket/saturn", "default": "",
                    },
                    "solver": {
                        "description": "Default MILP solver: highs or cbc.",
                        "version_added": "0.1.0", "type": "string", "example": "cbc", "default": "highs",
                    },
                    "time_limit": {
                        "description": "Default solver time limit in seconds.",
                        "version_added": "0.1.0", "type": "float", "example": "60", "default": "30",
                    },
                    "drift_threshold": {
                        "description": "Re-plan when the projected makespan moves past this fraction of the plan's...",
                        "version_added": "0.1.0", "type": "float", "example": "0.2", "default": "0.1",
                    },
                    "drift_min_s": {
                        "description": "...and past this many seconds.",
                        "version_added": "0.1.0", "type": "float", "example": "120", "default": "60",
                    },
                },
            }
        },
    }
