"""The workspace: ``irctl.yaml``, ``runbooks/``, ``drills/`` and ``.irctl/`` (store, keys)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from irctl.errors import UsageError
from irctl.model import Config

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.store import Store

CONFIG_NAME = "irctl.yaml"
STATE_DIR = ".irctl"
INSTALLATION_KEY = "installation.key"


@dataclass
class Workspace:
    root: Path
    config: Config = field(default_factory=Config)
    config_path: Path | None = None

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace:
        """The workspace holding ``start`` (default: ``$IRCTL_WORKSPACE`` or the cwd)."""
        from irctl.loader import load_config

        env = os.environ.get("IRCTL_WORKSPACE")
        if start is None and env and not Path(env).is_dir():
            raise UsageError(f"IRCTL_WORKSPACE is {env}, which is not a folder")
        here = (start or (Path(env) if env else Path.cwd())).resolve()
        for folder in [here, *here.parents]:
            candidate = folder / CONFIG_NAME
            if candidate.is_file():
                return cls(folder, load_config(candidate), candidate)
        return cls(here)

    @property
    def runbooks_dir(self) -> Path:
        return self.root / "runbooks"

    @property
    def drills_dir(self) -> Path:
        return self.root / "drills"

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def installation_key_path(self) -> Path:
        return self.state_dir / INSTALLATION_KEY

    @cached_property
    def store(self) -> Store:
        from irctl.store import Store

        url = os.environ.get("IRCTL_STORE") or self.config.store
        return Store.open(url, workspace=self.root)

    def signing_key(self) -> Ed25519PrivateKey | None:
        """The installation key that signs checkpoints, if this workspace has one."""
        from irctl.identity import load_private_key, public_key_text

        path = self.installation_key_path
        if not path.is_file():
            return None
        key = load_private_key(path)
        named = self.config.installation_key
        if named is not None and public_key_text(key) != named:
            raise UsageError(
                f"the installation key {path} is not the one {self.config_path or 'irctl.yaml'} "
                f"names: its public half is {public_key_text(key)}, irctl.yaml says {named}. "
                "Transcripts it signs would not verify; put back the matching key file or the "
                "matching installation_key line"
            )
        return key

    def public_key(self) -> str | None:
        from irctl.identity import public_key_text

        if self.config.installation_key:
            return self.config.installation_key
        key = self.signing_key()
        return public_key_text(key) if key is not None else None

    def resolve_runbook(self, name: str) -> Path:
        """A runbook by id (``runbooks/<id>.yaml``) or by path."""
        as_path = Path(name)
        if as_path.suffix in {".yaml", ".yml"} or os.sep in name:
            if not as_path.is_file():
                raise UsageError(f"no runbook file {name}")
            return as_path
        for suffix in (".yaml", ".yml"):
            candidate = self.runbooks_dir / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        known = sorted(p.stem for p in self.runbooks_dir.glob("*.y*ml"))
        hint = ""
        if known:
            from difflib import get_close_matches

            close = get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(known)}"
        raise UsageError(f"no runbook '{name}' in {self.runbooks_dir}{hint}")
