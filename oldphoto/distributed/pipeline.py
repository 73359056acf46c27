"""The archive pipeline on Ray Data: the same stage classes as `oldphoto restore`, run as a streaming dataset.

    items ─▶ fetch+decode (tasks) ─▶ scratch pool ─▶ global pool ─▶ face pool ─▶ encode+write (tasks) ─▶ driver
                                     (actors, GPU)   (actors, GPU)  (actors, GPU)

Every box runs the stage objects of `oldphoto.pipeline.build_stages_from_source(WeightsSource, options)`, the
classes `oldphoto restore` runs in sequence (no second copy of any stage logic): DecodeStage in the fetch tasks,
ScratchDetectionStage / GlobalRestorationStage / FaceStage (detect + align + enhance + blend) in one actor pool
each, EncodeStage in the write tasks. Each pool is a `map_batches` with a callable class (`PoolActor`) over an
`ActorPoolStrategy` with its own `num_gpus` (fractions share a GPU); an actor loads its networks once, when it
starts. Rows are plain data, as in Ray's batch-inference examples (`oldphoto.distributed.rows`): the item's
arrays (decoded pixels, mask, restored image, faces) as variable-shaped tensor columns, its other fields as
Arrow strings, structs and lists, its provenance as its provenance.json text; each actor and task rebuilds the
`ItemState` from its batch (`batch_states`) and returns a block of the same columns (`states_to_table`), so the
stage classes see what `oldphoto restore` gives them. No column holds a Python object (Ray's pickled-object
fallback is off). The results reach the driver as `ItemResult.to_row` rows (strings, a list of
{path, uri}, the provenance text). The tests' fault injection (actors that die on chosen items) is a subclass
in `oldphoto.distributed.faults`, not part of the production actor.

Backpressure: a Ray Data object-store budget (`DataContext.execution_options.resource_limits`) and
`max_tasks_in_flight_per_actor` per pool (`DistributedConfig`). The retry bounds (`max_retries` of the
tasks, `max_task_retries` of the pools) go to `map_batches` as Ray remote args: Ray 2.60 has no other way
to pass them (`_map_batches` says where Ray's source shows it). Bad input is the stages' business: they set
the error on the state and later stages pass it through. An exception escaping a stage becomes that item's
error. An actor that dies (OOM, segfault, a killed node) is restarted by Ray and its batch retried
`max_item_retries` times; an item still not through after that is reported failed with the reason ("worker
crashed: ...", `StageName.WORKER_CRASHED`, through the stages' `ItemState.fail`), so every
input ends as exactly one result: done or failed (with its error). What is already done is decided before, on
the driver (`oldphoto.lifecycle.plan_items`), and never reaches the pipeline.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from oldphoto.distributed.config import DistributedConfig, PoolConfig
from oldphoto.lifecycle import WorkItem, item_base, list_inputs, run_fingerprint, start_item, write_item
from oldphoto.provenance import ItemProvenance, StageName
from oldphoto.weights_source import WeightsSource

log = logging.getLogger(__name__)

# role in this pipeline -> the first step of the stage that plays it
STAGE_ROLES = {
    "decode": StageName.LOAD,
    "scratch": StageName.SCRATCH_DETECTION,
    "global": StageName.GLOBAL_RESTORATION,
    "face": StageName.FACE_DETECTION,
    "encode": StageName.WRITE,
}
POOL_ORDER = ("scratch", "global", "face")


@dataclass
class ItemResult:
    uri: str
    name: str
    status: str                                  # "done" | "failed"
    error: str | None = None
    sha256: str | None = None
    provenance: ItemProvenance | None = None
    outputs: dict[str, str] = field(default_factory=dict)   # relpath -> URI written

    def to_row(self) -> dict[str, Any]:
        """The result as a row of `_result_schema()` (what the pipeline's last tasks send to the driver)."""
        return {"uri": self.uri, "name": self.name, "status": self.status, "error": self.error,
                "sha256": self.sha256, "outputs": [{"path": k, "uri": v} for k, v in self.outputs.items()],
                "provenance": self.provenance.to_json() if self.provenance else None}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "ItemResult":
        prov = row.get("provenance")
        return cls(uri=str(row["uri"]), name=str(row["name"]), status=str(row["status"]),
                   error=row["error"] or None, sha256=row["sha256"] or None,
                   provenance=ItemProvenance.from_json(prov) if prov else None,
                   outputs={str(o["path"]): str(o["uri"]) for o in row["outputs"] or ()})


def _result_schema():
    import pyarrow as pa

    # provenance: its provenance.json text (an open record: see oldphoto.distributed.rows)
    return pa.schema([("uri", pa.string()), ("name", pa.string()), ("status", pa.string()), ("error", pa.string()),
                      ("sha256", pa.string()),
                      ("outputs", pa.list_(pa.struct([("path", pa.string()), ("uri", pa.string())]))),
                      ("provenance", pa.string())])


# ModelSet roles each pool loads when its actor starts (those the options use and the weights have)
POOL_ROLES = {
    "scratch": ("scratch_unet",),
    "global": ("vae_a", "vae_b_quality", "vae_b_scratch", "mapping_quality", "mapping_scratch", "mapping_hr", "colour",
               "refiner"),
    "face": ("face_256", "face_512"),
}


@dataclass
class StageSource:
    """A picklable recipe for the stage objects: the weights source, the restore options and the run id."""

    weights: WeightsSource
    options: Any = None                          # oldphoto.pipeline.RestoreOptions (default: RestoreOptions())
    run_id: str | None = None

    def restore_options(self, device: str | None = None):
        from oldphoto.pipeline import RestoreOptions

        options = self.options if self.options is not None else RestoreOptions()
        return dataclasses.replace(options, device=device) if device else options

    def build(self, device: str = "cpu") -> dict[str, Any]:
        """role -> stage object, built by `oldphoto.pipeline.build_stages_from_source` (models load lazily,
        once per process)."""
        from oldphoto.pipeline import build_stages_from_source

        stages = {stage.name: stage for stage in build_stages_from_source(self.weights, self.restore_options(device))}
        return {role: stages[name] for role, name in STAGE_ROLES.items()}

    def pools(self) -> list[str]:
        """The model pools this run needs (no face pool when faces are off)."""
        opts = self.restore_options()
        return [r for r in POOL_ORDER if r != "face" or opts.faces]

    def preload(self, stage: Any, pool: str) -> list[str]:
        """Load the networks `pool` can use now (at actor start), not on its first item."""
        models = stage.models
        loaded = []
        opts = self.restore_options()
        for role in opts.required_roles() + opts.optional_roles():
            if role in POOL_ROLES[pool] and models.has(role):
                models.get(role)
                loaded.append(role)
        return loaded


def run_parameters(source: StageSource) -> tuple[dict[str, Any], str]:
    """(parameters, fingerprint) of a run (`oldphoto.lifecycle.run_fingerprint`, the same as `oldphoto restore`)."""
    return run_fingerprint(source.restore_options(), source.weights.load("cpu"))   # lazy: loads no network


# ----------------------------------------------------------------------------------------------- state helpers
def _new_state(source: StageSource, uri: str, name: str, data: bytes | None, out_dir: str):
    from oldphoto.pipeline import ItemState

    return ItemState.new(uri, data, source.restore_options(), name=name, out_dir=out_dir, run_id=source.run_id)


def _fetch_decode(batch: dict[str, Any], source: StageSource, destination: str):
    """Task: read each input and decode it (DecodeStage); the rows out are the items' states as plain columns
    (`oldphoto.distributed.rows`: the decoded pixels as a tensor, the rest as Arrow values)."""
    from oldphoto.distributed.rows import states_to_table
    from oldphoto.stages.base import run_stage

    decode = source.build()["decode"]
    states = [run_stage(decode, start_item(WorkItem(str(uri), str(name)), destination, source.restore_options(),
                                           source.run_id))
              for uri, name in zip(batch["uri"], batch["name"])]
    return states_to_table(states)


class PoolActor:
    """An actor of one model pool (the callable class of its `map_batches`): builds its stage and loads the
    pool's networks once, then runs batches of items through the stage's `batch()`."""

    def __init__(self, source: StageSource, role: str, pool: PoolConfig):
        if pool.device == "cpu":
            import torch

            torch.set_num_threads(max(1, pool.torch_threads))
        self.role = role
        self.stage = source.build(pool.device)[role]
        self.loaded = source.preload(self.stage, role)

    def __call__(self, batch: dict[str, Any]):
        from oldphoto.distributed.rows import batch_states, states_to_table

        states = batch_states(batch)          # each row back as the ItemState the stage classes take
        live = [i for i, st in enumerate(states) if not st.failed]   # items failed earlier pass through untouched
        # the whole batch through the stage's batch(): same-size items share forward passes where it can
        try:
            done = self.stage.batch([states[i] for i in live]) if live else []
        except Exception as exc:                    # batch() must not raise; if it does, item by item
            from oldphoto.stages.base import run_stage

            log.warning("stage %s batch raised: %s", self.role, exc)
            done = [run_stage(self.stage, states[i]) for i in live]
        for i, state in zip(live, done):
            states[i] = state
        return states_to_table(states)


def _encode_write(batch: dict[str, Any], source: StageSource, destination: str):
    """Task: EncodeStage builds the files; they are written under DEST/NAME/ (the `oldphoto restore` layout)."""
    import pyarrow as pa

    from oldphoto.distributed.rows import batch_states

    rows = [write_state(state, source, destination).to_row() for state in batch_states(batch)]
    return pa.Table.from_pylist(rows, schema=_result_schema())


def write_state(state, source: StageSource, destination: str) -> ItemResult:
    """Run EncodeStage on a state and write its files under DEST/NAME/ (`oldphoto.lifecycle.write_item`)."""
    from oldphoto.stages.base import run_stage

    state = run_stage(source.build()["encode"], state)
    outputs = write_item(state, destination)
    prov = state.provenance
    status = "failed" if state.failed else "done"
    return ItemResult(state.uri, state.name, status, error=state.error, sha256=prov.input.sha256,
                      provenance=prov, outputs=outputs)


# ------------------------------------------------------------------------------------------------------ driver
# Ray's lines that tell a museum's operator nothing: Ray Data's per-dataset INFO lines (plan, log folder), the
# notice that its progress bars are off (ours run instead: oldphoto.progress), and the notice that token
# authentication is on (Ray 2.60's default). Warnings and errors of these loggers still show.
RAY_QUIET_LOGGERS = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR,
                     "ray._private.authentication.authentication_token_setup": logging.ERROR}


