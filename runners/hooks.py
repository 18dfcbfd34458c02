"""What the caller hands a run: the protocol events it sends, and the hooks it calls.

Events are the `@@tunewise` lines of docs/internals.md's protocol (the heartbeat is the protocol's own:
runners.protocol). Every hook is optional; `run_cell(cfg, out_dir, Hooks(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

from runners.result import Progress, Status


class StartEvent(TypedDict):
    type: Literal["start"]
    planned_steps: int
    eval_steps: list[int]
    resumed_from: int  # the checkpoint's step (0 for a fresh run)


class EvalEvent(TypedDict):
    type: Literal["eval"]
    step: int
    fraction: float  # step / planned steps
    eval_loss: float
    index: int  # 0 for the first eval, 1 for the next ...


class EndEvent(TypedDict):
    type: Literal["end"]
    status: Status
    reason: str | None


Event = StartEvent | EvalEvent | EndEvent


@dataclass(frozen=True)
class Hooks:
    """The caller's callbacks into a run."""

    control: Callable[[EvalEvent], bool] | None = None  # after every eval: False = prune
    emit: Callable[[Event], None] | None = None  # every event: start, eval, end
    on_step: Callable[[Progress], None] | None = None  # after every optimizer step
    # keepalive(None) on every forward pass of the model; keepalive(phase) as each phase begins (load,
    # train or eval, metric, save): the protocol's proof that the run moves
    keepalive: Callable[[str | None], None] | None = None

    def send(self, event: Event) -> None:
        if self.emit is not None:
            self.emit(event)

    def evaluated(self, event: EvalEvent) -> bool:
        """Send an eval event and ask the control; False = prune."""
        self.send(event)
        return self.control is None or self.control(event) is not False

    def phase(self, name: str) -> None:
        if self.keepalive is not None:
            self.keepalive(name)


NO_HOOKS = Hooks()
