"""[saturn] settings: environment first, defaults otherwise, no Airflow import needed."""

import subprocess
import sys

from saturn_airflow import settings
from saturn_airflow.provider_info import get_provider_info


def test_env_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW__SATURN__DRIFT_MIN_S", raising=False)
    assert settings.drift_min_s() == 60.0 and settings.drift_threshold() == 0.1
    monkeypatch.setenv("AIRFLOW__SATURN__DRIFT_MIN_S", "15")
    monkeypatch.setenv("AIRFLOW__SATURN__POOL_PREFIX", "gpu_")
    assert settings.drift_min_s() == 15.0 and settings.pool_name("n0") == "gpu_n0"
    monkeypatch.delenv("SATURN_HOME", raising=False)
    monkeypatch.setenv("AIRFLOW__SATURN__STORE_URL", str(tmp_path))
    assert settings.store_url() == str(tmp_path)


def test_every_default_is_declared_in_the_provider_config():
    declared = get_provider_info()["config"]["saturn"]["options"]
    assert set(settings.DEFAULTS) <= set(declared)
    for k, v in settings.DEFAULTS.items():
        if k in declared and declared[k]["default"] not in ("",):
            assert str(declared[k]["default"]) == v, k


def test_reading_settings_does_not_import_airflow():
    code = "from saturn_airflow import settings; from saturn_airflow.control import drift, replan; from saturn_airflow.execution import leases; from saturn_airflow.tasks import render, planning, training, drift as drift_steps, events, pools; settings.solver(); import sys; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
