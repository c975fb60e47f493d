"""Shipyard's one settings model, and the only module that reads the environment.

Values come, lowest priority first, from a YAML file (`--config`, default
`shipyard.yaml` in the working directory), then environment variables
`SHIPYARD_<SECTION>__<KEY>`, then explicit arguments. `load_settings` turns
every validation problem into one `ConfigError` that names the key, the value,
where it came from, and what was expected; unknown keys get a "did you mean".
Called by the CLI and by anything that needs configuration.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from shipyard.errors import ConfigError
from shipyard.schema import did_you_mean, fields_at

ENV_PREFIX = "SHIPYARD_"
UNION_BRANCH = re.compile(r"[\[\-]")  # pydantic names a union's branches in an error's loc: constrained-int, literal[…]
ENV_DELIMITER = "__"
DEFAULT_CONFIG = Path("shipyard.yaml")
CONFIG_ENV = "SHIPYARD_CONFIG"  # the config file, when no path is given (a worker's environment names it)
NOT_SETTINGS = {
    CONFIG_ENV,
    "SHIPYARD_DEBUG",
    "SHIPYARD_IMAGE",
}  # SHIPYARD_ variables, not settings (IMAGE: prefect.yaml)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoSettings(Section):
    """The embedded demo RL run: a tiny model learning two-digit addition with GRPO."""

    out: Path = Field(Path("runs/demo"), description="Directory the run writes checkpoint-<step>/ into.")
    steps: int = Field(300, ge=1, description="RL (GRPO) optimizer steps.")
    save_every: int = Field(10, ge=1, description="Save a checkpoint every this many RL steps.")
    keep: int | None = Field(None, ge=1, description="Keep only the newest this many checkpoints (None: all).")
    seed: int = Field(0, description="Seed for the model, the data and the trainer.")
    warmup_steps: int = Field(2000, ge=0, description="Most supervised warm-start steps before RL.")
    warmup_target: float = Field(
        0.25, ge=0, le=1, description="The warm start stops once greedy accuracy on training problems reaches this."
    )
    warmup_learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the supervised warm start.")
    learning_rate: float = Field(3e-5, gt=0, description="Learning rate of the RL phase.")
    prompts_per_step: int = Field(8, ge=1, description="Distinct prompts per RL step.")
    generations: int = Field(8, ge=2, description="Completions sampled per prompt (the GRPO group).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the RL rollouts.")
    beta: float = Field(0.01, ge=0, description="KL coefficient against the warm-started reference.")
    heldout_size: int = Field(200, ge=1, description="Held-out problems scored greedily at each save.")
    threads: int = Field(
        1, ge=1, description="CPU threads of the run, pinned: a seed gives the same run whatever the core count."
    )
    format: Literal["hf", "dcp"] = Field(
        "hf", description="dcp: also save each checkpoint as torch DCP in <out>/dcp/step-<n>/, as torchtitan does."
    )


class WatchSettings(Section):
    """Which checkpoints of a run the pipeline takes."""

    source: str | None = Field(None, description="The run: a local path, file://, s3://bucket/prefix or hf://org/name.")
    every_n_steps: int = Field(1, ge=1, description="Take only steps that are multiples of this.")
    min_interval_seconds: float = Field(0.0, ge=0, description="Least wall-clock time between two selections.")
    newest_first: bool = Field(True, description="When a backlog builds up, take the newest and skip the rest.")
    max_in_flight: int = Field(1, ge=1, description="Most checkpoints selected and not yet finished at once.")
    allow_pickle_weights: bool = Field(False, description="Accept .bin/.pt weights, loaded with weights_only=True.")


class ConvertSettings(Section):
    """How sharded training checkpoints (DCP, veRL's FSDP rank shards, Megatron, ZeRO) become a Hugging Face model."""

    base_model: Path | None = Field(
        None, description="A model directory whose config.json and tokenizer serve checkpoints that carry none."
    )
    renames: list[tuple[str, str]] = Field(
        default_factory=list, description="(regex, replacement) pairs applied to tensor names before matching."
    )
    command: str | None = Field(
        None, description="Converter for formats Shipyard does not read (Megatron torch_dist, ZeRO): {src}, {out}."
    )
    max_shard_bytes: ByteSize = Field(ByteSize(5 * 10**9), description="Largest safetensors shard written.")


class CacheSettings(Section):
    """How much disk each cache under the home may hold: every watch poll and `shipyard gc` evict, least
    recently used first, what no in-flight checkpoint needs (sizes like 200GB or 50GiB)."""

    snapshots: ByteSize = Field(ByteSize(200 * 10**9), description="Copies of checkpoints taken from runs.")
    candidates: ByteSize = Field(ByteSize(200 * 10**9), description="Post-trained candidates.")
    staging: ByteSize = Field(ByteSize(50 * 10**9), description="Candidates staged for publishing (mostly links).")
    champions: ByteSize = Field(ByteSize(100 * 10**9), description="Releases pulled to be gated against.")
    converted: ByteSize = Field(ByteSize(200 * 10**9), description="Sharded checkpoints converted to models.")
    evals: ByteSize = Field(ByteSize(10**9), description="Per-model eval results.")
    gates: ByteSize = Field(ByteSize(10**9), description="Gate reports.")
    keep_recent_seconds: float = Field(
        3600.0, ge=0, description="Never evict what was used this recently (work another process has in hand)."
    )


def split_s3_uri(uri: str) -> tuple[str, str, str] | None:
    """`s3://bucket/prefix` as (normalized uri, bucket, key prefix ending in "/" or empty); None if malformed."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        return None
    return f"s3://{bucket}/{prefix}".rstrip("/"), bucket, f"{prefix.rstrip('/')}/" if prefix else ""


class S3Settings(Section):
    """How Shipyard reaches S3 (sources and, later, release stores); credentials come from boto3's chain."""

    endpoint_url: str | None = Field(None, description="An S3-compatible endpoint; None for AWS.")
    full_listing_every: int = Field(
        30, ge=1, description="A watched S3 prefix is listed whole every Nth poll; between, only where new steps go."
    )


class HubSettings(Section):
    """How Shipyard reaches the Hugging Face Hub; the token comes from huggingface_hub's own login."""

    endpoint: str | None = Field(None, description="A Hub-compatible endpoint; None for huggingface_hub's default.")
    mirror_repo: str | None = Field(
        None,
        description="Hub model repo (org/name) the flows mirror each release and channel move into; None: only"
        " `shipyard mirror` does.",
    )


class ReleaseSettings(Section):
    """Where releases live and which line a publish extends."""

    store: str | None = Field(None, description="A path, file:// or s3://bucket/prefix; None: <home>/releases.")
    line: str = Field("main", description="The release line versions are counted in.")
    object_lock_days: int | None = Field(
        None, ge=1, description="On S3: lock each ledger event this many days (Object Lock, compliance mode)."
    )


class PipelineSettings(Section):
    """How one selected checkpoint becomes a release: recipe, gate policy, and the cheap screening first."""

    recipe: Path | None = Field(None, description="Post-training recipe YAML; None: the demo's, under profile: demo.")
    policy: Path | None = Field(None, description="Gate policy YAML; None: the demo's, under profile: demo.")
    screening: bool = Field(
        True,
        description="Evaluate the raw checkpoint before paying for post-training, against the raw checkpoint the"
        " champion was made from.",
    )
    screening_suite: str | None = Field(None, description="Suite (name or YAML) to screen on; None: demo's, if demo.")
    screening_task: str | None = Field(None, description="Task of that suite to screen on; None: demo's, if demo.")
    screening_metric: str = Field("exact_match", description="Its metric.")
    screening_margin: float | None = Field(
        None,
        ge=0,
        description="Turn a checkpoint away only when it is worse than the champion's raw checkpoint by more than"
        " this (paired, with the gate policy's alpha); None: the gate policy's regression delta.",
    )
    champion_channel: str = Field("stable", description="The channel whose head a candidate must beat.")
    slot: str = Field(
        "shipyard-training", description="Prefect global concurrency limit held while training or evaluating."
    )
    slot_limit: int = Field(1, ge=1, description="How many runs may hold the slot at once (created with this limit).")
    release_deployment: str | None = Field(
        None, description="Start release runs through this deployment ('flow/deployment'); None: in the watch flow."
    )
    approval_deployment: str | None = Field(
        None, description="Start an approval run through this deployment after each release; None: approve by CLI."
    )
    posttrain_deployment: str | None = Field(
        None,
        description="Post-train in a run of this deployment (its own pool, e.g. 8 GPUs) and wait for it; None: here.",
    )
    posttrain_processes: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1,
        description="Processes each post-training runs on (`accelerate launch`; the recipe's FSDP/DeepSpeed apply);"
        " auto: one per visible GPU.",
    )
    crashed_after_seconds: int = Field(
        120, ge=5, description="A flow run with no heartbeat for this long is marked crashed (and retried)."
    )
    crash_retries: int = Field(2, ge=0, description="How often the watch flow schedules a crashed release run again.")
    eval_deployment: str | None = Field(
        None, description="Screen and gate in runs of this deployment (its own pool, e.g. 1 GPU); None: here."
    )

    @field_validator(
        "release_deployment", "approval_deployment", "posttrain_deployment", "eval_deployment", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value  # SHIPYARD_PIPELINE__EVAL_DEPLOYMENT= (empty) turns a split off


class ApprovalSettings(Section):
    """How approval runs wait. Who may approve, and how many must agree, is the store's signed policy."""

    channel: str = Field("stable", description="The channel an approved release is promoted to.")
    wait_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="How long an approval run waits; after it the release stays a candidate."
    )
    poll_seconds: int = Field(10, ge=1, description="How often a paused approval run checks whether it was resumed.")


