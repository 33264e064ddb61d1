"""The workspace: ``irctl.yaml``, ``runbooks/``, ``drills/`` and ``.irctl/`` (store, keys)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from irctl.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.filereader import Reading
    from irctl.journal.store import Store
    from irctl.runbook.config import Config

CONFIG_NAME = "irctl.yaml"
DEFAULT_STORE = "sqlite:///.irctl/irctl.db"  # Config's default: a test keeps them in step
STATE_DIR = ".irctl"
INSTALLATION_KEY = "installation.key"


def _plain_store_line(path: Path) -> tuple[str | None, bool] | None:
    """``(url, given)`` from a config file whose top level is a mapping with at most one
    ``store`` key holding a string (``(None, False)`` without one); None for anything else —
    unreadable, not YAML, a duplicated or non-string store — which the full read reports."""
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if node is None:
        return None, False
    if not isinstance(node, yaml.MappingNode):
        return None
    stores = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "store"]
    if not stores:
        return None, False
    value = stores[0]
    if len(stores) > 1 or not isinstance(value, yaml.ScalarNode) or value.tag != _STR_TAG:
        return None
    return str(value.value), True


_STR_TAG = "tag:yaml.org,2002:str"


_OPENED: list[Reading] = []  # stores a workspace opened, for close_stores

_S = TypeVar("_S", bound="Reading")


def _opened(store: _S) -> _S:
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
    """A workspace; ``loaded`` is its config, or None to read ``config_path`` when first used.

    ``find(lazy=True)`` leaves the config unread: a command that only reads the store
    (``irctl status``, ``runs list``) needs only its ``store`` line (:attr:`store_source`),
    and never waits for pydantic to import and validate the rest."""

    root: Path
    loaded: Config | None = None
    config_path: Path | None = None
    _read_config: bool = field(default=False, repr=False)

    @classmethod
    def find(cls, start: Path | None = None, *, lazy: bool = False) -> Workspace:
        """The workspace holding ``start`` (default: ``$IRCTL_WORKSPACE`` or the cwd), its
        ``irctl.yaml`` read and checked now (an invalid one is InvalidDocument) or, ``lazy``,
        when first used: for the commands that only read the store."""
        env = os.environ.get("IRCTL_WORKSPACE")
        if start is None and env and not Path(env).is_dir():
            raise UsageError(f"IRCTL_WORKSPACE is {env}, which is not a folder")
        here = (start or (Path(env) if env else Path.cwd())).resolve()
        for folder in [here, *here.parents]:
            candidate = folder / CONFIG_NAME
            if candidate.is_file():
                found = cls(folder, None, candidate, _read_config=True)
                if not lazy:
                    found.config  # noqa: B018 - read it now: its errors come first
                return found
        return cls(here)

    @property
    def config(self) -> Config:
        """``irctl.yaml``, read and checked on first use (an invalid one is InvalidDocument)."""
        if self.loaded is None:
            from irctl.runbook.config import Config, load_config

            path = self.config_path
            self.loaded = load_config(path) if self._read_config and path else Config()
        return self.loaded

    def _store_line(self) -> tuple[str, bool]:
        """The config's store URL and whether the file gives one, read without validating the
        rest of the file; the whole config (and its error) when the line is not plain."""
        if self.loaded is None and self._read_config and self.config_path is not None:
            found = _plain_store_line(self.config_path)
            if found is not None:
                return (found[0] or DEFAULT_STORE), found[1]
        config = self.config
        return config.store, "store" in config.model_fields_set

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
        env = os.environ.get("IRCTL_STORE")
        if env:
            return env, "from IRCTL_STORE", False
        url, given = self._store_line()
        if self.config_path is None:
            origin = f"the default store; no {CONFIG_NAME} in {self.root} or a folder above"
        elif given:
            origin = f"from the store line of {self.config_path}"
        else:
            origin = f"the default store; {self.config_path} has no store line"
        return url, origin, url == DEFAULT_STORE

    @cached_property
    def store(self) -> Store:
        """The store, created if it does not exist yet: for commands that record."""
        from irctl.journal.store import Store

        url, _, _ = self.store_source
        return _opened(Store.open(url, workspace=self.root, retry=self.config.store_retry))

    @cached_property
    def reader(self) -> Reading:
        """The store opened to read only, for commands that only read: a store that does not
        exist is :class:`~irctl.errors.NoStore` (exit 2) naming where irctl looked and why
        there, never a new empty one; nothing is created or written, so a read-only copy works.

        A SQLite file is read with the standard library alone (:mod:`.filereader`), so the
        commands people type most do not wait for SQLAlchemy to import.
        """
        if "store" in self.__dict__:  # already open for writing in this process
            return self.store
        from irctl.journal.filereader import FileReader, file_path

        url, origin, _ = self.store_source
        path = file_path(url, self.root)
        if path is not None:
            return _opened(FileReader(path, origin=origin))
        from irctl.journal.store import Store

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
