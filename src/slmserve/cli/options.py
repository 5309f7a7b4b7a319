"""What every settings-taking command shares: --flags generated from Settings' fields (so they match env vars and
.env exactly; a flag not given leaves the env/.env/default value in place), their --help panels, usage errors,
logging."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import types
import typing
from collections.abc import Callable
from typing import Any

import pydantic
import typer
from pydantic_settings import SettingsError

from slmserve.settings import Settings

# Flags that may be given more than once (`--model a --model b`), Ollama-style.
REPEATABLE = {"model"}


# --help shows the settings in these panels, in this order: each panel sizes its own columns, so one long flag
# does not narrow every help text. A setting no panel names (a new one) goes in the last.
PANELS = {
    "Model": "model served_model_name engine weights device dtype lora cache_dir",
    "Engine": "max_running ctx_size max_model_len step_token_budget n_threads kv_unified kv_cache_type",
    "HTTP server": "host port max_waiting retry_after request_timeout drain_timeout max_body_bytes max_embed_tokens",
    "API keys and rate limits": "api_keys api_keys_file metrics_public rate_limit_rpm rate_limit_tpm",
    "Request defaults": "max_length_limit default_max_length default_temperature blocked_words",
    "DRY sampler defaults": "dry_multiplier dry_base dry_allowed_length dry_penalty_last_n dry_sequence_breakers",
    "Logging": "log_level log_format",
    "Other settings": "",
}


def panel(name: str) -> str:
    """The --help panel of a setting."""
    return next((panel for panel, names in PANELS.items() if name in names.split()), list(PANELS)[-1])


def settings_options(func: Callable[..., Any], skip: frozenset[str] = frozenset()) -> Callable[..., Any]:
    """Give `func` one --option per Settings field but those in skip; it receives the built Settings as
    `settings` (skipped fields keep their env/.env/default value)."""
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "settings"]
    names = {p.name for p in own}
    extra = []
    for name in sorted(Settings.model_fields, key=lambda n: list(PANELS).index(panel(n))):  # panel by panel
        info = Settings.model_fields[name]
        if name in names or name in skip:
            continue
        kind = list[str] if name in REPEATABLE else _plain_type(info.annotation)
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        # Rich reads [word] as markup and drops it ("needs slmserve[torch]" showed as "needs slmserve"): escape it.
        help_text = f"{info.description} (env SLMSERVE_{name.upper()}; default: {shown(name)})".replace("[", "\\[")
        # No type column (metavar ""): at 80 columns its width is the help text's, and the default shows the type.
        option = typer.Option(None, *decls, help=help_text, show_default=False, metavar="", rich_help_panel=panel(name))
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None))

    def wrapper(**kwargs: Any) -> Any:
        given = {k: _parse(k, kwargs.pop(k)) for k in list(kwargs) if k not in names and kwargs[k] is not None}
        for k in [k for k in kwargs if k not in names]:
            kwargs.pop(k)
        return func(settings=build_settings(given), **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *extra])
    wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
    return wrapper


# SLMSERVE_* variables that are not settings: examples/request.sh's server, the docs' screenshot switch.
NOT_SETTINGS = {"SLMSERVE_URL", "SLMSERVE_DOCS_SCREENSHOTS"}


def _warn_unknown_env() -> None:
    """A warning for each SLMSERVE_* variable (environment or .env) that is no setting, naming the closest one:
    pydantic-settings ignores them, so a typo (SLMSERVE_PROT) would silently leave the default in place."""
    from dotenv import dotenv_values

    known = {f"SLMSERVE_{name.upper()}" for name in Settings.model_fields}
    given = {k.upper() for k in os.environ if k.upper().startswith("SLMSERVE_")}
    if os.path.isfile(".env"):
        given |= {k.upper() for k in dotenv_values(".env") if k and k.upper().startswith("SLMSERVE_")}
    for name in sorted(given - known - NOT_SETTINGS):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (`slmserve serve --help` lists the settings)"
        typer.echo(f"Warning: {name} is not a setting of slmserve and is ignored{hint}", err=True)


def shown(name: str) -> str:
    """A setting's default as --help shows it."""
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, list):
        return ",".join(default) or "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return "none" if default is None else str(default)


def build_settings(given: dict[str, Any]) -> Settings:
    """Settings from flags, env and .env; a bad value is one line per problem naming where to fix it, exit 2."""
    _warn_unknown_env()
    try:
        return Settings(**given)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            where = f"--{name.replace('_', '-')}" if name in given else f"SLMSERVE_{name.upper()} (env or .env)"
            typer.echo(f"Error: {where} = {err.get('input')!r}: {err['msg']}", err=True)
    except SettingsError as exc:
        typer.echo(f"Error: {exc} ({exc.__cause__})" if exc.__cause__ else f"Error: {exc}", err=True)
    raise typer.Exit(2)


def _parse(name: str, value: Any) -> Any:
    """A repeatable flag's values join into the field's comma-separated form. List settings pass on as text:
    Settings reads a JSON list or comma-separated words, from flags as from env/.env."""
    return ",".join(value) if name in REPEATABLE else value


def _plain_type(annotation: Any) -> type:
    """int for `int | None`, str for Literal[...] and anything else typer cannot take as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, str, bool) else str


def setup_logging(settings: Settings) -> None:
    if settings.log_format == "json":
        from slmserve.server.logs import JSONFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JSONFormatter())
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def checked(make: Callable[..., Any], *args: Any) -> Any:
    """make(*args); a ValueError (two models of one name, a bad option) is a usage error: exit 2 with its text."""
    try:
        return make(*args)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
