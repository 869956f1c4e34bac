"""The tool-call parsers now live in the core (`fullchain.tokenizer.tool_calls`), where
`fullchain.llm` can use them too; the server's modules import them from here."""

from fullchain.tokenizer.tool_calls import (
    PARSERS,
    HermesParser,
    InternLM2Parser,
    Llama3Parser,
    StreamingToolParser,
    ToolCall,
    ToolParser,
    parser_for_template,
)

__all__ = ["PARSERS", "HermesParser", "InternLM2Parser", "Llama3Parser", "StreamingToolParser",
           "ToolCall", "ToolParser", "parser_for_template"]
