"""Reading a configuration: YAML files, ``--set KEY=VALUE`` overrides and typed values.

Every key is type-checked (:func:`parse_settings`); an unknown key, a wrong type or an
out-of-range value raises :class:`~autoprune.errors.ConfigError` naming the dotted key, the bad
value and what is allowed. Command-line options reach a config as typed values
(:func:`apply_values`), never as text to parse again.

Example:
    >>> cfg = load_config("default", overrides=["search.trials=4"])
    >>> cfg.search.trials, cfg.model.name
    (4, 'resnet20')
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from autoprune.config._budget import parse_budget
from autoprune.config._sections import SECTIONS, Config, EvaluatorConfig, quote
from autoprune.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "apply_overrides",
    "apply_values",
    "config_from_dict",
    "list_configs",
    "load_config",
    "parse_settings",
]

#: The configurations shipped with autoprune (package data): ``--config NAME`` finds them.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: The embedded default: Fashion-MNIST, CIFAR-style resnet20, deployed at 1x28x28 on Jetson.
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

#: Evaluator keys of config files written before each evaluator had its own settings section
#: (older run directories' ``config.yaml``): old key -> (evaluator, its settings key).
_LEGACY_EVALUATOR_KEYS = {
    "scratch_b_cap": ("scratch-b", "cap"),
    "finetune_epochs": ("finetune", "epochs"),
    "finetune_lr": ("finetune", "lr"),
    "distill_temperature": ("distill", "temperature"),
    "distill_weight": ("distill", "weight"),
    "proxy": ("proxy", "proxy"),
}

T = TypeVar("T")

#: Ints of a config are 64-bit: what SQLite, NumPy and torch hold (10**19 overflows them).
_INT_LIMIT = 2**63


def list_configs() -> list[str]:
    """Names of the shipped configurations (``--config NAME``), sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if (option is str and isinstance(value, str)) or (option is float and number):
                    raise  # the right type, a wrong value: say what is wrong with it
        names = " or ".join("null" if o is type(None) else _type_name(o) for o in options)
        raise ConfigError(f"{key} must be {names}, but got {quote(value)}")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key} must be a list, but got {quote(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, but got {quote(value)}")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, but got {quote(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -_INT_LIMIT <= value < _INT_LIMIT:
                raise ConfigError(
                    f"{key} must be an int of at most 18 digits, but got {quote(value)}"
                )
            return value
        raise ConfigError(f"{key} must be an int, but got {quote(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and not -_INT_LIMIT <= value < _INT_LIMIT:
                raise ConfigError(
                    f"{key} must be a number of at most 18 digits, but got {quote(value)}"
                )
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, but got {quote(value)}")
            return float(value)
        raise ConfigError(f"{key} must be a number, but got {quote(value)}")
    if annotation is str:
        if isinstance(value, str) and "\x00" in value:  # no name or path holds a NUL
            raise ConfigError(f"{key} must not contain a NUL character, but got {quote(value)}")
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, but got {quote(value)}")
    raise AssertionError(f"unsupported annotation {annotation!r} for {key}")


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return "a list"
    return {int: "an int", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, str(annotation)
    )


def parse_settings(
    cls: type[T], data: Any, section: str, *, ignore: Sequence[str] = (), owner: str = ""
) -> T:
    """Build the frozen dataclass ``cls`` from a mapping, checking every key and its type.

    Keys are reported as ``{section}.{key}``; keys in ``ignore`` are skipped (a section's
    ``name``); ``owner`` names whose settings these are in the unknown-key message (``"for
    evaluator distill"``). The dataclass's ``__post_init__`` checks ranges.

    Example:
        >>> from autoprune.config import TrainingConfig
        >>> parse_settings(TrainingConfig, {"epochs": 3}, "training").epochs
        3
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section} must be a mapping of keys, but got {quote(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in data.items() if k not in ignore}
    unknown = sorted(set(given) - known, key=str)
    if unknown:
        where = f" {owner}" if owner else ""
        valid = sorted([*ignore, *known])
        raise ConfigError(
            f"unknown key {section}.{unknown[0]}{where}; valid keys in {section}{where}: "
            f"{', '.join(valid) or '(none)'}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in given.items()}
    return cls(**kwargs)


def _evaluator_section(data: Any) -> EvaluatorConfig:
    """The ``evaluator`` section: a name (``evaluator: distill``), or a mapping with a ``name``
    and a mapping of settings per evaluator (``distill: {temperature: 3}``)."""
    if data is None:
        return EvaluatorConfig()
    if isinstance(data, str):
        return EvaluatorConfig(name=data)
    if not isinstance(data, Mapping):
        raise ConfigError(
            "evaluator must be a name such as scratch-e or a mapping with a name, but got "
            + quote(data)
        )
    name = _coerce(data.get("name", EvaluatorConfig.name), str, "evaluator.name")
    settings: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key == "name":
            continue
        if key in _LEGACY_EVALUATOR_KEYS and not isinstance(value, Mapping):
            evaluator, field_name = _LEGACY_EVALUATOR_KEYS[key]
            settings.setdefault(evaluator, {})[field_name] = value
        elif isinstance(value, Mapping):
            settings.setdefault(str(key), {}).update(value)
        else:
            raise ConfigError(
                f"evaluator.{key} must be a mapping of that evaluator's settings, e.g. "
                "evaluator: {name: distill, distill: {temperature: 3.0}}, but got " + quote(value)
            )
    return EvaluatorConfig(name=name, settings=settings)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Validate a plain dict (as read from YAML) into a :class:`Config`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, but got {quote(data)}")
    valid = [*SECTIONS, "target", "budgets"]
    unknown = sorted(set(data) - set(valid), key=str)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]}; valid top-level keys: {', '.join(valid)}")
    sections = {
        name: _evaluator_section(data.get(name))
        if cls is EvaluatorConfig
        else parse_settings(cls, data.get(name), name)
        for name, cls in SECTIONS.items()
    }
    target = data.get("target", Config.target)
    if not isinstance(target, str) or not target:
        raise ConfigError(f"target must be a device name such as jetson, but got {quote(target)}")
    budgets_raw = data.get("budgets") or []
    if isinstance(budgets_raw, str):
        budgets_raw = [budgets_raw]
    if not isinstance(budgets_raw, Sequence):
        raise ConfigError(
            f"budgets must be a list such as [2gflops, 15ms], but got {quote(budgets_raw)}"
        )
    budgets = tuple(parse_budget(b) for b in budgets_raw)
    return Config(**sections, target=target, budgets=budgets)


def _set(out: dict[str, Any], key: str, value: Any, given: str) -> None:
    """Set the dotted ``key`` of a raw config dict; ``given`` is how the user wrote it."""
    parts = key.split(".")
    if parts == ["evaluator"]:  # --set evaluator=distill
        section = out.get("evaluator")
        if isinstance(section, str):
            section = {"name": section}
        out["evaluator"] = {**(section if isinstance(section, Mapping) else {}), "name": value}
        return
    if len(parts) == 1:
        if parts[0] not in ("target", "budgets"):
            raise ConfigError(
                f"{given}: unknown key {key}; valid keys are SECTION.KEY "
                f"(sections: {', '.join(SECTIONS)}), target, budgets"
            )
        out[parts[0]] = value
        return
    if parts[0] == "evaluator" and len(parts) == 3:  # evaluator.distill.temperature
        section = out.get("evaluator") or {}
        if isinstance(section, str):
            section = {"name": section}
        if not isinstance(section, Mapping):
            raise ConfigError(f"evaluator must be a mapping of keys, but got {quote(section)}")
        own = section.get(parts[1]) or {}
        if not isinstance(own, Mapping):
            raise ConfigError(f"evaluator.{parts[1]} must be a mapping, but got {quote(own)}")
        out["evaluator"] = {**section, parts[1]: {**own, parts[2]: value}}
        return
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"{given}: unknown key {key}; valid sections: {', '.join(SECTIONS)}")
    section_name, name = parts
    cls = SECTIONS[section_name]
    known = {f.name for f in dataclasses.fields(cls)}
    if cls is EvaluatorConfig:
        known = {"name"}
    if name not in known:
        hint = " (an evaluator's settings: evaluator.NAME.KEY)" if cls is EvaluatorConfig else ""
        raise ConfigError(
            f"{given}: unknown key {key}; valid keys in {section_name}: "
            f"{', '.join(sorted(known))}{hint}"
        )
    section = out.get(section_name) or {}
    if section_name == "evaluator" and isinstance(section, str):
        section = {"name": section}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{section_name} must be a mapping of keys, but got {quote(section)}")
    out[section_name] = {**section, name: value}


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to a raw config dict.

    Example:
        >>> apply_overrides({}, ["training.epochs=3"])
        {'training': {'epochs': 3}}
    """
    out = _copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r} is not KEY=VALUE; write e.g. --set training.epochs=3"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        except RecursionError:  # PyYAML composes recursively: ~400 nested [ overflow it
            raise ConfigError(
                f"--set {item[:80]!r} nests lists or mappings too deeply; give a flat value"
            ) from None
        _set(out, key, value, f"--set {item!r}")
    return out


def apply_values(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Set typed values at dotted keys of a raw config dict (no text is parsed).

    Example:
        >>> apply_values({}, {"search.trials": 5, "budgets": ["2gflops"]})
        {'search': {'trials': 5}, 'budgets': ['2gflops']}
    """
    out = _copy(data)
    for key, value in values.items():
        _set(out, key, value, f"{key}={value!r}")
    return out


def _resolve_path(path: str | Path | None) -> Path:
    """A config file's path: ``None`` is the default; a bare name is a shipped config."""
    if path is None:
        return DEFAULT_CONFIG
    path = Path(path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{path.name}.yaml"
    if path.suffix == "" and len(path.parts) == 1 and shipped.is_file():
        return shipped
    problem = "is a directory" if path.is_dir() else "does not exist"
    raise ConfigError(
        f"config file {str(path)!r} {problem}; pass --config a YAML file or the name of "
        f"a shipped config ({', '.join(list_configs())})"
    )


def _read_text(path: Path) -> str:
    """The config file's text; :class:`ConfigError` naming the file and the fix otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}: "
            f"{exc.object[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(path)!r} cannot be read ({exc.strerror}); check its permissions"
        ) from None


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
) -> Config:
    """Read a YAML config and apply ``--set`` overrides, then typed ``values`` (dotted keys).

    ``path`` is a file, the name of a shipped config (:func:`list_configs`), or ``None`` for
    the embedded default. A problem in the file itself is reported with the file's path.
    """
    path = _resolve_path(path)
    try:
        data = yaml.safe_load(_read_text(path)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{where}: {problem}"
        ) from None
    except RecursionError:  # PyYAML composes recursively: ~400 nested [ overflow it
        raise ConfigError(
            f"config file {str(path)!r} nests lists or mappings too deeply to read; flatten it"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    try:
        config_from_dict(data)
    except ConfigError as exc:  # the file itself is wrong: say which file
        raise ConfigError(f"{exc} (in {path})") from None
    return config_from_dict(apply_values(apply_overrides(data, overrides), values or {}))
