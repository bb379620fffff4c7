"""The profiler: cache keys, pruning, prediction, and real trials in fresh torchrun processes."""

from __future__ import annotations

import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.profile_table import Config, parse_profile_table
from saturn_airflow.profiling.profiler import (
    device_counts, dominance_filter, fastest_per_count, predict_runtime, profile_workload, speed_fields, trial_key)
from saturn_airflow.store.records import Store
from saturn_airflow.spec.workload import parse_workload

JOB = {"name": "lm", "model": "saturn_airflow.examples.models:gpt",
       "model_args": {"size": "tiny", "vocab": 256, "seq_len": 32},
       "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 32, "vocab": 256},
       "batch_size": 8, "steps": 50, "optimizer": {"name": "adamw", "lr": 1e-3}}


FAST = {"warmup": 1, "measure": 3, "measure_s": 0.2}  # tests check behaviour, not precision


def wl(**kw):
    return parse_workload({"name": "prof-test", "jobs": [JOB], **kw})


def test_cache_key_has_speed_fields_only():
    base = wl().jobs[0]
    same = [base.model_copy(update={"optimizer": base.optimizer.model_copy(update={"lr": 0.5})}),
            base.model_copy(update={"seed": 7, "steps": 9999, "name": "other"}),
            base.model_copy(update={"data_args": {**base.data_args, "slow_after_step": 5, "slow_step_s": 1.0}})]
    for j in same:
        assert speed_fields(j) == speed_fields(base)
    different = [base.model_copy(update={"batch_size": 16}),
                 base.model_copy(update={"model_args": {**base.model_args, "size": "small"}}),
                 base.model_copy(update={"data_args": {"seq_len": 16, "vocab": 256}}),
                 base.model_copy(update={"optimizer": base.optimizer.model_copy(update={"name": "sgd"})})]
    for j in different:
        assert speed_fields(j) != speed_fields(base)
    f = speed_fields(base)
    assert trial_key(f, "ddp", "1", 2, "cpu") != trial_key(f, "ddp", "1", 1, "cpu")
    assert trial_key(f, "ddp", "1", 2, "cpu") != trial_key(f, "fsdp", "1", 2, "cpu")
    assert trial_key(f, "ddp", "1", 2, "cpu") != trial_key(f, "ddp", "1", 2, "nvidia-h100")
    assert "torch" in trial_key(f, "ddp", "1", 2, "cpu")


def test_device_counts_and_prediction():
    assert device_counts(2) == [2, 1] and device_counts(8) == [8, 4, 2, 1] and device_counts(6) == [6, 4, 2, 1]
    r = {"step_s": 0.5, "startup_s": 4.0, "save_s": 0.2, "teardown_s": 1.0}
    assert predict_runtime(r, 100, ckpt_every_s=20.0) == pytest.approx(4.0 + 50.0 + 3 * 0.2 + 1.0)


def test_reductions_keep_what_can_win():
    cs = [Config(parallelism="single", gpus=1, runtime_s=100), Config(parallelism="ddp", gpus=2, runtime_s=60),
          Config(parallelism="fsdp", gpus=2, runtime_s=70), Config(parallelism="pipeline", gpus=2, runtime_s=120)]
    assert [(c.parallelism, c.gpus) for c in fastest_per_count(cs)] == [("single", 1), ("ddp", 2)]
    slow2 = cs[:1] + [Config(parallelism="ddp", gpus=2, runtime_s=150)]
    assert [c.parallelism for c in dominance_filter(slow2)] == ["single"]


@pytest.mark.distributed
def test_profiles_sweep_once_per_speed_group_then_from_cache(tmp_path):
    w = parse_workload({"name": "prof-test", "parallelisms": ["single", "ddp", "fsdp", "spilling"], "jobs": [JOB],
                        "grid": {"optimizer.lr": [1e-3, 3e-3]}})
    lines = []
    # confirm_within=100: ddp and fsdp on 2 devices always count as a close call here
    table = profile_workload(w, store=Store(str(tmp_path)), devices=[0, 1], progress=lines.append,
                             confirm_within=100.0, strategy="full", **FAST)
    st = table.profile_stats
    assert st["deduplicated_jobs"] == 1          # the two lrs share one profile
    assert st["trials_run"] == 3                 # ddp x2, fsdp x2 and single x1
    assert st["pruned_dominated"] == 2           # fsdp x1 and spilling x1: single fits there
    assert st["confirm_trials"] == 1             # the faster of ddp/fsdp x2, measured a second time
    repeated = [c for c in table.jobs[0].configs if c.gpus == 2]
    assert len(repeated) == 1 and "close call on 2 devices" in "\n".join(lines)
    assert len(table.jobs) == 2
    for jp in table.jobs:
        assert {(c.parallelism, c.gpus) for c in jp.configs} == {("single", 1), (repeated[0].parallelism, 2)}
        for c in jp.configs:
            assert c.runtime_s > c.step_s * 50 and c.startup_s > 0 and c.gpu_type == "cpu"
    parse_profile_table(table.to_json())        # the contract's validator accepts it
    again = profile_workload(w, store=Store(str(tmp_path)), devices=[0, 1], confirm_within=100.0, strategy="full",
                             **FAST)
    assert again.profile_stats["trials_run"] == 0 and again.profile_stats["cache_hits"] == 3
    assert again.profile_stats["confirm_trials"] == 0  # the cache holds the averaged, twice-measured result
    assert [c.runtime_s for c in again.jobs[0].configs] == [c.runtime_s for c in table.jobs[0].configs]
    try:
        from saturn_airflow.planner import plan_table
    except ImportError:
        return
    from saturn_airflow.spec.plan import check_plan

    check_plan(plan_table(table, time_limit=10), table)


