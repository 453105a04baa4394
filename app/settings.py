"""Settings: one frozen, typed object read from the environment (prefix ``TIERSTREAM_``).

Nothing else in the project reads the environment. Command-line options override fields
with :meth:`Settings.model_copy`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BROKER = "127.0.0.1:9092"
#: Table stores a worker can use (Faust store URL schemes): ``rocksdb`` needs the extra.
STORES = ("memory", "rocksdb")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/\s]+)(?::(?P<port>[^:]*))?$")


def _invalid(message: str, **context: object) -> PydanticCustomError:
    """A validation error whose message is ``message`` as it stands (no "Value error, ")."""
    return PydanticCustomError("invalid_setting", message, context)


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set as ``TIERSTREAM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TIERSTREAM_", frozen=True, extra="ignore")

    broker: str = Field(
        DEFAULT_BROKER,
        description="Kafka bootstrap servers, comma-separated host:port (kafka:// optional).",
    )
    app_id: str = Field("tierstream", description="Faust app id = consumer group id.")
    topic_prefix: str = Field("tierstream.", description="Prefix of every topic name.")
    partitions: int = Field(4, ge=1, description="Partitions of inputs, tables and outputs.")
    replication_factor: int = Field(1, ge=1, description="Replication of topics created.")
    store: str = Field("memory://", description="Table store: memory:// or rocksdb://")
    data_dir: Path = Field(Path(".tierstream-data"), description="Worker data directory.")
    policy_file: Path | None = Field(None, description="Policy YAML (default: packaged).")
    web_port: int = Field(
        6066, ge=1, le=65535, description="Worker HTTP port (metrics, health, queries)."
    )
    web_host: str = Field("127.0.0.1", description="Worker HTTP bind address.")
    batch_size: int = Field(
        2000, ge=1, description="Max events handled per agent batch (throughput vs latency)."
    )
    batch_timeout_s: float = Field(0.05, gt=0, description="Max wait to fill a batch.")
    flush_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often touched customers are written (table, snapshot) and the "
        "input acked; a customer is written once per flush however often touched.",
    )
    state_cache_size: int = Field(
        200_000, ge=0, description="Customer states kept decoded in memory (0: none)."
    )
    clock_mode: Literal["wall", "event"] = Field(
        "wall",
        description="Partition clock: 'wall' (live: an idle partition's clock advances with "
        "the wall clock, so silence is noticed without events) or 'event' (event time "
        "only: replays of history raise what fell due at the times it would have).",
    )
    allowed_lateness_s: float = Field(
        0.0,
        ge=0,
        description="The partition clock lags the latest event (and the wall clock) by this "
        "much, so events arriving this late are still applied before the timer looks.",
    )
    order_wait_s: float = Field(
        5.0,
        ge=0,
        description="Event-time order across a partition's input topics: how long records "
        "wait for a co-partitioned topic that has unread records but delivered none yet, "
        "before they are processed without it (as Kafka Streams' max.task.idle.ms).",
    )
    timer_interval_s: float = Field(
        1.0, gt=0, description="How often the timer re-evaluates customers that fell due."
    )
    population_interval_s: float = Field(
        60.0,
        gt=0,
        description="How often each worker summarises its partitions' customers for "
        "population percentiles, and the cut-offs are merged (policies with percentile.*).",
    )
    max_future_skew_s: float = Field(
        86400.0, description="Events dated further than this past the wall clock are rejected."
    )
    # Security for a real cluster.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_* protocols)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL (default: system).")
    # Tuning for short-lived groups (tests, demo): how fast a dead member is noticed.
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer group session timeout: how fast a dead worker is noticed."
    )
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer group heartbeat.")
    log_level: str = Field("WARNING", description="Worker log level (DEBUG, INFO, WARNING, ...).")
    broker_wait_s: float = Field(
        10.0,
        gt=0,
        description="How long a starting worker keeps trying to reach the broker before it "
        "stops with an error (exit 2).",
    )

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            raise _invalid("no broker address given (host:port[,host:port...])")
        for part in parts:
            hp = part.removeprefix("kafka://")
            m = _HOST_PORT.match(hp)
            port = m.group("port") if m else None
            if m is None or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
                raise _invalid(
                    "'{part}' is not host:port (e.g. 127.0.0.1:9092; an IPv6 address in "
                    "brackets, [::1]:9092; only the kafka:// scheme)",
                    part=part,
                )
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in STORES:
            raise _invalid("'{value}' is not a table store: memory:// or rocksdb://", value=value)
        return f"{scheme.lower()}://{rest}"

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise _invalid(
                "'{value}' is not a log level: one of {levels}",
                value=value,
                levels=", ".join(LOG_LEVELS),
            )
        return level

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """aiokafka connection arguments (bootstrap, security): the one translation of the
        broker and security settings for plain aiokafka clients (Faust's are
        :func:`app.stream.app.faust_config`)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
        return kw

    def topic(self, name: str) -> str:
        """Full topic name for a logical name such as ``purchases``."""
        return f"{self.topic_prefix}{name}"

    @property
    def bootstrap_servers(self) -> str:
        """Bootstrap list without any ``kafka://`` scheme, for aiokafka."""
        return ",".join(
            part.strip().removeprefix("kafka://") for part in self.broker.split(",") if part.strip()
        )

    @property
    def broker_url(self) -> str:
        """Bootstrap list in Faust's ``kafka://host:port`` form."""
        return ";".join(f"kafka://{hp}" for hp in self.bootstrap_servers.split(","))


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, then apply non-None overrides."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]  # validated like the environment
