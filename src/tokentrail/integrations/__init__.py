"""Metering of the provider SDKs: `instrument()` patches every installed SDK, `wrap()` one client.

Both are idempotent, and a client that is wrapped *and* instrumented is still metered once.
`instrument()` never imports an SDK itself: an SDK already imported is patched at once, one
imported later is patched as it loads.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from tokentrail.integrations._patch import Patch

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

T = TypeVar("T")

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
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module  # type: ignore[attr-defined]

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            sys.modules[fullname] = module
            if self in sys.meta_path:
                _patch_sdk(sdk)

        loader.exec_module = exec_and_patch  # type: ignore[attr-defined]
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
