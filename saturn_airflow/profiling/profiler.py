"""The empirical profiler: real trials of every (job, parallelism, device count), cached, pruned.

Each trial is a fresh torchrun launch on exactly the devices it was given, running
`Parallelism.search` (knob tuning, warm-up steps, median of measured steps, a checkpoint round
trip). Predicted runtime of a job in a config = measured start-up + steps x step time + its
checkpoint saves + teardown, the whole wall time `run_job` will take.

Cache: `<store>/profiles/<key>.json`, the key being everything that changes speed (model and its
arguments, batch size, input shapes and dtypes, loss, optimizer type, parallelism and its version,
device count and type, torch version) and nothing else, so jobs differing only in learning rate,
seed or step count are profiled once.
Pruning: once a parallelism runs out of memory on k devices, fewer devices of it are not tried;
a parallelism `dominated_by` another (spilling by single) is tried only where that one fails; and
the output keeps, per job and device count, the fastest config (reduce="per-count", Saturn's
reduction; "dominance" also drops configs beaten by one on fewer devices; "none" keeps all).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.profile_table import Config, JobProfile, ProfileTable, undominated
from saturn_airflow.store.records import Store
from saturn_airflow.spec.workload import JobSpec, Workload, evaluation_steps

PROFILER_VERSION = "2"
# Measurement defaults; the environment may override them (e.g. short trials for end-to-end tests).
DEFAULT_WARMUP = int(os.environ.get("SATURN_PROFILE_WARMUP", 3))
DEFAULT_MEASURE = int(os.environ.get("SATURN_PROFILE_MEASURE", 5))  # at least this many measured steps...
DEFAULT_MEASURE_S = float(os.environ.get("SATURN_PROFILE_MEASURE_S", 3.0))  # ...and this many seconds of them
DEFAULT_TRIAL_TIMEOUT_S = float(os.environ.get("SATURN_PROFILE_TRIAL_TIMEOUT_S", 300.0))
# ...unless the median step time is known to this fraction sooner (0: always measure_s); more steps would
# not change the prediction, whose error is launch-to-launch variation (docs/benchmarks-torch.md)
DEFAULT_PRECISION = float(os.environ.get("SATURN_PROFILE_PRECISION", 0.02))
# Close calls: when the runner-up on the same device count is within this fraction of the fastest, the
# fastest gets a second trial (fresh processes) and the two are averaged. Picking the minimum of noisy
# trials favours the one that got lucky (measured here: a 2-rank gloo pipeline ran one trial at 0.079
# s/step and the runs after it at 0.096-0.106), so the winner's estimate is biased low; 0 disables.
DEFAULT_CONFIRM_WITHIN = float(os.environ.get("SATURN_PROFILE_CONFIRM_WITHIN", 0.15))


# ---- keys ---------------------------------------------------------------------------------------

def input_signature(job: JobSpec) -> list:
    """Shapes and dtypes of step 0's global batch (what the data arguments mean for speed)."""
    from saturn_airflow.parallelisms.base import global_batch

    def sig(t):
        if isinstance(t, (tuple, list)):
            return [sig(x) for x in t]
        return [list(t.shape), str(t.dtype)]

    try:
        batch = global_batch(job, 0)
    except SaturnInputError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's factory failed on its own arguments
        raise SaturnInputError(f"job {job.name!r}: the data factory {job.data!r} failed on step 0: "
                               f"{type(e).__name__}: {e}") from None
    return sig(batch)


def speed_fields(job: JobSpec, signature: Optional[list] = None) -> dict:
    """The job's fields that change how fast a step runs (not lr, seed, steps, name)."""
    return {"model": job.model, "model_args": job.model_args, "batch_size": job.batch_size, "data": job.data,
            "inputs": signature if signature is not None else input_signature(job), "loss": job.loss,
            "optimizer": job.optimizer.name}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def trial_key(fields: dict, parallelism: str, version: str, n: int, device_type: str) -> dict:
    import torch

    key = {**fields, "parallelism": parallelism, "parallelism_version": version, "devices": n,
           "device_type": device_type, "torch": torch.__version__, "profiler": PROFILER_VERSION}
    if os.environ.get("SATURN_CPU_DEVICE_MEM_MB") and device_type == "cpu":
        key["cpu_device_mem_mb"] = os.environ["SATURN_CPU_DEVICE_MEM_MB"]
    return key