def ensure_ray(config: DistributedConfig) -> None:
    """Connect to `config.ray_address`, or start the embedded local session; no-op if Ray is up."""
    import ray

    if ray.is_initialized():
        return
    import ray.data  # noqa: F401  (configures its loggers on import: set the levels after it)

    for name, level in RAY_QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        use_cluster_token()
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": a new embedded session, never some other Ray that happens to run on this machine; the reaper
        # stops what Ray would leave running if this process were killed (oldphoto/reaper.py)
        from oldphoto.reaper import start_reaper

        start_reaper()
        ray.init(address="local", num_cpus=config.local_num_cpus, include_dashboard=False, log_to_driver=False)


def ray_token_available() -> bool:
    """A Ray auth token is at hand: $RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def use_cluster_token() -> None:
    """Before connecting to an existing cluster by address: Ray (2.59+) turns token authentication on by
    default on `ray start --head`, but a driver given an explicit address never sends the token unless
    RAY_AUTH_MODE=token, and fails with InvalidAuthToken. So, when RAY_AUTH_MODE is not set and a token is
    at hand, use it (a head started with RAY_AUTH_MODE=disabled ignores it)."""
    if "RAY_AUTH_MODE" not in os.environ and ray_token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:      # Ray caches its config at import: refresh it, as Ray itself does when it turns token mode on
            from ray._raylet import Config

            Config.initialize("")
        except Exception as e:  # noqa: BLE001 - then only the environment (read by a fresh import) says so
            log.debug("could not refresh Ray's config: %s", e)


def build_dataset(items: Sequence[WorkItem], destination: str, source: StageSource, config: DistributedConfig,
                  roles: Iterable[str] | None = None):
    """The lazy Ray dataset of results (one row per item that made it through; see `run_pipeline`)."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext, ExecutionResources

    ctx = DataContext.get_current()
    ctx.execution_options.resource_limits = ExecutionResources(object_store_memory=config.object_store_memory)
    ctx.execution_options.preserve_order = False
    ctx.max_errored_blocks = -1          # a batch lost with its actor must not stop the others
    ctx.enable_progress_bars = False
    ctx.enable_fallback_to_arrow_object_ext_type = False  # rows are plain data (oldphoto.distributed.rows): a
                                                          # Python-object column is an error, never pickled

    roles = list(roles) if roles is not None else source.pools()
    rows = [{"uri": it.uri, "name": it.name} for it in items]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    ds = _map_batches(ds, _fetch_decode, {"max_retries": 2}, fn_kwargs={"source": source, "destination": destination},
                      batch_size=1, num_cpus=config.io_num_cpus)
    for role in POOL_ORDER:
        if role not in roles:
            continue
        pool = config.pool(role)
        actor, kwargs = PoolActor, {"source": source, "role": role, "pool": pool}
        if config.fault_injection and config.fault_pool == role:     # tests only: oldphoto.distributed.faults
            from oldphoto.distributed.faults import FaultInjectingActor

            actor, kwargs = FaultInjectingActor, {**kwargs, "fault": config.fault_injection}
        # dead actors are restarted (Ray's default), a batch is retried max_item_retries times, then its items
        # are lost (and reported by iter_pipeline)
        ds = _map_batches(ds, actor, {"max_task_retries": config.max_item_retries},
                          fn_constructor_kwargs=kwargs, batch_size=pool.batch_size or config.batch_size,
                          compute=ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size,
                                                    max_tasks_in_flight_per_actor=pool.max_tasks_in_flight),
                          num_gpus=pool.num_gpus, num_cpus=pool.num_cpus)
    ds = _map_batches(ds, _encode_write, {"max_retries": 2}, fn_kwargs={"source": source, "destination": destination},
                      batch_size=1, num_cpus=config.io_num_cpus)
    return ds


