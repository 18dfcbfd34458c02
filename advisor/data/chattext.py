"""The text an example is trained on, in the pieces the runner tokenizes — without transformers.

Mirrors runners/data.py (`encode`), so that token counts here equal the runner's:
- with a chat template (chat_template.jinja, chat_template.json or tokenizer_config.json's
  `chat_template`, rendered in a sandboxed Jinja environment as transformers' apply_chat_template
  does): for each assistant turn, the prompt rendered with add_generation_prompt=True and the turn
  that follows it, then whatever the full rendering adds after the last turn;
- without one, the plain template: BOS, then per turn "### System:\\n" / "### User:\\n" /
  "### Assistant:\\n" headers, contents followed by "\\n\\n" (assistant contents by EOS + "\\n\\n").
Each piece is tokenized on its own, without added special tokens.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from advisor.data.dataset import DataError, Example

PLAIN_HEADERS = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}
SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")


def plain_segments(messages, bos: str | None = None, eos: str | None = None) -> list[str]:
    """The plain template's pieces (runners/data.py `_plain_segments`)."""
    segs = [bos] if bos else []
    for role, content in messages:
        segs.append(PLAIN_HEADERS.get(role, f"### {role}:\n"))
        segs += [content + (eos or ""), "\n\n"] if role == "assistant" else [content + "\n\n"]
    return segs


def _token_text(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


class ChatTemplate:
    """A tokenizer folder's chat template (or None) and its special tokens."""

    def __init__(self, folder: Path):
        self.folder = folder
        conf = _read_json(folder / "tokenizer_config.json")
        tokens = {**_read_json(folder / "special_tokens_map.json"), **conf}
        self.variables = {k: _token_text(tokens.get(k)) for k in SPECIAL_TOKENS}
        source = conf.get("chat_template")
        if (folder / "chat_template.json").is_file():
            source = _read_json(folder / "chat_template.json").get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if isinstance(source, list):  # named templates: the default one
            source = next((t.get("template") for t in source if t.get("name") == "default"), None)
        self.template = _compile(source, folder) if isinstance(source, str) else None

    def render(self, messages, add_generation_prompt: bool = False) -> str:
        from jinja2 import TemplateError

        try:
            return self.template.render(  # type: ignore[union-attr]
                messages=[{"role": r, "content": c} for r, c in messages],
                add_generation_prompt=add_generation_prompt,
                **self.variables,
            )
        except TemplateError as e:
            raise DataError(f"model.path={str(self.folder)!r}: its chat template failed: {e}") from None

    def segments(self, example: Example) -> list[str]:
        """The pieces of one example, as runners/data.py tokenizes them."""
        msgs = example.messages
        if self.template is None:
            return plain_segments(msgs, self.variables["bos_token"], self.variables["eos_token"])
        segs, done = [], ""
        for i, (role, _) in enumerate(msgs):
            if role != "assistant":
                continue
            prompt = self.render(msgs[:i], add_generation_prompt=True)
            full = self.render(msgs[: i + 1])
            if not prompt.startswith(done) or not full.startswith(prompt):
                return [self.render(msgs)]  # the runner refuses such templates; count the whole text
            segs += [prompt[len(done) :], full[len(prompt) :]]
            done = full
        rest = self.render(msgs)
        if rest.startswith(done) and len(rest) > len(done):
            segs.append(rest[len(done) :])
        return [s for s in segs if s]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # not UTF-8 is a ValueError too
        raise DataError(f"{path}: not valid JSON ({str(e)[:200]})") from None
    return data if isinstance(data, dict) else {}


def _compile(source: str, folder: Path):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise DataError(f"model.path={str(folder)!r}: the chat template refused a row: {message}")

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise DataError(f"model.path={str(folder)!r}: its chat template does not compile: {e}") from None
