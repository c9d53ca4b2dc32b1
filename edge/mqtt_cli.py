"""Command-line options for reaching the broker, shared by `beatssl-edge` and `simulator` (one definition)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