@pytest.mark.distributed
def test_oom_is_infeasible_with_reason_and_prunes_fewer_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("SATURN_CPU_DEVICE_MEM_MB", "64")  # far below what a torch process holds: every knob OOMs
    lines = []
    with pytest.raises(SaturnInputError, match="lm"):
        profile_workload(wl(parallelisms=["fsdp"]), store=Store(str(tmp_path)), devices=[0, 1], progress=lines.append,
                         strategy="full", **FAST)
    text = "\n".join(lines)
    assert "fsdp x2 (run): oom" in text and "memory budget exceeded" in text
    assert "fsdp x1 (pruned): pruned: out of memory on 2 devices" in text


def test_close_calls_get_a_second_trial_of_the_winner_only():
    from saturn_airflow.profiling.profiler import Trial, close_calls

    def t(par, n, step, group="g", **extra):
        return Trial(group, None, par, n, {}, f"{par}{n}", result={"status": "ok", "step_s": step, **extra})

    pipe, ddp, fsdp = t("pipeline", 2, 0.090), t("ddp", 2, 0.100), t("fsdp", 2, 0.180)
    single, spill = t("single", 1, 0.100), t("spilling", 1, 0.300)
    other = t("ddp", 2, 0.2, group="h")
    assert close_calls([pipe, ddp, fsdp, single, spill, other], 0.15) == [pipe]   # 11% apart: repeat the winner
    assert close_calls([pipe, ddp], 0.05) == []                                    # outside the band
    assert close_calls([pipe, ddp], 0.0) == []                                     # disabled
    confirmed = t("pipeline", 2, 0.095, repeats=2)
    assert close_calls([confirmed, ddp], 0.15) == []                               # measured twice already


def test_merge_trials_averages_times_and_keeps_the_peak():
    from saturn_airflow.profiling.profiler import merge_trials

    a = {"status": "ok", "step_s": 0.08, "step_cpu_s": 0.07, "startup_s": 6.0, "peak_mem_bytes": 10, "samples": [0.08]}
    b = {"status": "ok", "step_s": 0.11, "step_cpu_s": 0.09, "startup_s": 5.0, "peak_mem_bytes": 12, "samples": [0.11]}
    m = merge_trials(a, b)
    assert m["step_s"] == pytest.approx(0.095) and m["step_cpu_s"] == pytest.approx(0.08)
    assert m["startup_s"] == pytest.approx(5.5) and m["peak_mem_bytes"] == 12
    assert m["samples"] == [0.08, 0.11] and m["repeats"] == 2
    third = merge_trials(m, {**b, "step_s": 0.11})
    assert third["step_s"] == pytest.approx((0.08 + 0.11 + 0.11) / 3) and third["repeats"] == 3


@pytest.mark.distributed
def test_guided_profile_measures_only_what_can_change_the_plan(tmp_path):
    """Two same-speed jobs on two devices: one device each is as good as any plan can be (no config on 2
    devices beats perfect scaling), so only the 1-device trial runs; the cache then answers everything."""
    w = parse_workload({"name": "prof-test", "parallelisms": ["single", "ddp", "fsdp"], "jobs": [JOB],
                        "grid": {"optimizer.lr": [1e-3, 3e-3]}})
    lines = []
    table = profile_workload(w, store=Store(str(tmp_path)), devices=[0, 1], progress=lines.append,
                             strategy="guided", **FAST)
    st = table.profile_stats
    assert st["trials_run"] == 1 and st["skipped_by_bound"] == 2  # single x1 run; ddp x2, fsdp x2 not
    assert {(c.parallelism, c.gpus) for jp in table.jobs for c in jp.configs} == {("single", 1)}
    assert "no trial can shorten the plan" in "\n".join(lines)
    again = profile_workload(w, store=Store(str(tmp_path)), devices=[0, 1], strategy="guided", **FAST)
    assert again.profile_stats["trials_run"] == 0 and again.profile_stats["cache_hits"] == 1
    with pytest.raises(SaturnInputError, match="profiling strategy"):
        profile_workload(w, store=Store(str(tmp_path)), devices=[0, 1], strategy="lazy")


@pytest.mark.distributed
def test_guided_profile_measures_each_jobs_own_parallelisms_when_jobs_share_a_profile(tmp_path):
    """Two jobs of one shape (one profile group): one allows single, the other only pipeline; the first's
    1-device trial must not stand in for the second, which has no config on 1 device."""
    w = parse_workload({"name": "prof-mixed", "jobs": [{**JOB, "parallelisms": ["single"]},
                                                       {**JOB, "name": "lm-pipe", "parallelisms": ["pipeline"]}]})
    table = profile_workload(w, store=Store(str(tmp_path)), devices=[0, 1], strategy="guided", **FAST)
    assert {(c.parallelism, c.gpus) for c in table.job("lm-pipe").configs} == {("pipeline", 2)}
    assert {c.parallelism for c in table.job("lm").configs} == {"single"}
