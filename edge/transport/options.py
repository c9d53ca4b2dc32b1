"""Command-line options for reaching the broker, shared by `beatssl-edge` and `simulator` (one definition)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.transport.mqtt import BrokerAddress, MqttSettings, read_password

MqttVersionOpt = Annotated[str, typer.Option("--mqtt-version", envvar="BEATSSL_MQTT_VERSION",
                                             help="MQTT protocol version: 5 or 3.1.1.")]
UsernameOpt = Annotated[str | None, typer.Option("--username", envvar="BEATSSL_MQTT_USERNAME",
                                                    help="Broker user name.")]
PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--password-file", envvar="BEATSSL_MQTT_PASSWORD_FILE",
    help="File whose first line is the broker password (or set BEATSSL_MQTT_PASSWORD).")]
ClientIdOpt = Annotated[str, typer.Option("--client-id", help="MQTT client id (default: <program>-<random>).")]
KeepaliveOpt = Annotated[int, typer.Option("--keepalive", min=5, help="MQTT keep-alive interval, seconds.")]
TlsCaOpt = Annotated[Path | None, typer.Option("--tls-ca", envvar="BEATSSL_TLS_CA",
                                                  help="CA certificate (PEM); turns TLS on.")]
TlsCertOpt = Annotated[Path | None, typer.Option("--tls-cert", envvar="BEATSSL_TLS_CERT",
                                                    help="Client certificate (PEM) for mutual TLS.")]
TlsKeyOpt = Annotated[Path | None, typer.Option("--tls-key", envvar="BEATSSL_TLS_KEY",
                                                   help="Client private key (PEM).")]
TlsInsecureOpt = Annotated[bool, typer.Option("--tls-insecure",
                                              help="Do NOT verify the broker's certificate (testing only!).")]


def settings_from_options(
    broker: BrokerAddress,
    mqtt_version: str = "5",
    username: str | None = None,
    password_file: Path | None = None,
    client_id: str = "",
    keepalive: int = 30,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_insecure: bool = False,
) -> MqttSettings:
    """Validated :class:`MqttSettings` from the options above.

    Raises:
        ValueError: a one-line message (bad protocol version, missing TLS or password file, unreadable password).
    """
    if mqtt_version not in ("5", "3.1.1"):
        raise ValueError(f"--mqtt-version must be 5 or 3.1.1, not {mqtt_version!r}")
    for option, path in (("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key),
                         ("--password-file", password_file)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{option} {path}: no such file")
    try:
        password = read_password(password_file)
    except (OSError, IndexError) as exc:
        raise ValueError(f"cannot read the password file {password_file}: {exc}") from None
    return MqttSettings(broker=broker, protocol=mqtt_version, keepalive_s=keepalive, client_id=client_id,
                        username=username, password=password, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                        tls_insecure=tls_insecure)
