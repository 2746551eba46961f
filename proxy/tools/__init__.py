"""Tool calling emulated over a chat-only backend (pure modules).

chat.qwen.ai has no usable tools API (its native ``local_mcp`` path cannot take results back,
docs/protocol.md §5.6, §13.2), so the tools are described in the prompt in Qwen's own Hermes-style
convention (:mod:`proxy.tools.prompt`), calls are parsed from the answer text
(:mod:`proxy.tools.parser`), checked (:mod:`proxy.tools.validate`) and turned into
:class:`~proxy.qwen.translate.ToolCall` events (:mod:`proxy.tools.stage`).
"""
