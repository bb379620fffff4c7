"""Provider metadata for Airflow's provider discovery (entry point `apache_airflow_provider`).

Plain data, no Airflow import. The `[saturn]` config section comes from
`settings.OPTIONS`; every option also works from the environment as AIRFLOW__SATURN__<OPTION>.
"""

from saturn_airflow import __version__, settings


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
        "config": {"saturn": settings.provider_config()},
    }