class TrustSettings(Section):
    """What this reader trusts and signs with. None of it can widen the store's signed policy."""

    owners: list[str] = Field(
        default_factory=list,
        description="Pinned fingerprints (SHA256:…) of the store's owner keys; a store whose root differs is refused.",
    )
    key: Path | None = Field(None, description="Your signing key for CLI decisions (an OpenSSH Ed25519 key).")
    gate_key: Path | None = Field(
        None, description="The pipeline's key: it signs each gate verdict; the store's policy names its public half."
    )
    release_key: Path | None = Field(
        None,
        description="The publisher's EC key (shipyard keygen --ec): signs each release for consumers (Model Signing).",
    )
    door_keys: dict[str, Path] = Field(
        default_factory=dict, description="Door (dashboard, prefect-ui) → the key it signs attestations with."
    )
    anchor: str | None = Field(
        None, description="SEQ:DIGEST of a ledger event kept outside the store; verify checks the log still holds it."
    )
    allow_unpinned: bool = Field(
        False,
        description="Read a store whose owners this reader has not pinned (trust.owners) instead of refusing it; for"
        " a job that knows what it reads: SHIPYARD_TRUST__ALLOW_UNPINNED=1. Pinning (shipyard trust pin) is safer.",
    )
    open_store_refuses: list[str] = Field(
        default_factory=lambda: ["stable"],
        description="Channels no command moves while the store has no signed policy (an open store, where any writer"
        " could move them); [] lets every channel move there.",
    )


