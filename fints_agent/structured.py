"""Structured output: a chat model's answer decoded as an instance of a schema.

:func:`structured_output` is what :meth:`FintsChatModel.with_structured_output
<fints_agent.chat_model.FintsChatModel.with_structured_output>` returns: a forced call of a
tool named after the schema (``"function_calling"``), or the answer text itself under the
schema's grammar (``"json_schema"``, ``"json_mode"``). An answer cut short by ``max_tokens``
is never parsed into a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any, cast

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable

__all__ = ["structured_output"]


def structured_output(
    llm: BaseChatModel,
    schema: Mapping[str, Any] | type,
    *,
    include_raw: bool = False,
    method: str = "function_calling",
    **kwargs: Any,
) -> Runnable[LanguageModelInput, Any]:
    """A runnable that answers with an instance of ``schema`` (see
    :meth:`FintsChatModel.with_structured_output
    <fints_agent.chat_model.FintsChatModel.with_structured_output>` for the arguments).

    Raises:
        ValueError: An unknown ``method``, or an unknown keyword argument.
    """
    from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
    from langchain_core.output_parsers.openai_tools import (
        JsonOutputKeyToolsParser,
        PydanticToolsParser,
    )
    from langchain_core.runnables import RunnableLambda, RunnableMap, RunnablePassthrough
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langchain_core.utils.pydantic import is_basemodel_subclass

    kwargs.pop("strict", None)
    if kwargs:
        raise ValueError(f"Received unsupported arguments {kwargs}")
    is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
    parser: Runnable[Any, Any]
    bound: Runnable[LanguageModelInput, Any]
    if method == "function_calling":
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        bound = llm.bind_tools(
            [cast(Any, schema)],
            tool_choice=name,
            ls_structured_output_format={
                "kwargs": {"method": method},
                "schema": tool,
            },
        )
        if is_model:
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
        else:
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
    elif method in ("json_schema", "json_mode"):
        json_schema = convert_to_openai_tool(schema)["function"]
        response_format: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {
                "name": json_schema["name"],
                "schema": json_schema.get("parameters", {}),
            },
        }
        bound = llm.bind(
            response_format=response_format,
            ls_structured_output_format={
                "kwargs": {"method": method},
                "schema": schema,
            },
        )
        parser = (
            PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            if is_model
            else JsonOutputParser()
        )
    else:
        raise ValueError(
            f"method {method!r}: expected 'function_calling', 'json_schema' or 'json_mode'"
        )
    checked = RunnableLambda(_complete_answer, name="complete_answer") | parser
    if not include_raw:
        return bound | checked
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | checked, parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _complete_answer(message: AIMessage) -> AIMessage:
    """The message, unless it was cut short by ``max_tokens`` (then it is no parsed value).

    Raises:
        OutputParserException: The answer ended at the token budget.
    """
    from langchain_core.exceptions import OutputParserException

    if message.response_metadata.get("finish_reason") == "length":
        raise OutputParserException(
            "the structured answer was cut short by max_tokens (finish_reason 'length'): "
            "raise max_tokens",
            llm_output=str(message.content),
        )
    return message