def _map_batches(ds, fn, retries: dict[str, int], **kwargs):
    """`ds.map_batches(fn, **kwargs)` over numpy batches (the rows of `oldphoto.distributed.rows`), with a bound
    on retries after a worker died: `max_retries` of a task, `max_task_retries` of an actor pool's calls (the
    bound is what ends a poison item instead of retrying it forever: Ray Data's defaults are -1, unbounded).

    Ray 2.60 has no named parameter for them: they go in `**ray_remote_args`, which map_batches warns about
    (ray/data/dataset.py `_warn_on_ray_remote_args`: "`ray_remote_args` is deprecated and will be removed in
    Ray 2.64. Use the named remote parameters instead."), while the named ones (`label_selector`,
    `fallback_strategy`, `max_calls`, `resources`, `accelerator_type`, `runtime_env`) and DataContext
    (`retried_map_errors`/`max_map_retries`: exceptions raised by the function, not a dead worker) have none,
    and Ray's own actor pool points to these keywords (ray/data/_internal/execution/operators/
    actor_pool_map_operator.py `_apply_default_remote_args`: "The user can customize this in map_batches via
    extra kwargs (e.g., map_batches(..., max_restarts=0) to disable)."). So that one warning, for exactly
    these keywords, is silenced here, and only here; any other deprecation still shows."""
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=RayDeprecationWarning)
        return ds.map_batches(fn, batch_format="numpy", **kwargs, **retries)