def device_counts(n: int) -> list[int]:
    """Counts worth a trial on n devices: powers of two and n itself, largest first."""
    c, out = 1, set()
    while c <= n:
        out.add(c)
        c *= 2
    out.add(n)
    return sorted(out, reverse=True)


# ---- prediction ---------------------------------------------------------------------------------

def predict_runtime(res: dict, steps: int, ckpt_every_s: Optional[float] = None) -> float:
    """Whole-job wall seconds from a trial: start-up + steps x step + checkpoint saves + teardown."""
    from saturn_airflow.execution.checkpoint import DEFAULT_EVERY_S

    every = DEFAULT_EVERY_S if ckpt_every_s is None else ckpt_every_s
    train = steps * res["step_s"]
    saves = 1 + (int(train // every) if every else 0)
    return res.get("startup_s", 0.0) + train + saves * res.get("save_s", 0.0) + res.get("teardown_s", 0.0)


# ---- trials -------------------------------------------------------------------------------------

@dataclass
class Trial:
    group: str
    job: JobSpec
    parallelism: str
    n: int
    key: dict
    key_id: str
    result: Optional[dict] = None
    source: str = ""  # "run" | "cache" | "pruned" | "static"


def run_trial(workload_path: str, job: str, parallelism: str, device_ids: list[int], *, warmup: int = DEFAULT_WARMUP,
              measure: int = DEFAULT_MEASURE, measure_s: float = DEFAULT_MEASURE_S, precision: float = 0.0,
              timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S, log: Callable[[str], None] = lambda s: None) -> dict:
    """One trial in fresh torchrun processes; an OOM on a knob candidate relaunches from the next one."""
    from saturn_airflow.execution.launch import launch_runner

    start, attempts, t0 = 0, 0, time.time()
    while True:
        attempts += 1
        rdir = tempfile.mkdtemp(prefix="saturn-trial-")
        try:
            out = launch_runner(["--workload", workload_path, "--job", job, "--parallelism", parallelism,
                                 "--mode", "trial", "--warmup", str(warmup), "--measure", str(measure),
                                 "--measure-s", str(measure_s), "--precision", str(precision),
                                 "--knob-start", str(start)], device_ids, result_dir=rdir, log=log,
                                timeout_s=timeout_s)
            cand = None
            if os.path.exists(os.path.join(rdir, "candidate.json")):
                with open(os.path.join(rdir, "candidate.json")) as f:
                    cand = json.load(f)
        finally:
            shutil.rmtree(rdir, ignore_errors=True)
        res = out.result
        if res and res.get("status") == "ok" and out.returncode == 0:
            res["startup_s"] = ((res["t_first_build"] - res["t_launch"]) + res.get("build_s", 0.0)
                                + res.get("first_steps_extra_s", 0.0))
            res["teardown_s"] = max(0.0, out.t_exit - res["t_end"])
            res.update(attempts=attempts, trial_wall_s=time.time() - t0)
            for k in ("t_first_build", "t_launch", "t_end"):
                res.pop(k, None)
            return res
        if res and res.get("status") == "infeasible":
            return {"status": "infeasible", "reason": res.get("reason"), "attempts": attempts,
                    "trial_wall_s": time.time() - t0}
        root = out.root_cause() or {}
        oom = bool(root.get("oom")) or (out.sigkilled and not root)
        if out.timed_out:
            return {"status": "error", "reason": f"trial timed out after {timeout_s:.0f}s", "attempts": attempts,
                    "trial_wall_s": time.time() - t0}
        if oom and cand is not None:
            start = cand["i"] + 1  # this knob setting does not fit: try the next (more frugal) one
            last_reason = f"out of memory with knobs {cand['knobs']}: {out.message()}"
            if attempts > 8:
                return {"status": "oom", "reason": last_reason, "attempts": attempts}
            probe = _candidate_count(workload_path, job, parallelism, len(device_ids))
            if probe is not None and start >= probe:
                return {"status": "oom", "reason": last_reason, "attempts": attempts,
                        "trial_wall_s": time.time() - t0}
            continue
        return {"status": "oom" if oom else "error", "reason": out.message(), "attempts": attempts,
                "trial_wall_s": time.time() - t0}


def _candidate_count(workload_path: str, job: str, parallelism: str, n: int) -> Optional[int]:
    """How many knob candidates the parallelism offers on n devices of this kind (no process group needed)."""
    try:
        import torch

        from saturn_airflow.execution.devices import Devices, device_kind
        from saturn_airflow.parallelisms import get_parallelism
        from saturn_airflow.execution.runner import _load_workload

        wl = _load_workload(workload_path)
        kind = device_kind()
        dev = Devices(ids=list(range(n)), kind=kind, world_size=n, device=torch.device(kind))
        return len(get_parallelism(parallelism).knob_candidates(wl.job(job), dev))
    except Exception:  # noqa: BLE001 - the relaunch loop then ends on the runner's own "none left" answer
        return None


# ---- the scheduler ------------------------------------------------------------------------------

@dataclass
class ProfileStats:
    trials_run: int = 0
    launches: int = 0
    cache_hits: int = 0
    confirm_trials: int = 0
    deduplicated_jobs: int = 0
    pruned_oom: int = 0
    pruned_dominated: int = 0
    static_infeasible: int = 0
    configs_dropped_dominated: int = 0
    skipped_by_bound: int = 0
    wall_s: float = 0.0
    trial_device_s: float = 0.0
    trials: list = field(default_factory=list)


STRATEGIES = ("guided", "full")
GUIDED_ROUNDS = 6  # rounds of "which trials could change the plan" before measuring the rest outright


def profile_workload(workload: Workload, *, store: Optional[Store] = None, devices: Optional[list[int]] = None,
                     progress: Optional[Callable[[str], None]] = None, jobs: Optional[list[str]] = None,
                     use_cache: bool = True, warmup: int = DEFAULT_WARMUP, measure: int = DEFAULT_MEASURE,
                     measure_s: float = DEFAULT_MEASURE_S, precision: float = DEFAULT_PRECISION,
                     trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S, reduce: str = "per-count",
                     ckpt_every_s: Optional[float] = None, confirm_within: float = DEFAULT_CONFIRM_WITHIN,
                     strategy: Optional[str] = None, tolerance: Optional[float] = None) -> ProfileTable:
    """Profile `workload`'s jobs (or those named) on `devices` (default: all of this machine's) and
    return the profile table; `table.profile_stats` says what it cost and what the cache and pruning saved.

    strategy "full" measures every config (largest device count first, so an out-of-memory prunes the
    smaller counts); "guided" measures each job's smallest device count that fits, then only the larger
    counts that could still shorten the plan by more than `tolerance` and more than they cost
    (profiling/worth.py); configs never measured are absent from the table.
    """
    from saturn_airflow.execution.devices import available_devices, device_type_name
    from saturn_airflow.parallelisms import get_parallelism

    from saturn_airflow import settings

    strategy = settings.profile_strategy() if strategy is None else strategy
    if strategy not in STRATEGIES:
        raise SaturnInputError(f"unknown profiling strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    t_start = time.time()
    say = progress or (lambda s: None)
    store = store or Store()
    devices = list(devices if devices is not None else available_devices())
    if not devices:
        raise SaturnInputError("no devices to profile on")
    dtype = device_type_name()
    max_node = max(n.gpus for n in workload.cluster.nodes)
    n_max = min(len(devices), max_node)
    selected = [workload.job(n) for n in jobs] if jobs else list(workload.jobs)
    from saturn_airflow.parallelisms.base import check_factories

    for j in selected:  # a wrong import path is the user's input, named before any trial starts
        check_factories(j)
    stats = ProfileStats()
    pars = {}
    for j in selected:
        for p in workload.parallelisms_for(j):
            if p not in pars:
                pars[p] = get_parallelism(p)

    # one trial set per group of jobs that run at the same speed
    groups: dict[str, tuple[JobSpec, dict, list[str]]] = {}
    job_group: dict[str, str] = {}
    for j in selected:
        f = speed_fields(j)
        gid = _digest(f)
        job_group[j.name] = gid
        if gid in groups:
            groups[gid][2].extend(p for p in workload.parallelisms_for(j) if p not in groups[gid][2])
            stats.deduplicated_jobs += 1
        else:
            groups[gid] = (j, f, list(workload.parallelisms_for(j)))

    trials: dict[tuple, Trial] = {}
    static: dict[tuple, str] = {}
    for gid, (rep, f, plist) in groups.items():
        for p in plist:
            par = pars[p]
            for n in device_counts(n_max):
                reason = par.check(rep, n)
                if reason:
                    static[(gid, p, n)] = reason
                    stats.static_infeasible += 1
                    continue
                key = trial_key(f, p, par.version, n, dtype)
                trials[(gid, p, n)] = Trial(gid, rep, p, n, key, _digest(key))

    folder = tempfile.mkdtemp(prefix="saturn-profile-")
    wpath = os.path.join(folder, "workload.json")
    with open(wpath, "w") as fh:
        json.dump(workload.model_dump(mode="json"), fh)

    def label(t: Trial) -> str:
        return f"{t.job.name} {t.parallelism} x{t.n}"

    def launched(t: Trial, result: dict, source: str) -> None:
        """Account for one trial (a launch, or a cache hit/pruning when source says so)."""
        if source in ("run", "confirm"):
            stats.launches += result.get("attempts", 1)
            stats.trial_device_s += result.get("trial_wall_s", 0.0) * t.n
        stats.trials.append({"job": t.job.name, "parallelism": t.parallelism, "devices": t.n, "source": source,
                             "status": result.get("status"), "step_s": result.get("step_s"),
                             "reason": result.get("reason"), "trial_wall_s": result.get("trial_wall_s")})

    def remember(t: Trial) -> None:
        if use_cache and t.result["status"] in ("ok", "infeasible", "oom"):  # errors may be transient
            store.write_json(f"profiles/{t.key_id}.json", {"key": t.key, "result": t.result, "at": time.time()})

    def resolve(t: Trial, result: dict, source: str) -> None:
        t.result, t.source = result, source
        if source == "run":
            stats.trials_run += 1
            remember(t)
        what = (f"{result['step_s']:.4f} s/step knobs {result.get('knobs')}" if result["status"] == "ok"
                else f"{result['status']}: {result.get('reason')}")
        say(f"[profile] {label(t)} ({source}): {what}")
        launched(t, result, source)

    def blocker(t: Trial, batch: set) -> Optional[str]:
        """'wait' while an earlier trial of this batch decides this one; a reason string if it is pruned;
        None if ready."""
        for n2 in device_counts(n_max):
            if n2 <= t.n:
                break
            prev = trials.get((t.group, t.parallelism, n2))
            if prev is None or (prev.result is None and id(prev) not in batch):
                continue
            if prev.result is None:
                return "wait"
            if prev.result["status"] == "oom":
                return f"pruned: out of memory on {n2} devices"
        dom = pars[t.parallelism].dominated_by
        if dom and dom in groups[t.group][2]:
            other = trials.get((t.group, dom, t.n))
            if other is not None:
                if other.result is None:
                    return "wait" if id(other) in batch else None
                if other.result["status"] == "ok":
                    return f"pruned: {dom} fits on {t.n} devices and {t.parallelism} cannot beat it there"
        return None

    def from_cache(t: Trial) -> bool:
        if not use_cache:
            return False
        hit = store.read_json(f"profiles/{t.key_id}.json")
        if hit and hit.get("key") == t.key:
            stats.cache_hits += 1
            resolve(t, hit["result"], "cache")
            return True
        return False

    def run_batch(batch_trials: list[Trial]) -> None:
        """Resolve these trials: from the cache, by pruning, or by running them, as many at once as fit
        on disjoint devices (largest first)."""
        pending = [t for t in batch_trials if t.result is None]
        batch = {id(t) for t in pending}
        free = list(devices)
        done_q: "queue.Queue[tuple[Trial, dict, list[int]]]" = queue.Queue()
        running = 0
        while pending or running:
            progressed = True
            while progressed:
                progressed = False
                for t in list(pending):
                    if from_cache(t):
                        pending.remove(t)
                        progressed = True
                        continue
                    b = blocker(t, batch)
                    if b and b != "wait":
                        pending.remove(t)
                        if "out of memory" in b:
                            stats.pruned_oom += 1
                        else:
                            stats.pruned_dominated += 1
                        resolve(t, {"status": "pruned", "reason": b.removeprefix("pruned: ")}, "pruned")
                        progressed = True
            ready = sorted((t for t in pending if blocker(t, batch) is None), key=lambda t: -t.n)
            for t in ready:
                if t.n > len(free):
                    continue
                ids, free = free[:t.n], free[t.n:]
                pending.remove(t)
                running += 1
                say(f"[profile] {label(t)}: trial on devices {ids}")

                def work(t=t, ids=ids):
                    try:
                        r = run_trial(wpath, t.job.name, t.parallelism, ids, warmup=warmup, measure=measure,
                                      measure_s=measure_s, precision=precision, timeout_s=trial_timeout_s)
                    except Exception as e:  # noqa: BLE001 - a broken trial is an infeasible config, not a crash
                        r = {"status": "error", "reason": f"{type(e).__name__}: {e}"}
                    done_q.put((t, r, ids))

                threading.Thread(target=work, daemon=True).start()
            if running == 0:
                if pending:  # only "wait"s on nothing running: cannot happen unless a cycle; fail loudly
                    raise RuntimeError(f"profiler stuck with {len(pending)} trials waiting")
                break
            t, r, ids = done_q.get()
            running -= 1
            free = sorted(free + ids)
            resolve(t, r, "run")

    def confirm_close_calls() -> None:
        for t in close_calls(trials.values(), confirm_within):
            say(f"[profile] {label(t)}: close call on {t.n} devices, second trial on devices {devices[:t.n]}")
            r2 = run_trial(wpath, t.job.name, t.parallelism, devices[:t.n], warmup=warmup, measure=measure,
                           measure_s=measure_s, precision=precision, timeout_s=trial_timeout_s)
            stats.confirm_trials += 1
            launched(t, r2, "confirm")
            if r2.get("status") != "ok" or r2.get("knobs") != t.result.get("knobs"):
                say(f"[profile] {label(t)}: second trial not comparable ({r2.get('status')}), keeping the first")
                continue
            first = t.result["step_s"]
            t.result = merge_trials(t.result, r2)
            say(f"[profile] {label(t)}: {first:.4f} and {r2['step_s']:.4f} s/step -> {t.result['step_s']:.4f}")
            remember(t)

    node_types = {n.gpu_type for n in workload.cluster.nodes}
    gpu_type = dtype if dtype in node_types else None

    def table_of(strict: bool) -> Optional[ProfileTable]:
        """The table of what is measured so far (None while some job has no config, unless strict)."""
        out_jobs = []
        for j in selected:
            gid = job_group[j.name]
            configs = []
            reasons = []
            for p in workload.parallelisms_for(j):
                for n in device_counts(n_max):
                    t = trials.get((gid, p, n))
                    if t is None:
                        if (gid, p, n) in static:
                            reasons.append(f"{p} x{n}: {static[(gid, p, n)]}")
                        continue
                    r = t.result or {}
                    if r.get("status") != "ok":
                        if t.result is not None:
                            reasons.append(f"{p} x{n}: {r.get('reason')}")
                        continue
                    configs.append(Config(parallelism=p, gpus=n, runtime_s=round(predict_runtime(r, j.steps + evaluation_steps(j), ckpt_every_s), 3),
                                          knobs=r.get("knobs") or {}, gpu_type=gpu_type, step_s=r["step_s"],
                                          step_cpu_s=r.get("step_cpu_s"), startup_s=round(r.get("startup_s", 0.0), 3),
                                          save_s=round(r.get("save_s", 0.0), 3), load_s=round(r.get("load_s", 0.0), 3),
                                          teardown_s=round(r.get("teardown_s", 0.0), 3),
                                          # the trial's warm-up (its first `warmup` steps): the drift watch's
                                          # rate never counts a launch's steps this early
                                          warmup_s=round(warmup * r["step_s"] + r.get("first_steps_extra_s", 0.0), 3),
                                          peak_mem_mb=round(r.get("peak_mem_bytes", 0) / 2**20, 1), profile_key=t.key_id))
            if not configs:
                if not strict:
                    return None
                raise SaturnInputError(f"job {j.name!r}: no parallelism runs on these devices ({'; '.join(reasons[:4])})")
            if reduce != "none" and strict:
                kept = fastest_per_count(configs) if reduce == "per-count" else dominance_filter(configs)
                stats.configs_dropped_dominated += len(configs) - len(kept)
                configs = kept
            out_jobs.append(JobProfile(name=j.name, configs=configs))
        return ProfileTable(cluster=workload.cluster, jobs=out_jobs)

    try:
        if strategy == "full":
            run_batch(list(trials.values()))
        else:
            _guided(workload, selected, groups, job_group, trials, run_batch, from_cache, table_of, say, stats,
                    n_max, len(devices), ckpt_every_s, tolerance)
        confirm_close_calls()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    table = table_of(strict=True)
    stats.wall_s = time.time() - t_start
    table.profile_stats = {**stats.__dict__, "strategy": strategy, "precision": precision}
    say(f"[profile] done in {stats.wall_s:.1f}s: {stats.trials_run} trials run (+{stats.confirm_trials} close-call "
        f"repeats), {stats.cache_hits} cached, "
        f"{stats.pruned_oom} pruned after OOM, {stats.pruned_dominated} pruned as dominated, "
        f"{stats.skipped_by_bound} not worth measuring, {stats.deduplicated_jobs} jobs shared another's profile")
    return table


def _guided(workload, selected, groups, job_group, trials, run_batch, from_cache, table_of, say, stats, n_max,
            n_devices, ckpt_every_s, tolerance) -> None:
    """The guided strategy: cached results first (free), each group's smallest fitting device count,
    then the larger counts that profiling/worth.py finds could still change the plan."""
    from saturn_airflow import settings
    from saturn_airflow.profiling.worth import decide

    tol = settings.gap_tolerance() if tolerance is None else tolerance
    for t in trials.values():
        if t.result is None:
            from_cache(t)

    def job_ok(j: JobSpec) -> bool:
        """A job has a measured config among its own parallelisms (a group's jobs may allow different ones)."""
        own = workload.parallelisms_for(j)
        return any(t.group == job_group[j.name] and t.parallelism in own and t.result
                   and t.result.get("status") == "ok" for t in trials.values())

    def ok(gid: str) -> bool:
        return all(job_ok(j) for j in selected if job_group[j.name] == gid)

    def untried(gid: str, n: Optional[int] = None) -> list[Trial]:
        return [t for t in trials.values() if t.group == gid and t.result is None and (n is None or t.n == n)]

    # each group's smallest device count that fits
    while True:
        batch = []
        for gid in groups:
            if ok(gid):
                # a cached fit: finish its count (pruning is not cached) so the bound below can use it
                n_ok = min(t.n for t in trials.values() if t.group == gid and t.result and t.result.get("status") == "ok")
                batch += untried(gid, n_ok)
                continue
            wanted = {p for j in selected if job_group[j.name] == gid and not job_ok(j) for p in workload.parallelisms_for(j)}
            cand = [t for t in untried(gid) if t.parallelism in wanted]
            counts = sorted({t.n for t in cand})
            if counts:
                batch += [t for t in cand if t.n == counts[0]]
        if not batch:
            break
        run_batch(batch)

    def bounding_counts(gid: str) -> set[int]:
        """Device counts whose every config is resolved, one ran, and none was limited by memory (out of
        memory, or a relaunch on a memory-saving knob): the basis of the no-superlinear-speedup bound."""
        out = set()
        for n in {t.n for t in trials.values() if t.group == gid}:
            ts = [t for t in trials.values() if t.group == gid and t.n == n]
            if any(t.result is None for t in ts):
                continue
            if any(t.result.get("status") == "oom" or t.result.get("attempts", 1) > 1
                   or "out of memory" in str(t.result.get("reason") or "") for t in ts):
                continue
            if any(t.result.get("status") == "ok" for t in ts):
                out.add(n)
        return out

    walls = [r.get("trial_wall_s") for r in stats.trials if r.get("trial_wall_s")]
    steps = {j.name: j.steps + evaluation_steps(j) for j in selected}  # held-out evaluation costs steps too

    def cost(gid: str, n: int) -> float:
        """Sweep seconds lost to measuring (gid, n): each trial holds n of the devices for a trial's time."""
        wall = sorted(walls)[len(walls) // 2] if walls else 15.0
        return len(untried(gid, n)) * wall * n / n_devices

    for _ in range(GUIDED_ROUNDS):
        measured = table_of(strict=False)
        open_counts = {j.name: sorted({t.n for t in untried(job_group[j.name])}) for j in selected}
        if measured is None or not any(open_counts.values()):
            break
        resolved = {j.name: bounding_counts(job_group[j.name]) for j in selected}
        verdict = decide(measured, open_counts, resolved, steps, job_group,
                         lambda r, s: predict_runtime(r, s, ckpt_every_s), tolerance=tol, trial_cost_s=cost)
        say(f"[profile] plan from measured configs {verdict.measured_makespan_s:.0f}s, no plan below "
            f"{verdict.bound_s:.0f}s: {verdict.reason}")
        if not verdict.worth:
            break
        run_batch([t for gid, n in verdict.worth for t in untried(gid, n)])
    else:
        say("[profile] still undecided after the guided rounds: measuring the rest")
        run_batch([t for t in trials.values() if t.result is None])
    left = [t for t in trials.values() if t.result is None]
    stats.skipped_by_bound = len(left)
    for t in left:
        t.result, t.source = {"status": "skipped", "reason": "not worth measuring: cannot shorten the plan"}, "skipped"
        stats.trials.append({"job": t.job.name, "parallelism": t.parallelism, "devices": t.n, "source": "skipped",
                             "status": "skipped", "step_s": None, "reason": t.result["reason"], "trial_wall_s": None})


def close_calls(trials, within: float) -> list[Trial]:
    """Per (job group, device count), the fastest trial when the runner-up is within `within` of it and it
    has only one measurement (a cached, already confirmed result is not measured again)."""
    by_count: dict[tuple, list[Trial]] = {}
    for t in trials:
        if t.result and t.result.get("status") == "ok":
            by_count.setdefault((t.group, t.n), []).append(t)
    out = []
    for ts in by_count.values():
        ts.sort(key=lambda t: t.result["step_s"])
        if (within > 0 and len(ts) >= 2 and ts[1].result["step_s"] <= ts[0].result["step_s"] * (1 + within)
                and ts[0].result.get("repeats", 1) < 2):
            out.append(ts[0])
    return out


def merge_trials(a: dict, b: dict) -> dict:
    """Two trials of one config as one: times averaged (weighted by how many trials each holds), peaks max."""
    ka, kb = a.get("repeats", 1), b.get("repeats", 1)
    out = dict(a)
    for k in ("step_s", "step_cpu_s", "startup_s", "teardown_s", "save_s", "load_s", "build_s", "first_steps_extra_s"):
        if isinstance(a.get(k), (int, float)) and isinstance(b.get(k), (int, float)):
            out[k] = (a[k] * ka + b[k] * kb) / (ka + kb)
    out["peak_mem_bytes"] = max(a.get("peak_mem_bytes", 0), b.get("peak_mem_bytes", 0))
    out["samples"] = list(a.get("samples", [])) + list(b.get("samples", []))
    out["trial_wall_s"] = a.get("trial_wall_s", 0.0) + b.get("trial_wall_s", 0.0)
    out["repeats"] = ka + kb
    return out


def fastest_per_count(configs: list[Config]) -> list[Config]:
    """Saturn's reduction: for each device count only the fastest parallelism can be optimal."""
    best: dict[int, Config] = {}
    for c in configs:
        if c.gpus not in best or c.runtime_s < best[c.gpus].runtime_s:
            best[c.gpus] = c
    return [best[g] for g in sorted(best)]


def dominance_filter(configs: list[Config]) -> list[Config]:
    """The undominated configs (fewer devices or faster than every other), by device count."""
    keep = undominated(configs, gpus=lambda c: c.gpus, runtime=lambda c: c.runtime_s)
    return sorted(keep, key=lambda c: (c.gpus, c.runtime_s))


def main(argv=None) -> int:
    """`python -m saturn_airflow.profiling.profiler WORKLOAD.yaml [-o table.json]` (what `saturn profile` runs)."""
    import argparse
    import sys

    from saturn_airflow.spec.workload import load_workload

    ap = argparse.ArgumentParser(prog="saturn profile", description="profile a workload on this machine's devices")
    ap.add_argument("workload")
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--store", default=None, help="store URL (profile cache); default $SATURN_HOME")
    ap.add_argument("--devices", default=None, help="device ids, e.g. 0,1 (default: all)")
    ap.add_argument("--jobs", nargs="*", default=None)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args(argv)
    try:
        wl = load_workload(args.workload)
        devs = [int(x) for x in args.devices.split(",")] if args.devices else None
        table = profile_workload(wl, store=Store(args.store) if args.store else None, devices=devs, jobs=args.jobs,
                                 use_cache=not args.no_cache, progress=lambda s: print(s, file=sys.stderr, flush=True))
    except (SaturnInputError, KeyError) as e:
        print(f"saturn profile: {e}", file=sys.stderr)
        return 2
    text = table.to_json()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
