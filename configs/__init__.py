"""The bundled configs: ``configs/{name}.yaml``, usable as ``--config NAME``."""

from importlib import resources
from pathlib import Path

DEFAULT_CONFIG = "navigation"  # metarl train's config when --config is not given


def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``configs/`` (usable as ``--config NAME``)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".yaml")
    )


def bundled_config_path(name: str) -> Path:
    """The file of the bundled config ``name``."""
    return Path(str(resources.files(__name__) / f"{name}.yaml"))
