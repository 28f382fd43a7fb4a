"""A connector's OAuth 2.0 settings, as apiProperties.json declares them.

Power Platform puts them on the connection parameter of type ``oauthSetting`` (usually
``token``), under ``oAuthSettings`` — spelled ``oauthSettings`` too, and keys inside in
mixed case (``tokenUrl``, ``TokenUrl``), so every lookup here is case-insensitive:

- ``identityProvider``: ``oauth2`` (URLs in ``customParameters.authorizationUrl`` /
  ``tokenUrl`` / ``refreshUrl``), ``oauth2generic`` (the same as ``…UrlTemplate`` with
  ``{placeholders}``, plus query-string and body templates), ``aad`` / ``aadcertificate``
  (``loginUri``, ``tenantId``, ``resourceUri``), or a named provider (``DocuSign``,
  ``facebook``) whose endpoints hookd knows (`hookd.oauth.providers`);
- ``scopes``: the connector's default scopes; ``clientId``: a placeholder in published
  connectors (an operator registers their own app and names it in the connection).

Only the strings are kept (`custom` maps the lower-cased parameter name to its value):
which URL to use is decided by `hookd.oauth.providers`, with the connection at hand.
Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OAuthSettings:
    """The ``oAuthSettings`` of one connection parameter (of one parameter set)."""

    provider: str  # identityProvider, lower case ("oauth2", "aad", "docusign", …)
    parameter: str = "token"  # the connection parameter that carries them
    parameter_set: str = ""  # its connectionParameterSets entry ("" = connectionParameters)
    client_id: str = ""
    scopes: tuple[str, ...] = ()
    custom: Mapping[str, str] = field(default_factory=dict)  # lower-cased name → value

    def custom_value(self, *names: str) -> str:
        """The first of `names` (any case) that ``customParameters`` gives, else ""."""
        for name in names:
            value = self.custom.get(name.lower(), "")
            if value:
                return value
        return ""


def _get(data: Any, key: str) -> Any:
    if not isinstance(data, Mapping):
        return None
    if key in data:
        return data[key]
    lower = key.lower()
    return next((v for k, v in data.items() if isinstance(k, str) and k.lower() == lower), None)


def _settings(name: str, raw: Any, parameter_set: str) -> OAuthSettings | None:
    settings = _get(raw, "oauthSettings")
    if not isinstance(settings, Mapping):
        return None
    provider = _get(settings, "identityProvider")
    if not isinstance(provider, str) or not provider.strip():
        return None
    custom: dict[str, str] = {}
    params = _get(settings, "customParameters")
    if isinstance(params, Mapping):
        for key, value in params.items():
            inner = _get(value, "value") if isinstance(value, Mapping) else value
            if isinstance(key, str) and isinstance(inner, str):
                custom[key.lower()] = inner
    scopes = _get(settings, "scopes")
    client_id = _get(settings, "clientId")
    return OAuthSettings(
        provider=provider.strip().lower(),
        parameter=name,
        parameter_set=parameter_set,
        client_id=client_id if isinstance(client_id, str) else "",
        scopes=tuple(s for s in scopes if isinstance(s, str) and s) if isinstance(scopes, list)
        else (),
        custom=custom,
    )


def oauth_settings(properties: Any) -> tuple[OAuthSettings, ...]:
    """Every OAuth setting of apiProperties.json (`properties` is the parsed file), in the
    order Power Platform lists them: ``connectionParameters``, then each parameter set.

    >>> props = {"properties": {"connectionParameters": {"token": {"type": "oauthSetting",
    ...     "oAuthSettings": {"identityProvider": "oauth2", "scopes": ["read"],
    ...     "customParameters": {"TokenUrl": {"value": "https://x/token"}}}}}}}
    >>> s, = oauth_settings(props)
    >>> s.provider, s.scopes, s.custom_value("tokenUrl")
    ('oauth2', ('read',), 'https://x/token')
    """
    inner = _get(properties, "properties")
    out: list[OAuthSettings] = []
    groups: list[tuple[str, Any]] = [("", _get(inner, "connectionParameters"))]
    values = _get(_get(inner, "connectionParameterSets"), "values")
    if isinstance(values, list):
        for entry in values:
            name = _get(entry, "name")
            groups.append((name if isinstance(name, str) else "", _get(entry, "parameters")))
    for set_name, params in groups:
        if not isinstance(params, Mapping):
            continue
        for name, raw in params.items():
            found = _settings(str(name), raw, set_name)
            if found is not None:
                out.append(found)
    return tuple(out)


def for_parameter_set(settings: tuple[OAuthSettings, ...], name: str | None) -> OAuthSettings | None:
    """The settings of parameter set `name` (None: the first that has any)."""
    if name is None:
        return settings[0] if settings else None
    return next((s for s in settings if s.parameter_set == name), None)
