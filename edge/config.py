"""Options from a TOML file and ``BEATSSL_…`` environment variables, for the ``beatssl-edge`` and ``simulator`` CLIs.

Precedence, highest first: command line > environment > config file > built-in default.

* Environment: ``beatssl-edge run`` reads every option ``--some-option`` from ``BEATSSL_SOME_OPTION`` (Click's
  ``auto_envvar_prefix``; a few options also keep an older name, e.g. ``BEATSSL_MQTT_USERNAME``). The config file
  itself comes from ``--config`` or ``BEATSSL_CONFIG``.
* Config file: a TOML file whose top-level keys are the option names of ``beatssl-edge run`` (``max_payload_kb``
  or ``max-payload-kb``). Tables named after other commands (``[view]``, ``[demo]``, ``[replay]``) hold their own
  options; those commands also take the connection keys (:data:`CONNECTION_KEYS`) from the top level unless their
  table sets them. Unknown keys are an error, so a typo does not silently fall back to a default.
* Secrets: no password in the file (``password_file`` names a file holding it, or set ``BEATSSL_MQTT_PASSWORD``);
  :func:`effective_toml` masks the ones it shows.

The file is read by an eager ``--config`` option whose callback fills Click's ``ctx.default_map``, so the parser
applies the precedence above and reports a bad value like one given on the command line.

Errors: the package's Typer apps use :class:`Commands` as their group class, so a bad value, a failed check or a
missing optional dependency is one ``error:`` line on stderr and a non-zero exit, never a usage block or a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "BEATSSL"
CONFIG_ENV = "BEATSSL_CONFIG"
PASSWORD_ENV = "BEATSSL_MQTT_PASSWORD"
#: the command whose options are the config file's top-level keys
PRIMARY_COMMAND = "run"
#: tables other commands read their own options from
COMMAND_TABLES = ("run", "view", "demo", "replay")
#: top-level keys that every command having the option takes (how to reach the broker, not who you are to it:
#: ``client_id`` is per command, or two programs would knock each other off the broker)
CONNECTION_KEYS = frozenset({"broker", "mqtt_version", "username", "password_file", "keepalive", "tls_ca",
                             "tls_cert", "tls_key", "tls_insecure"})
#: keys never accepted in a file, with where the value belongs instead
_FORBIDDEN = {
    "password": f"no passwords in the config file: name a file with password_file, or set {PASSWORD_ENV}",
    "config": "a config file cannot name another config file",
}
#: environment variables holding secrets themselves (shown masked by ``config show``)
SECRET_ENVS = (PASSWORD_ENV, "BEATSSL_HTTP_CREDENTIALS")
MASK = "********"

#: context settings of a command whose every option has a ``BEATSSL_<OPTION>`` variable
ENV_CONTEXT = {"auto_envvar_prefix": ENV_PREFIX}


#: the extra of the package that installs each optional top-level module
EXTRA_OF_MODULE = {"wfdb": "sim", "pandas": "sim", "matplotlib": "plots", "amqtt": "broker", "torch": "train",
                   "onnx": "train", "yaml": "train", "sklearn": "train", "tqdm": "train", "tensorrt": "tensorrt",
                   "cuda": "tensorrt"}


def error_line(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr (red on a terminal)."""
    typer.secho(f"error: {' '.join(message.split())}", err=True, fg=typer.colors.RED)


def missing_extra(exc: ModuleNotFoundError, what: str) -> str:
    """The one-line message for a missing module of an optional extra; re-raises ``exc`` for any other module."""
    extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
    if extra is None:
        raise exc
    return f"{what} needs the '{extra}' extra: pip install 'beatssl-edge[{extra}]' ({exc.name} is not installed)"


def exit_missing_extra(exc: ModuleNotFoundError, what: str) -> NoReturn:
    """Report a missing extra (:func:`missing_extra`) in one line and exit 2."""
    error_line(missing_extra(exc, what))
    sys.exit(2)


def _command_path(command: Any, prog_name: str, args: Sequence[str]) -> str:
    """``prog sub sub`` from the leading command words of ``args``."""
    words = [prog_name]
    for word in args:
        commands = getattr(command, "commands", {})
        if word not in commands:
            break
        command = commands[word]
        words.append(word)
    return " ".join(words)


