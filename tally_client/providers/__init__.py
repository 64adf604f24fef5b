"""Provider codecs, one module per protocol, imported on first use.

- `openai_chat.OpenAIChatProvider`: OpenAI Chat Completions and OpenAI-compatible servers.
- `openai_responses.OpenAIResponsesProvider`: the OpenAI Responses API.
- `anthropic.AnthropicProvider`: Anthropic Messages.
- `gemini.GeminiProvider`: Google Gemini (Developer API, `/v1` and `/v1beta`).

This package imports none of them, and none imports an official SDK.
"""

from ._base import Provider, StreamDecoder

__all__ = ["Provider", "StreamDecoder"]
