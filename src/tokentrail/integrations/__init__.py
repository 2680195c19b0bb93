"""Metering of the provider SDKs: `instrument()` patches every installed SDK, `wrap()` one client.

Both are idempotent, and a client that is wrapped *and* instrumented is still metered once.
`instrument()` never imports an SDK itself: an SDK already imported is patched at once, one
imported later is patched as it loads.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from tokentrail.integrations._patch import Patch

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

T = TypeVar("T")
log = logging.getLogger("tokentrail")
_MISSING = object()

# SDK top-level module -> (the module whose loading triggers patching, our adapter)
SDKS = {
    "openai": ("openai._base_client", "tokentrail.integrations.openai"),
    "anthropic": ("anthropic._base_client", "tokentrail.integrations.anthropic"),
    "google.genai": ("google.genai._api_client", "tokentrail.integrations.google"),
}

_lock = threading.RLock()
_patches: dict[str, list[Patch]] = {}
_hook: _PostImportHook | None = None


def _adapter(sdk: str) -> ModuleType:
    return importlib.import_module(SDKS[sdk][1])


def _patch_sdk(sdk: str) -> None:
    with _lock:
        if sdk not in _patches:
            _patches[sdk] = _adapter(sdk).instrument()


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Patches an SDK the moment its client module finishes loading."""

    def __init__(self) -> None:
        self.watched = {trigger: sdk for sdk, (trigger, _) in SDKS.items()}

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        sdk = self.watched.get(fullname)
        if sdk is None:
            return None
        spec = None
        for finder in sys.meta_path:  # ask the other finders, so that any install layout works
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        exec_module = loader.exec_module
        own = getattr(loader, "__dict__", {}).get("exec_module", _MISSING)

        def exec_and_patch(module: ModuleType) -> None:
            # a loader may serve other modules too (zipimport): make it plain again first
            if own is _MISSING:
                del loader.exec_module
            else:
                loader.exec_module = own
            exec_module(module)
            sys.modules[fullname] = module
            if self in sys.meta_path:
                try:
                    _patch_sdk(sdk)
                except Exception:  # metering must never break the user's `import openai`
                    log.exception("tokentrail: could not instrument %s", sdk)

        try:
            loader.exec_module = exec_and_patch
        except AttributeError:  # a loader that takes no attributes: the SDK loads unmetered, never broken
            return None
        return spec


def instrument() -> None:
    """Meter every call of every provider SDK in this process (idempotent; undo with uninstrument())."""
    global _hook
    with _lock:
        for sdk, (trigger, _) in SDKS.items():
            if trigger in sys.modules:
                _patch_sdk(sdk)
        if _hook is None:
            _hook = _PostImportHook()
            sys.meta_path.insert(0, _hook)


def uninstrument() -> None:
    """Undo instrument(): restore every patched method. Wrapped clients stay wrapped."""
    global _hook
    with _lock:
        for patches in _patches.values():
            for p in patches:
                p.undo()
        _patches.clear()
        if _hook is not None:
            sys.meta_path.remove(_hook)
            _hook = None


def instrumented() -> list[str]:
    """The SDKs currently patched."""
    return sorted(_patches)


def wrap(client: T, *, ledger: Ledger | None = None) -> T:
    """Meter one SDK client (OpenAI, AsyncOpenAI, Anthropic, AsyncAnthropic, genai.Client).
    Idempotent; returns the same client. `ledger` defaults to the session's or the default one."""
    module = type(client).__module__
    if module.startswith("openai"):
        sdk = "openai"
    elif module.startswith("anthropic"):
        sdk = "anthropic"
    elif module.startswith("google.genai"):
        sdk = "google.genai"
    else:
        raise TypeError(f"tokentrail.wrap: don't know how to meter a {type(client).__qualname__} from {module}")
    adapter: Any = _adapter(sdk)
    return adapter.wrap(client, ledger)  # type: ignore[no-any-return]
