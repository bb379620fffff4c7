"""Provider metadata for Airflow's provider discovery (entry point `apache_airflow_provider`).

Plain data, no Airflow import. The `[saturn]` config section declared here is read by the operators;
every option also works from the environment as AIRFLOW__SATURN__<OPTION>.
"""

from saturn_airflow import __version__


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
                        "description": "The store folder (local path or fsspec URL): checkpoints, and the SQLite record database when store_db is empty. Default: $SATURN_HOME, else $AIRFLOW_HOME/saturn.",
                        "version_added": "0.1.0", "type": "string", "example": "s3://bucket/saturn", "default": "",
                    },
                    "store_db": {
                        "description": "SQLAlchemy URL of the record database (plans, progress, leases, claims, events). Empty: a SQLite file saturn.db in store_url (one machine). A cluster uses PostgreSQL.",
                        "version_added": "0.1.0", "type": "string", "example": "postgresql://saturn:pw@db-host:5432/saturn", "default": "",
                    },
                    "store_conn_id": {
                        "description": "An Airflow connection holding the record database (used when store_db is empty).",
                        "version_added": "0.1.0", "type": "string", "example": "saturn_db", "default": "",
                    },
                    "checkpoint_url": {
                        "description": "Folder or fsspec URL every node can reach, for the jobs' checkpoints (torch.distributed.checkpoint). Empty: <store_url>/checkpoints.",
                        "version_added": "0.1.0", "type": "string", "example": "s3://bucket/saturn/checkpoints", "default": "",
                    },
                    "checkpoint_every_s": {
                        "description": "A running job checkpoints this often (seconds): the most a killed worker or node loses of it.",
                        "version_added": "0.1.0", "type": "float", "example": "300", "default": "60",
                    },
                    "lease_ttl_s": {
                        "description": "A device or job lease expires when its holder has not heartbeated for this long (seconds); one waiter then breaks it.",
                        "version_added": "0.1.0", "type": "float", "example": "120", "default": "60",
                    },
                    "node": {
                        "description": "The node this worker serves (set per worker, with the worker consuming the queue of the same name). Empty: not pinned.",
                        "version_added": "0.1.0", "type": "string", "example": "gpu-a", "default": "",
                    },
                    "device_ids": {
                        "description": "The device ids of this worker's node: CUDA ordinals as the worker sees them, or CPU core indexes; comma-separated, ranges allowed. Plan device i runs on the i-th. Empty: every device of the machine.",
                        "version_added": "0.1.0", "type": "string", "example": "0-3", "default": "",
                    },
                    "nodes": {
                        "description": "The cluster's node names that have a worker each: the planning DAG profiles node N in queue N. Empty: one profile task per workload node on the default queue.",
                        "version_added": "0.1.0", "type": "string", "example": "gpu-a,gpu-b", "default": "",
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
                    "drift_poll_s": {
                        "description": "How often the drift trigger reads the progress records (seconds).",
                        "version_added": "0.1.0", "type": "float", "example": "10", "default": "5",
                    },
                    "restart_overhead_s": {
                        "description": "What a preempted job pays to restart (process launch, checkpoint load), in seconds.",
                        "version_added": "0.1.0", "type": "float", "example": "30", "default": "10",
                    },
                    "min_preempt_gain": {
                        "description": "A re-plan preempts running jobs only when that shortens the makespan by this fraction.",
                        "version_added": "0.1.0", "type": "float", "example": "0.1", "default": "0.05",
                    },
                    "max_replans": {
                        "description": "Re-plans allowed in one plan lineage.",
                        "version_added": "0.1.0", "type": "integer", "example": "2", "default": "5",
                    },
                    "pool_prefix": {
                        "description": "The pool of cluster node N is <pool_prefix>N (one slot per GPU).",
                        "version_added": "0.1.0", "type": "string", "example": "gpu_", "default": "saturn_",
                    },
                    "manage_pools": {
                        "description": "Create/resize the node pools from the planning DAG (REST API, connection saturn_api).",
                        "version_added": "0.1.0", "type": "boolean", "example": "false", "default": "true",
                    },
                    "lease_timeout_s": {
                        "description": "How long a training task waits for its devices' leases (seconds).",
                        "version_added": "0.1.0", "type": "float", "example": "7200", "default": "3600",
                    },
                    "render_max_plans": {
                        "description": "The factory DAG file renders the newest N plan versions.",
                        "version_added": "0.1.0", "type": "integer", "example": "50", "default": "200",
                    },
                },
            }
        },
    }
