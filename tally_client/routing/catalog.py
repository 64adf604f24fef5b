"""The model catalog: provider, context window, capabilities, prices and typical speed.

The catalog ships with the package (`catalog.json` beside this module). A user overrides or
extends it with a JSON file of the same shape (`Client(catalog=path)` or `$TALLY_CATALOG`) or
with a mapping: an entry with the same model id replaces the shipped one, a new id is added.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._decision import ModelSpec, Price
from .._errors import ConfigurationError

__all__ = ["CATALOG_ENV", "CatalogEntry", "load_catalog", "price_for"]

CATALOG_ENV = "TALLY_CATALOG"
_SHIPPED = Path(__file__).with_name("catalog.json")
_CAPABILITIES = frozenset({"json", "tools", "vision", "reasoning"})


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog row: a model, the provider key and protocol serving it, and its spec."""

    provider: str
    protocol: str
    spec: ModelSpec


def _entry(raw: Mapping[str, Any], where: str) -> CatalogEntry:
    try:
        name = str(raw["model"])
        provider = str(raw["provider"])
        caps = frozenset(raw.get("capabilities", ("json", "tools")))
        if not caps <= _CAPABILITIES:
            raise ValueError(f"unknown capabilities {sorted(caps - _CAPABILITIES)}")
        p = raw.get("price")
        price = (
            Price(
                input=float(p["input"]),
                output=float(p["output"]),
                cached_input=None if p.get("cached_input") is None else float(p["cached_input"]),
                source=str(p.get("source", "")),
                date=str(p.get("date", "")),
            )
            if p
            else None
        )
        spec = ModelSpec(
            name,
            provider,
            quality=int(raw.get("quality", 2)),
            context_window=int(raw.get("context_window", 128_000)),
            cost=float(raw.get("cost", 1.0)),
            price=price,
            capabilities=caps,
            ttft=None if raw.get("ttft") is None else float(raw["ttft"]),
            output_tokens_per_second=(
                None
                if raw.get("output_tokens_per_second") is None
                else float(raw["output_tokens_per_second"])
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"bad catalog entry in {where}: {exc!s}; each entry needs 'model' and 'provider', "
            "and may have quality, context_window, capabilities, price {input, output, "
            "cached_input, source, date}, ttft, output_tokens_per_second"
        ) from None
    return CatalogEntry(provider, str(raw.get("protocol", "openai-chat")), spec)


def _read(path: Path) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the model catalog {path}: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ConfigurationError(f"{path}: a catalog is a JSON object with a 'models' list")
    return models


def load_catalog(
    extra: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> dict[str, CatalogEntry]:
    """The catalog: the shipped file, then `$TALLY_CATALOG`, then `extra`, later ones winning.

    Args:
        extra: a JSON file path, or a list of entries (dicts in the file's shape).

    Returns:
        model id -> CatalogEntry.

    Raises:
        ConfigurationError: a file that cannot be read or an entry that is malformed.
    """
    env = os.environ if env is None else env
    layers: list[tuple[str, Iterable[Mapping[str, Any]]]] = [(str(_SHIPPED), _read(_SHIPPED))]
    if env.get(CATALOG_ENV):
        layers.append((env[CATALOG_ENV], _read(Path(env[CATALOG_ENV]))))
    if isinstance(extra, (str, os.PathLike)):
        layers.append((str(extra), _read(Path(extra))))
    elif extra is not None:
        layers.append(("catalog=", extra))
    out: dict[str, CatalogEntry] = {}
    for where, entries in layers:
        for raw in entries:
            entry = _entry(raw, where)
            out[entry.spec.name] = entry
    return out


_cache: dict[str, CatalogEntry] | None = None


def price_for(model: str) -> Price | None:
    """The shipped catalog's price for a model id, or None when the catalog has no price."""
    global _cache
    if _cache is None:
        _cache = load_catalog()
    entry = _cache.get(model)
    return entry.spec.price if entry else None


def priced(spec: ModelSpec) -> ModelSpec:
    """`spec` with the catalog's price, capabilities and speed filled in where it has none.

    A spec that already has a price is returned as is (your figures win).
    """
    from dataclasses import replace

    global _cache
    if spec.price is not None:
        return spec
    if _cache is None:
        try:
            _cache = load_catalog()
        except ConfigurationError:
            return spec
    entry = _cache.get(spec.name)
    if entry is None:
        return spec
    known = entry.spec
    return replace(
        spec,
        price=known.price,
        capabilities=known.capabilities,
        ttft=spec.ttft if spec.ttft is not None else known.ttft,
        output_tokens_per_second=spec.output_tokens_per_second or known.output_tokens_per_second,
    )
