"""One error type for bad input: it carries every problem found, not just the first."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input. `problems` lists every problem as 'key=value: what is wrong; allowed: …'."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems))


class Problems:
    """Collects problems while validating, then raises them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, value: object, what: str, allowed: object = None) -> None:
        msg = f"{key}={value!r}: {what}"
        if allowed is not None:
            if isinstance(allowed, (list, tuple, set, frozenset)):
                allowed = ", ".join(str(a) for a in allowed)
            msg += f" (allowed: {allowed})"
        self.items.append(msg)

    def extend(self, other: list[str]) -> None:
        self.items.extend(other)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)