class NotifySettings(Section):
    """A webhook told about each release decision (Slack-compatible JSON, body signed with HMAC-SHA256)."""

    webhook_url: SecretStr | None = Field(None, description="Where to POST (a secret: it holds a token); None: off.")
    secret: SecretStr | None = Field(
        None, description="HMAC key for the X-Shipyard-Signature header (set it by environment)."
    )
    events: list[str] = Field(
        default_factory=lambda: [
            "released",
            "gate_failed",
            "failed",
            "approved",
            "rejected",
            "promoted",
            "rolled_back",
        ],
        description="Ledger event types that are sent.",
    )
    timeout_seconds: float = Field(5.0, gt=0, description="Per request; a failed notification is logged, never fatal.")


class DashboardSettings(Section):
    """The release dashboard: where it listens and who may approve through it."""

    host: str = Field("127.0.0.1", description="Address the dashboard listens on.")
    port: int = Field(8765, ge=1, le=65535, description="Its port.")
    tokens: dict[str, str] = Field(
        default_factory=dict,
        description="Approver → sha256 hex of their login token (`shipyard dashboard-token --as NAME` makes one).",
    )
    secret: SecretStr | None = Field(
        None, description="Signs sessions and CSRF tokens (set by environment); None: random."
    )
    open_read: bool = Field(True, description="Read-only pages without login; False: every page needs a login.")
    session_hours: float = Field(12.0, gt=0, description="How long a login lasts.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For/-Proto are believed; none: the peer only.",
    )


