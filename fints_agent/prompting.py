"""Render a turn (messages + offered tools) into the model's prompt, and calls into answers.

One renderer serves both inference and memory: the prompt a trajectory's steering vector is
computed on is exactly the prompt the model sees at inference, and chosen and rejected calls are
serialized by the same function, so a contrastive vector encodes the preference, not formatting.

Tools reach the prompt through the tokenizer's chat template where the template supports tools;
otherwise a system section lists them (see :func:`fints_agent.calls.format.render_tools_prompt`).

A tokenizer without a chat template (a base model such as Gemma 3 270M, or any model whose
tokenizer sets none) is rendered with :data:`FALLBACK_CHAT_TEMPLATE`, a plain-text dialogue
format, and an info message says so once per tokenizer. Set ``tokenizer.chat_template`` before
the model's first turn to use another template.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fints_agent.calls import ToolSpec

__all__ = ["FALLBACK_CHAT_TEMPLATE", "PromptRenderer", "Turn", "format_examples"]

logger = logging.getLogger(__name__)

FALLBACK_CHAT_TEMPLATE = r"""{{- bos_token or '' -}}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{{- 'System:\n' -}}
  {%- elif message['role'] == 'user' -%}{{- 'User:\n' -}}
  {%- elif message['role'] == 'assistant' -%}{{- 'Assistant:\n' -}}
  {%- elif message['name'] -%}{{- 'Tool result (' + message['name'] + '):\n' -}}
  {%- else -%}{{- 'Tool result:\n' -}}
  {%- endif -%}
  {{- message['content'] -}}
  {%- if message['role'] == 'assistant' -%}{{- eos_token or '' -}}{%- endif -%}
  {{- '\n\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'Assistant:\n' -}}{%- endif -%}"""
"""The chat template of a tokenizer that has none: plain-text turns, each a heading line
(``System:``, ``User:``, ``Assistant:``, ``Tool result (NAME):``), its text and a blank line.

The tools offered are listed in the system turn (the ``# Tools`` section of
:func:`fints_agent.calls.format.render_tools_prompt`, which shows the call format); an
assistant's tool calls are written in that format (``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>``) and end, like every assistant turn, with the EOS token, so a model learns
from earlier turns where an answer ends. The prompt starts with the BOS token when the
tokenizer adds one to plain text (Gemma does), and ends with ``Assistant:`` and a newline::

    <bos>System:
    Be brief.

    # Tools
    ...

    User:
    Get me from home to the airport

    Assistant:
    <tool_call>{"name": "book_ride", "arguments": {...}}</tool_call><eos>

    Tool result (book_ride):
    A taxi is on its way.

    Assistant:
"""

_fallback_logged: weakref.WeakSet[Any] = weakref.WeakSet()

Message = Mapping[str, Any]
"""An OpenAI-style message dict: ``{"role": ..., "content": ...}`` (plus ``tool_calls`` etc.)."""


@dataclass(frozen=True)
class Turn:
    """A rendered prompt and how long it is."""

    text: str
    n_tokens: int


def _template_supports_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer starts plain text with its BOS token (the model expects one)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    try:
        ids = list(tokenizer("a")["input_ids"])
    except Exception:
        return False
    return bool(ids) and ids[0] == bos


def _plain_message(message: Message, *, tool_turns: bool = False) -> dict[str, Any]:
    """Messages whose roles the basic ChatML templates do not know become plain text turns
    (with ``tool_turns``, a tool result stays a ``tool`` turn with its tool's name, as
    :data:`FALLBACK_CHAT_TEMPLATE` writes it)."""
    role = str(message.get("role", "user"))
    content = message.get("content") or ""
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False)
    if role == "assistant" and message.get("tool_calls"):
        from fints_agent.calls.format import render_call

        calls = "".join(
            render_call(tc["name"], tc.get("args", tc.get("arguments", {})))
            for tc in message["tool_calls"]
        )
        content = (content + calls) if content else calls
    if role == "tool" and tool_turns:
        return {"role": "tool", "name": str(message.get("name") or ""), "content": content}
    if role == "tool":
        name = message.get("name") or "tool"
        return {
            "role": "user",
            "content": f"<tool_response name={name}>\n{content}\n</tool_response>",
        }
    if role not in ("system", "user", "assistant"):
        role = "user"
    return {"role": role, "content": content}


class PromptRenderer:
    """Renders turns for one tokenizer.

    Args:
        tokenizer: A Hugging Face tokenizer. Tools go to its chat template when the template
            supports them, else to a system section; a tokenizer without a chat template is
            rendered with :data:`FALLBACK_CHAT_TEMPLATE` (an info message says so, once).

    Attributes:
        uses_fallback: Whether the tokenizer has no chat template of its own.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.template_tools = _template_supports_tools(tokenizer)
        self.uses_fallback = not _has_chat_template(tokenizer)
        self._template_kwargs: dict[str, Any] = {}
        template = getattr(tokenizer, "chat_template", None)
        fallback = self.uses_fallback or template == FALLBACK_CHAT_TEMPLATE
        self._tool_turns = fallback
        if fallback:
            self._template_kwargs["bos_token"] = tokenizer.bos_token if _adds_bos(tokenizer) else ""
        if self.uses_fallback:
            self._template_kwargs["chat_template"] = FALLBACK_CHAT_TEMPLATE
            try:
                first = tokenizer not in _fallback_logged
                _fallback_logged.add(tokenizer)
            except TypeError:  # not weakly referenceable: say it every time
                first = True
            if first:
                logger.info(
                    "the tokenizer of %s has no chat template: prompts use the plain-text "
                    "fallback template (fints_agent.prompting.FALLBACK_CHAT_TEMPLATE); set "
                    "tokenizer.chat_template to use another",
                    getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
                )

    def render_prompt(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec | Mapping[str, Any]] = (),
        *,
        examples: str | None = None,
    ) -> str:
        """The prompt text up to the start of the assistant's answer.

        Args:
            messages: The conversation (system messages anywhere are merged in order).
            tools: The tools offered this turn: tool specs, or OpenAI function-tool dicts
                (checked and converted here).
            examples: Optional extra system text (for example retrieved past calls).
        """
        from fints_agent.calls import ToolSpec, render_tools_prompt, to_tool_specs

        specs = [t for t in tools if isinstance(t, ToolSpec)]
        if len(specs) != len(tools):
            specs = to_tool_specs(list(tools))
        systems = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
        rest = [
            _plain_message(m, tool_turns=self._tool_turns)
            for m in messages
            if m.get("role") != "system"
        ]
        system_parts = [s for s in systems if s]
        kwargs: dict[str, Any] = {}
        if specs and not self.template_tools:
            system_parts.append(render_tools_prompt(specs))
        elif specs:
            kwargs["tools"] = [s.to_openai() for s in specs]
        if examples:
            system_parts.append(examples)
        chat = [{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []
        chat += rest
        text = self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True, **kwargs, **self._template_kwargs
        )
        return str(text)

    def render_prefix(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec | Mapping[str, Any]] = ()
    ) -> str:
        """The part of the prompt every turn with these system messages and tools shares.

        It is the system section alone (system messages and tools, no examples), rendered by
        the same template: the prompt of :meth:`render_prompt` starts with it up to where
        examples or the conversation begin, which is what the model's prefix cache keeps
        (:mod:`fints_agent.prefix_cache`; the shared length is counted in tokens). Empty
        when there is no system section, or the template refuses one alone.
        """
        systems = [m for m in messages if m.get("role") == "system"]
        if not systems and not tools:
            return ""
        try:
            return self.render_prompt(systems, tools)
        except Exception:  # a template that needs a user turn: the turn runs uncached
            return ""

    def render_call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        parameters: Mapping[str, Any] | None = None,
    ) -> str:
        """The answer text of one tool call, exactly as constrained decoding produces it.

        Pass the tool's ``parameters`` schema: keys are then written in the order the grammar
        enforces, so the text is token for token what the model would generate.
        """
        from fints_agent.calls.format import render_call

        return render_call(name, dict(arguments), parameters)

    def count_tokens(self, text: str) -> int:
        """Number of tokens of a rendered text."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def format_examples(
    examples: Sequence[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]],
    specs: Sequence[ToolSpec],
) -> str:
    """Past turns as a system-prompt section (retrieval-augmented prompting, and the worked
    example of a demonstration vector)."""
    from fints_agent.calls.format import render_call
    from fints_agent.calls.request import request_text

    if not examples:
        return ""
    by_name = {s.name: s.parameters for s in specs}
    lines = ["# This user's past requests and the calls that served them"]
    for messages, call in examples:
        name = str(call.get("name", ""))
        args = call.get("arguments", {})
        lines.append(f"Request: {request_text(messages)}")
        lines.append(f"Call: {render_call(name, args, by_name.get(name))}")
    return "\n".join(lines)