def iter_pipeline(items: Sequence[WorkItem], destination: str, source: StageSource,
                  config: DistributedConfig | None = None) -> Iterator[ItemResult]:
    """Stream one `ItemResult` per item as items finish (any order). Items whose batch was lost with
    its actor more than `max_item_retries` times come last, as failed with the reason."""
    config = config or DistributedConfig()
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise ValueError("output names must be unique within a run")
    if not items:
        return
    ensure_ray(config)
    import ray

    config = config.fitted(ray.cluster_resources())       # GPUs for the model pools where the cluster has them
    seen: set[str] = set()
    for res in _stream(items, destination, source, config):
        if res.uri not in seen:
            seen.add(res.uri)
            yield res
    missing = [it for it in items if it.uri not in seen]
    if missing:
        # Their batches were lost with a dying actor, maybe only because they were queued behind the item
        # that killed it. One more pass, one item in flight per actor, so only a poison item fails again.
        log.warning("%d item(s) lost with a crashed actor; retrying them one at a time", len(missing))
        careful = dataclasses.replace(config, batch_size=1, **{
            name: dataclasses.replace(config.pool(pname), max_tasks_in_flight=1)
            for name, pname in (("scratch", "scratch"), ("global_", "global"), ("face", "face"))})
        for res in _stream(missing, destination, source, careful):
            if res.uri not in seen:
                seen.add(res.uri)
                yield res
    for it in items:
        if it.uri not in seen:
            yield _lost(it, source, destination, 2 * (config.max_item_retries + 1))


def _lost(item: WorkItem, source: StageSource, destination: str, attempts: int) -> ItemResult:
    """The failed result of an item that never came out of the pipeline (its actor died on every attempt)."""
    from oldphoto.stages.base import now_iso

    state = _new_state(source, item.uri, item.name, None, item_base(destination, item.name))
    state.fail(StageName.WORKER_CRASHED, f"a stage actor died every time it processed this item ({attempts} attempts: "
                                 "out of memory, or a crash in native code)")
    state.provenance.finished = now_iso()
    return ItemResult(item.uri, item.name, "failed", error=state.error, provenance=state.provenance)


def _stream(items, destination, source, config) -> Iterator[ItemResult]:
    ds = build_dataset(items, destination, source, config)
    for row in ds.iter_rows():
        yield ItemResult.from_row(row)


def run_pipeline(items: Sequence[WorkItem], destination: str, source: StageSource,
                 config: DistributedConfig | None = None,
                 on_result: Callable[[ItemResult], None] | None = None) -> list[ItemResult]:
    """Run the whole pipeline; `on_result` is called per item as it finishes (e.g. to record it)."""
    results = []
    t0 = time.perf_counter()
    for res in iter_pipeline(items, destination, source, config):
        if on_result is not None:
            on_result(res)
        results.append(res)
    log.info("pipeline: %d items in %.1fs", len(results), time.perf_counter() - t0)
    return results


def work_items(source_uri: str, limit: int | None = None, only: Iterable[str] | None = None) -> list[WorkItem]:
    """The inputs below `source_uri` (`oldphoto.lifecycle.list_inputs`: the rule of `oldphoto restore`)."""
    items = list_inputs([source_uri]).items
    if only is not None:
        wanted = set(only)
        items = [it for it in items if it.uri in wanted]
    if limit is not None and limit > 0:
        items = items[:limit]
    return items