class WatchedRun(Section):
    """One RL run a watch deployment follows, released on a line of its own, by its own policy and recipe."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="The run's name in logs and run names.")
    source: str = Field(description="As watch.source: a local path, s3://bucket/prefix or hf://org/name.")
    line: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Its release line (as release.line).")
    policy: Path | None = Field(None, description="Its gate policy; None: pipeline.policy.")
    recipe: Path | None = Field(None, description="Its post-training recipe; None: pipeline.recipe.")


class Settings(BaseSettings):
    """All of Shipyard's configuration, one section per stage."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    config_file: Path | None = Field(None, description="The YAML file these settings were read from.")
    profile: Literal["demo"] | None = Field(
        None, description="demo: the demo's recipe, gate policy and screening suite are the defaults; else name them."
    )
    home: Path = Field(Path(".shipyard"), description="Where Shipyard keeps its caches and state.")
    demo: DemoSettings = DemoSettings()
    watch: WatchSettings = WatchSettings()
    convert: ConvertSettings = ConvertSettings()
    cache: CacheSettings = CacheSettings()
    s3: S3Settings = S3Settings()
    hub: HubSettings = HubSettings()
    release: ReleaseSettings = ReleaseSettings()
    pipeline: PipelineSettings = PipelineSettings()
    approval: ApprovalSettings = ApprovalSettings()
    trust: TrustSettings = TrustSettings()
    notify: NotifySettings = NotifySettings()
    dashboard: DashboardSettings = DashboardSettings()
    runs: list[WatchedRun] = Field(
        default_factory=list,
        description="Several runs for one watch deployment, each polled once per watch run; none: watch.source.",
    )
    run: str | None = Field(None, description="Which of `runs` these settings are for (set by for_run).")

    @model_validator(mode="after")
    def _distinct_runs(self) -> Settings:
        for key in ("name", "line", "source"):
            values = [getattr(run, key) for run in self.runs]
            if len(set(values)) != len(values):
                raise ValueError(f"runs: each needs its own {key}; got {values}")
        return self

    def for_run(self, name: str | None) -> Settings:
        """These settings as `name` of `runs` sees them (its source, line, policy, recipe); None: as they are."""
        if name is None:
            return self
        run = next((r for r in self.runs if r.name == name), None)
        if run is None:
            raise ConfigError(f"no run named {name!r} in runs{did_you_mean(name, [r.name for r in self.runs])}")
        pipeline = {k: v for k, v in (("policy", run.policy), ("recipe", run.recipe)) if v is not None}
        return self.model_copy(
            update={
                "run": name,
                "watch": self.watch.model_copy(update={"source": run.source}),
                "release": self.release.model_copy(update={"line": run.line}),
                "pipeline": self.pipeline.model_copy(update=pipeline),
            }
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = init_settings.init_kwargs.get("config_file")  # type: ignore[attr-defined]
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if config_file is not None:
            sources += (RelativeYaml(settings_cls, yaml_file=config_file),)
        return sources


# Settings that name files: a relative value in a config file is relative to that file, not to where a command
# runs (`shipyard -c /etc/shipyard/lab.yaml` reads the same files from anywhere). URIs (s3://, hf://) stay.
PATH_KEYS = (
    "home",
    "demo.out",
    "watch.source",
    "convert.base_model",
    "release.store",
    "pipeline.recipe",
    "pipeline.policy",
    "trust.key",
    "trust.gate_key",
    "trust.release_key",
    "trust.door_keys.*",
    "runs[].source",
    "runs[].policy",
    "runs[].recipe",
)
NAME_OR_PATH_KEYS = ("pipeline.screening_suite",)  # a suite's name (kept) or its YAML file (relative to the file)


class RelativeYaml(YamlConfigSettingsSource):
    """The YAML source with each of `PATH_KEYS` resolved against the file's directory."""

    def __init__(self, settings_cls: type[BaseSettings], yaml_file: Path) -> None:
        self.base = Path(yaml_file).resolve().parent
        super().__init__(settings_cls, yaml_file=yaml_file)

    def _read_files(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._read_files(*args, **kwargs)
        for key in (*PATH_KEYS, *NAME_OR_PATH_KEYS):
            *parents, name = key.split(".")
            sections: list[Any] = [data]
            for part in parents:  # "[]": every item of a list
                found: list[Any] = [s.get(part.removesuffix("[]")) if isinstance(s, dict) else None for s in sections]
                if part.endswith("[]"):
                    found = [item for f in found if isinstance(f, list) for item in f]
                sections = found
            for section in (s for s in sections if isinstance(s, dict)):
                for each in list(section) if name == "*" else [name] if name in section else []:
                    if key in PATH_KEYS or str(section[each]).endswith((".yaml", ".yml")):
                        section[each] = _relative_to(self.base, section[each])
        return data


def _relative_to(base: Path, value: Any) -> Any:
    if not isinstance(value, str) or not value or "://" in value or value.startswith("~"):
        return value
    return str(base / value)


def ephemeral_prefect_defaults() -> None:
    """Before Prefect is imported: give its ephemeral API time to start on a busy machine (it defaults to 20 s,
    which a watcher sharing two cores with a trainer misses), and send no analytics; the caller's own values win."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def prefect_api_url() -> str | None:
    """The Prefect API a door would wake an approval run through, found as Prefect finds it (the environment,
    then the active profile) without importing Prefect, which costs seconds; once Prefect is imported
    (a flow, a test harness), its own settings answer."""
    if "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(profiles.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    url = data.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return url if isinstance(url, str) and url else None


def release_store_uri(settings: Settings, override: str | None = None) -> str:
    return override or settings.release.store or str(settings.home / "releases")


def config_file(config: Path | None = None) -> Path | None:
    """The settings file `load_settings` reads: `config`, else $SHIPYARD_CONFIG, else ./shipyard.yaml if present."""
    if config is None and os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if config is None and DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    return config


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `config` (or $SHIPYARD_CONFIG, or ./shipyard.yaml if present), the environment and `overrides`.

    An explicitly named file must exist; the default one is optional.
    """
    named = config is not None or bool(os.environ.get(CONFIG_ENV))
    config = config_file(config)
    if named and config is not None and not config.is_file():
        raise ConfigError(f"{config}: config file not found")
    _reject_unknown_env()
    try:
        return Settings(config_file=config, **overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config)) from None
    except (ValueError, TypeError, yaml.YAMLError) as exc:  # YAML that does not parse, or is not a mapping
        raise ConfigError(f"{config}: not a YAML mapping of settings: {exc}") from None


def env_var(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the key at `loc`."""
    return ENV_PREFIX + ENV_DELIMITER.join(str(part) for part in loc).upper()


def _reject_unknown_env() -> None:
    for name in os.environ:
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        parts = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))
        model: type[BaseModel] = Settings
        for depth, part in enumerate(parts):
            fields = model.model_fields
            if part not in fields:
                valid = [env_var((*parts[:depth], f)) for f in fields]
                raise ConfigError(
                    f"environment variable {name}: unknown key{did_you_mean(env_var(parts[: depth + 1]), valid)}"
                )
            annotation = fields[part].annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                break
            model = annotation


def _describe(exc: ValidationError, config: Path | None) -> str:
    lines: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and UNION_BRANCH.search(p)))  # int | "auto"
        key = ".".join(str(part) for part in loc)
        origin = f"environment variable {env_var(loc)}" if env_var(loc) in os.environ else f"{config or 'arguments'}"
        if error["type"] == "extra_forbidden":
            head, said = f"{origin}: unknown key '{key}'{did_you_mean(str(loc[-1]), fields_at(Settings, loc[:-1]))}", ""
        else:
            head, said = f"{origin}: {key} = {error['input']!r}", error["msg"]
        lines.setdefault(head, []).append(said)
    described = [head + (": " + " or ".join(said) if any(said) else "") for head, said in lines.items()]
    return "invalid settings:\n  " + "\n  ".join(described)
