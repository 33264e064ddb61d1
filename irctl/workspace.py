"""The workspace: ``irctl.yaml``, ``runbooks/``, ``drills/`` and ``.irctl/`` (store, keys)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from irctl.errors import UsageError
from irctl.runbook.model import Config

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.store import Store

CONFIG_NAME = "irctl.yaml"
STATE_DIR = ".irctl"
INSTALLATION_KEY = "installation.key"


_OPENED: list[Store] = []  # stores a workspace opened, for close_stores


def _opened(store: Store) -> Store:
    _OPENED.append(store)
    return store


def close_stores() -> None:
    """Close every store a workspace opened in this process (the CLI does, on its way out).

    For SQLite, closing the last connection to a file folds its write-ahead log back into
    the database file and removes the log: a copy of ``irctl.db`` alone then holds every
    event.  A process that exits without closing leaves them in ``irctl.db-wal``.
    """
    while _OPENED:
        _OPENED.pop().close()


@dataclass
class Workspace:
    root: Path
    config: Config = field(default_factory=Config)
    config_path: Path | None = None

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace:
        """The workspace holding ``start`` (default: ``$IRCTL_WORKSPACE`` or the cwd)."""
        from irctl.runbook.loader import load_config

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

    @property
    def store_source(self) -> tuple[str, str, bool]:
        """The store's URL; where it came from, for messages; and whether it is this
        workspace's default store (not set by ``IRCTL_STORE``, and the URL ``irctl init``
        writes or none), where "no store yet" means nothing has run here, not a typo."""
        default = Config.model_fields["store"].default
        env = os.environ.get("IRCTL_STORE")
        if env:
            return env, "from IRCTL_STORE", False
        url = self.config.store
        if self.config_path is None:
            origin = f"the default store; no {CONFIG_NAME} in {self.root} or a folder above"
        elif "store" in self.config.model_fields_set:
            origin = f"from the store line of {self.config_path}"
        else:
            origin = f"the default store; {self.config_path} has no store line"
        return url, origin, url == default

    @cached_property
    def store(self) -> Store:
        """The store, created if it does not exist yet: for commands that record."""
        from irctl.journal.store import Store

        url, _, _ = self.store_source
        return _opened(Store.open(url, workspace=self.root, retry=self.config.store_retry))

    @cached_property
    def reader(self) -> Store:
        """The store opened to read only, for commands that only read: a store that does not
        exist is :class:`~irctl.errors.NoStore` (exit 2) naming where irctl looked and why
        there, never a new empty one; nothing is created or written, so a read-only copy works.
        """
        if "store" in self.__dict__:  # already open for writing in this process
            return self.store
        from irctl.journal.store import Store

        url, origin, _ = self.store_source
        retry = self.config.store_retry
        reader = Store.open(url, workspace=self.root, create=False, origin=origin, retry=retry)
        return _opened(reader)

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
