"""The one boundary where Hydra/OmegaConf meet the rest: compose conf/ with overrides, convert once.

Core code takes `advisor.config.schema.RunConfig` (or plain dicts); nothing below this module sees a
DictConfig. Hydra's own errors (unknown group option, unknown key) are turned into ConfigError
messages that name the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from advisor.config import catalog
from advisor.errors import ConfigError

GROUPS = ("model", "method", "gpu", "data", "matrix")


def _bad_group_options(overrides: list[str]) -> dict[str, str]:
    """{override: problem} for every `group=option` naming an option that does not exist."""
    bad = {}
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if sep and key in GROUPS and value not in catalog.option_names(key):
            bad[o] = f"{key}={value!r}: unknown {key} (allowed: {', '.join(catalog.option_names(key))})"
    return bad


def compose(config_name: str, overrides: list[str]) -> dict[str, Any]:
    """Compose `conf/<config_name>.yaml` with Hydra overrides; return a plain, resolved dict."""
    bad = _bad_group_options(overrides)
    if bad:
        # Report every problem at once: compose without the bad group options and validate the rest.
        problems = list(bad.values())
        try:
            from advisor.config.schema import build

            build(_compose(config_name, [o for o in overrides if o not in bad]))
        except ConfigError as e:
            problems += e.problems
        raise ConfigError(problems)
    return _compose(config_name, overrides)


def _compose(config_name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(catalog.conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).splitlines()[0]
        if "Could not override" in str(e) or "Key '" in msg:
            msg += (
                " — check the key's spelling against `tunewise <command> --help` (new keys need a leading +)"
            )
        raise ConfigError(f"overrides {' '.join(overrides)!r}: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def given_keys(overrides: list[str]) -> set[str]:
    """Keys the user set on the command line (e.g. {'method', 'train.seq_len'})."""
    return {o.lstrip("+~").partition("=")[0] for o in overrides if "=" in o}
