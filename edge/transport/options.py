"""Command-line options for reaching the broker, shared by `beatssl-edge` and `simulator`: each option is spelled
once here, and :func:`mqtt_options` adds them all to a command.

A command declares one parameter ``mqtt: MqttOptions`` and is decorated with ``@mqtt_options()`` (below the
``@app.command`` line); the options appear in its ``--help``, in the config file keys and in the ``BEATSSL_…``
variables under their usual names (``--broker``, ``--mqtt-version``, ``--username``, ``--password-file``,
``--client-id``, ``--keepalive``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-insecure``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from edge.transport.mqtt import BrokerAddress, MqttSettings, read_password

MQTT_VERSIONS = ("5", "3.1.1")
DEFAULT_BROKER = "127.0.0.1:1883"


def _check_broker(value: str | None) -> str | None:
    """Parse-time check of ``--broker`` (the text is kept as given: it round-trips through ``config show``)."""
    if value is not None:
        try:
            BrokerAddress.parse(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _check_version(value: str) -> str:
    if value not in MQTT_VERSIONS:
        raise typer.BadParameter(f"must be 5 or 3.1.1, not {value!r}")
    return value


_BROKER_HELP = "MQTT broker HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)."
_EMBEDDED_HELP = (" Without it an embedded broker is started on 127.0.0.1:1883 (a free port when 1883 is taken; "
                  "mosquitto if installed, else the in-process MQTT 3.1.1 broker of the 'broker' extra).")


def _broker_option(embedded: bool) -> Any:
    return typer.Option("--broker", envvar="BEATSSL_BROKER", callback=_check_broker,
                        help=_BROKER_HELP + (_EMBEDDED_HELP if embedded else ""))


MqttVersionOpt = Annotated[str, typer.Option("--mqtt-version", envvar="BEATSSL_MQTT_VERSION", callback=_check_version,
                                             help="MQTT protocol version: 5 or 3.1.1.")]
UsernameOpt = Annotated[str | None, typer.Option("--username", envvar="BEATSSL_MQTT_USERNAME",
                                                    help="Broker user name.")]
PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--password-file", envvar="BEATSSL_MQTT_PASSWORD_FILE",
    help="File whose first line is the broker password (or set BEATSSL_MQTT_PASSWORD).")]
ClientIdOpt = Annotated[str, typer.Option("--client-id", help="MQTT client id (default: <program>-<random>).")]
KeepaliveOpt = Annotated[int, typer.Option("--keepalive", min=5, max=65535, help="MQTT keep-alive interval, s.")]
TlsCaOpt = Annotated[Path | None, typer.Option("--tls-ca", envvar="BEATSSL_TLS_CA",
                                                  help="CA certificate (PEM); turns TLS on.")]
TlsCertOpt = Annotated[Path | None, typer.Option("--tls-cert", envvar="BEATSSL_TLS_CERT",
                                                    help="Client certificate (PEM) for mutual TLS.")]
TlsKeyOpt = Annotated[Path | None, typer.Option("--tls-key", envvar="BEATSSL_TLS_KEY",
                                                   help="Client private key (PEM).")]
TlsInsecureOpt = Annotated[bool, typer.Option("--tls-insecure",
                                              help="Do NOT verify the broker's certificate (testing only!).")]


@dataclass(frozen=True)
class MqttOptions:
    """The broker options of one command, as given (validated at parse time; the files when used: ``config show``
    prints a configuration for files that are not there yet).

    Attributes:
        broker: ``HOST:PORT`` / ``mqtt(s)://HOST:PORT`` text, or None (``run``: start an embedded broker).
        mqtt_version: ``"5"`` or ``"3.1.1"``; keepalive: keep-alive interval (s); the rest as in :class:`MqttSettings`.
    """

    broker: str | None
    mqtt_version: str = "5"
    username: str | None = None
    password_file: Path | None = None
    client_id: str = ""
    keepalive: int = 30
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False

    def settings(self, broker: BrokerAddress | None = None, mqtt_version: str | None = None) -> MqttSettings:
        """Validated :class:`MqttSettings`; ``broker`` / ``mqtt_version`` replace the given ones (an embedded broker).

        An ``mqtts://`` address turns TLS on with the system's CA certificates when no ``--tls-ca`` is given.

        Raises:
            ValueError: a one-line message (no broker, bad address, missing TLS or password file, unreadable password).
        """
        if broker is None:
            if self.broker is None:
                raise ValueError("no broker given; expected --broker HOST:PORT")
            broker = BrokerAddress.parse(self.broker)
        version = mqtt_version or self.mqtt_version
        _check_version(version)
        for option, path in (("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                             ("--password-file", self.password_file)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{option} {path}: no such file")
        try:
            password = read_password(self.password_file)
        except (OSError, IndexError) as exc:
            raise ValueError(f"cannot read the password file {self.password_file}: {exc}") from None
        return MqttSettings(broker=broker, protocol=version, keepalive_s=self.keepalive, client_id=self.client_id,
                            username=self.username, password=password, tls_ca=self.tls_ca, tls_cert=self.tls_cert,
                            tls_key=self.tls_key, tls_insecure=self.tls_insecure)


F = TypeVar("F", bound=Callable[..., Any])


def mqtt_options(embedded_broker: bool = False, broker_default: str | None = DEFAULT_BROKER) -> Callable[[F], F]:
    """Decorator: replace a command's ``mqtt: MqttOptions`` parameter by the broker options above.

    Args:
        embedded_broker: the command starts an embedded broker without ``--broker`` (its help says so; the default
            is then None).
        broker_default: ``--broker`` default otherwise.
    """
    options: dict[str, tuple[Any, Any]] = {
        "broker": (Annotated[str | None, _broker_option(embedded_broker)], None if embedded_broker else broker_default),
        "mqtt_version": (MqttVersionOpt, "5"),
        "username": (UsernameOpt, None),
        "password_file": (PasswordFileOpt, None),
        "client_id": (ClientIdOpt, ""),
        "keepalive": (KeepaliveOpt, 30),
        "tls_ca": (TlsCaOpt, None),
        "tls_cert": (TlsCertOpt, None),
        "tls_key": (TlsKeyOpt, None),
        "tls_insecure": (TlsInsecureOpt, False),
    }

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        if "mqtt" not in signature.parameters:
            raise TypeError(f"{command.__name__} has no 'mqtt' parameter")
        params = [p for p in signature.parameters.values() if p.name != "mqtt"]
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                   for name, (annotation, default) in options.items()]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mqtt = MqttOptions(**{name: kwargs.pop(name) for name in options})
            return command(*args, mqtt=mqtt, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate
