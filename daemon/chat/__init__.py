"""How a conversation becomes tokens: messages with tool calls and reasoning, rendering and masks,
answers read back."""