class Commands(TyperGroup):
    """Group class of the package's Typer apps (``typer.Typer(cls=Commands)``).

    Run standalone (a console script, ``app()``, Typer's CliRunner), a usage error (a bad option value, a missing
    argument) prints ``error: <command>: <message>`` on stderr and exits 2; a module of an optional extra that is
    missing prints the extra to install and exits 2; another Click error prints its message and exits with its code.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        prog = prog_name or Path(sys.argv[0]).name
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        except ModuleNotFoundError as exc:
            exit_missing_extra(exc, _command_path(self, prog, argv))
        except Exception as exc:
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):  # not a Click error
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help, as Click shows it
                exc.show()
            else:
                ctx = getattr(exc, "ctx", None)
                error_line(f"{ctx.command_path}: {exc.format_message()}" if ctx is not None else exc.format_message())
            sys.exit(int(exc.exit_code))
        sys.exit(result if isinstance(result, int) else 0)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def load(path: Path) -> dict[str, Any]:
    """The parsed TOML file (ConfigError with the file name on a missing file or bad syntax)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _normalize(table: dict[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in _FORBIDDEN:
            raise ConfigError(f"{where}: key {key!r}: {_FORBIDDEN[name]}")
        out[name] = value
    return out


def defaults_for(data: dict[str, Any], command: str, options: Iterable[str], source: str = "config file") -> dict:
    """The ``default_map`` of ``command`` (whose option names are ``options``) from a parsed config file.

    Raises:
        ConfigError: an unknown table or key, or a forbidden one (``password``).
    """
    options = set(options) - {"config"}
    top = _normalize({k: v for k, v in data.items() if not isinstance(v, dict)}, source)
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    unknown_tables = set(tables) - set(COMMAND_TABLES)
    if unknown_tables:
        raise ConfigError(f"{source}: unknown table(s) {sorted(unknown_tables)}; tables are {list(COMMAND_TABLES)}")
    own = _normalize(tables.get(command, {}), f"{source} [{command}]")
    _check_known(own, options, f"{source} [{command}]")
    if command == PRIMARY_COMMAND:
        _check_known(top, options, source)
        inherited = top
    else:
        inherited = {k: v for k, v in top.items() if k in CONNECTION_KEYS and k in options}
    return {**inherited, **own}


def _check_known(table: dict[str, Any], options: set[str], where: str) -> None:
    unknown = sorted(set(table) - options)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(options))}")


def _load_callback(ctx: typer.Context, value: Path | None) -> Path | None:
    """Eager ``--config`` callback: the file's values become this command's defaults (below env and CLI)."""
    if value is None or ctx.resilient_parsing:
        return value
    options = [p.name for p in ctx.command.params if p.name]
    try:
        ctx.default_map = {**(ctx.default_map or {}),
                           **defaults_for(load(value), _section(ctx), options, str(value))}
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _section(ctx: typer.Context) -> str:
    """The config table of a command: its own name or its group's (``simulator replay wfdb`` reads ``[replay]``)."""
    c: Any = ctx
    while c is not None:
        if c.command.name in COMMAND_TABLES:
            return c.command.name
        c = c.parent
    return ctx.command.name or ""


def config_option(**kwargs: Any) -> Any:
    """The ``--config FILE`` option (also ``BEATSSL_CONFIG``); declare it first so the file is read first."""
    return typer.Option(
        "--config", envvar=CONFIG_ENV, is_eager=True, callback=_load_callback, show_default=False,
        help="TOML file of options (keys are option names: broker, workers, tls_ca …). Precedence: command line > "
             "environment (BEATSSL_<OPTION>) > this file > defaults. See docs/deploy.md.", **kwargs)


# ---------------------------------------------------------------------------------------------- config show
def _envvars(param: Any, prefix: str | None) -> list[str]:
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    if prefix and getattr(param, "allow_from_autoenv", False) and param.name:
        names.append(f"{prefix}_{param.name.upper()}")
    return names


def toml_value(value: Any) -> str:
    """``value`` (str, Path, bool, int, float or a list of them) as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def effective_toml(ctx: typer.Context) -> str:
    """The resolved options of a parsed command context as TOML, each with where its value came from.

    Unset options are shown commented out; secrets held in the environment (:data:`SECRET_ENVS`) are masked.
    """
    lines = [f"# effective options of `{ctx.command_path}`",
             "# precedence: command line > environment > config file > default"]
    width = max(len(p.name or "") for p in ctx.command.params)
    for param in ctx.command.params:
        name = param.name
        if not name or not getattr(param, "expose_value", True):
            continue
        if name == "config":
            lines.append(f"# config file: {ctx.params.get(name) or '(none)'}")
            continue
        value = ctx.params.get(name)
        source = ctx.get_parameter_source(name)
        origin = {"COMMANDLINE": "command line", "DEFAULT_MAP": "config file",
                  "DEFAULT": "default"}.get(getattr(source, "name", ""), "")
        if getattr(source, "name", "") == "ENVIRONMENT":
            origin = "env " + next((e for e in _envvars(param, ctx.auto_envvar_prefix) if os.environ.get(e)), "?")
        unset = value is None or (isinstance(value, (list, tuple)) and not value)
        left = f"# {name} = (unset)" if unset else f"{name.ljust(width)} = {toml_value(value)}"
        lines.append(f"{left.ljust(width + 24)}  # {origin}")
    for env in SECRET_ENVS:
        if os.environ.get(env):
            lines.append(f"# {env} = {json.dumps(MASK)}  (set in the environment; masked)")
    return "\n".join(lines) + "\n"
