"""How a conversation becomes tokens and labels: the model's chat template, a documented fallback,
per-turn masks.

One room used by curation (token lengths) and training (labels), and by evaluation and the bench
(prompts).

**Rendering.** Conversations go through the tokenizer's own chat template with the structure it
understands: the record's tools as `tools=`, structured `tool_calls`, tool results as `tool` turns,
reasoning in the message field the template reads (`reasoning_content`, `thinking` or `reasoning`).
What a template cannot express is found out once per template by rendering marker values
(`rendering_of`) and written in the one fallback rendering instead:

- tools: a `# Tools` block at the end of the system turn (a system turn is added when there is
  none), one JSON definition a line inside `<tools>...</tools>`;
- calls: after the answer text, one `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
  block per call;
- reasoning: `<think>\n...\n</think>\n\n` before the answer text;
- tool results, when the template has no `tool` role: a user turn
  `<tool_response>\n...\n</tool_response>`.

**Masking.** The template renders the whole conversation once and each trained turn's prefix (with
and without that turn); character offsets of the fast tokenizer map each token to the turn it came
from. A trained turn's loss starts after its generation prompt and ends right after its end-of-turn
token. Templates that render an earlier turn differently once later turns follow (Qwen3-style
templates drop the reasoning of turns before the last user message) break the prefix property: such
a turn is trained on its own rendering — the conversation up to and including it, as the template
renders it when the model is writing that turn — as an extra sequence (`Encoded.extra`); the whole
conversation trains the turns it renders as written.

Loss covers the assistant's reasoning, calls and answers; never tool results, tool definitions or a
system turn the fallback adds. With `reasoning_loss=False` an assistant turn's loss starts after
its reasoning block.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from daemon.chat.messages import Message, last_answer

IGNORE = -100
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
"""Message fields chat templates read reasoning from, in the order they are tried."""
FALLBACK_TOOLS_HEADER = (
    "# Tools\n\nYou may call the functions below. To call one, write "
    '<tool_call>{"name": ..., "arguments": {...}}</tool_call>.\n<tools>\n'
)


class EncodeError(ValueError):
    def __init__(self, detail: str, message: str):
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Rendering:
    """What a chat template expresses itself; the rest goes through the fallback rendering."""

    tools: bool
    """Renders `tools=` definitions."""
    tool_calls: bool
    """Renders structured `tool_calls` on assistant turns."""
    tool_role: bool
    """Renders `tool` turns."""
    reasoning_field: str | None
    """The message field it reads reasoning from; None = `<think>` in the content."""

    def describe(self) -> dict[str, str]:
        """For config.json and status: per part, `template` or the fallback used."""
        return {
            "tools": "template" if self.tools else "fallback: system turn",
            "tool_calls": "template" if self.tool_calls else "fallback: <tool_call> blocks",
            "tool_results": "template"
            if self.tool_role
            else "fallback: user turn <tool_response>",
            "reasoning": f"template ({self.reasoning_field})"
            if self.reasoning_field
            else "fallback: <think>",
        }

    def summary(self) -> str:
        """One line: which parts the template renders, which the fallback."""
        d = self.describe()
        native = [k for k, v in d.items() if v.startswith("template")]
        other = [k for k in d if k not in native]
        if not other:
            return "chat template (all parts)"
        if not native:
            return "fallback rendering (tools, calls, reasoning as documented)"
        return f"chat template ({', '.join(native)}) + fallback ({', '.join(other)})"


_MARK = "zqmarkzq"
_RENDERINGS: dict[str, Rendering] = {}


def _try(tok: Any, rows: list[dict[str, Any]], **kw: Any) -> str:
    try:
        return tok.apply_chat_template(rows, tokenize=False, **kw)
    except Exception:  # a template that raises on this shape cannot express it
        return ""


def rendering_of(tok: Any) -> Rendering:
    """Which parts the tokenizer's chat template renders, found by rendering marker values (once
    per template)."""
    template = getattr(tok, "chat_template", None) or ""
    key = (
        template
        if isinstance(template, str)
        else json.dumps(template, sort_keys=True, default=str)
    )
    if key in _RENDERINGS:
        return _RENDERINGS[key]
    user = {"role": "user", "content": "hi"}
    tool = {
        "type": "function",
        "function": {
            "name": f"{_MARK}def",
            "description": "d",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    tools = _MARK + "def" in _try(tok, [user], tools=[tool], add_generation_prompt=True)
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": f"{_MARK}call", "arguments": {"a": 1}},
    }
    calls_text = _try(
        tok,
        [
            user,
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": f"{_MARK}result", "tool_call_id": "call_0"},
        ],
        tools=[tool],
    )
    reasoning = None
    for name in REASONING_FIELDS:
        if name in key and f"{_MARK}think" in _try(
            tok, [user, {"role": "assistant", "content": "ok", name: f"{_MARK}think"}]
        ):
            reasoning = name
            break
    r = Rendering(
        tools,
        f"{_MARK}call" in calls_text,
        f"{_MARK}result" in calls_text
        or f"{_MARK}result" in _try(tok, [user, {"role": "tool", "content": f"{_MARK}result"}]),
        reasoning,
    )
    _RENDERINGS[key] = r
    return r


def template_rows(
    messages: list[Message], tools: list[dict[str, Any]] | None, r: Rendering
) -> tuple[list[dict[str, Any]], dict[str, Any], list[int]]:
    """The rows handed to the template, its keyword arguments (`tools=`), and at[k] = the row of
    message k."""
    rows: list[dict[str, Any]] = []
    at: list[int] = []
    kw: dict[str, Any] = {}
    if tools and r.tools:
        kw["tools"] = tools
    elif tools:
        block = (
            FALLBACK_TOOLS_HEADER
            + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
            + "\n</tools>"
        )
        if not (messages and messages[0].role == "system"):
            rows.append({"role": "system", "content": block})
        else:
            block = f"{messages[0].content}\n\n{block}" if messages[0].content else block
    for k, m in enumerate(messages):
        at.append(len(rows))
        if m.role == "assistant":
            row: dict[str, Any] = {"role": "assistant", "content": m.content}
            if m.reasoning and r.reasoning_field:
                row[r.reasoning_field] = m.reasoning
            if m.tool_calls and r.tool_calls:
                row["tool_calls"] = [c.to_row() for c in m.tool_calls]
            if (m.reasoning and not r.reasoning_field) or (m.tool_calls and not r.tool_calls):
                fallback = Message(
                    "assistant",
                    m.content,
                    reasoning="" if r.reasoning_field else m.reasoning,
                    tool_calls=[] if r.tool_calls else m.tool_calls,
                )
                row["content"] = fallback.as_text()
        elif m.role == "tool" and not r.tool_role:
            row = {"role": "user", "content": f"<tool_response>\n{m.content}\n</tool_response>"}
        elif m.role == "tool":
            row = {"role": "tool", "content": m.content}
            if m.tool_call_id is not None:
                row["tool_call_id"] = m.tool_call_id
            if m.name is not None:
                row["name"] = m.name
        elif k == 0 and m.role == "system" and tools and not r.tools:
            row = {"role": "system", "content": block}
        else:
            row = {"role": m.role, "content": m.content}
        rows.append(row)
    return rows, kw, at


def rendering_report(tok: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For a run's config.json: how each part is rendered, in one line and per part, and how many
    curated rows have tools, calls and reasoning at all."""
    r = rendering_of(tok)
    has = {"tools": 0, "tool_calls": 0, "reasoning": 0}
    for row in rows:
        msgs = row["messages"]
        has["tools"] += bool(row.get("tools"))
        has["tool_calls"] += any(m.get("tool_calls") for m in msgs)
        has["reasoning"] += any(m.get("reasoning") for m in msgs)
    return {"summary": r.summary(), **r.describe(), "rows_with": has}


def render(tok: Any, rows: list[dict[str, Any]], kw: dict[str, Any], gen: bool = False) -> str:
    if not rows:
        return ""
    return tok.apply_chat_template(rows, tokenize=False, add_generation_prompt=gen, **kw)


def trains_on(m: Message, loss_on: str) -> bool:
    """Whether message `m` carries loss: an explicit flag wins; else assistant turns, and with
    loss_on = "all" the other turns too — but never tool results, which the model reads and never
    writes."""
    if m.train is not None:
        return m.train
    if m.role == "tool":
        return False
    return m.role == "assistant" or loss_on == "all"


def _turn_end(rendered: str, start: int, eos: str | None) -> int:
    """Where a trained turn's loss ends in `rendered` (which ends with that turn): just after its
    end-of-turn token (the tokenizer's eos, e.g. ChatML's `<|im_end|>`), so that the newline a
    template writes after it, which the model never has to produce, carries no label; without an
    eos in the turn, after its last non-space character."""
    if eos:
        k = rendered.rfind(eos, start)
        if k >= 0:
            return k + len(eos)
    return max(start, len(rendered.rstrip()))


_CLOSING = re.compile(r"\s*(?:</[^>\s]+>)?\s*")


def _after_reasoning(rendered: str, start: int, reasoning: str) -> int:
    """Where the answer starts after a turn's reasoning block (its closing tag and blank lines
    skipped)."""
    text = reasoning.strip()
    k = rendered.find(text, start)
    if not text or k < 0:
        return start
    m = _CLOSING.match(rendered, k + len(text))
    return m.end() if m else k + len(text)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    extra: list[Encoded] = field(default_factory=list)
    """Turns the template renders differently inside the whole conversation, each on its own
    rendering."""
    cut: bool = False
    """Cut at the right end to max_length."""
    dropped: int = 0
    """Turns left out from the start (after the system turns) so that the rest fits max_length."""

    @property
    def trainable(self) -> int:
        """Trained tokens of this sequence (not counting `extra`)."""
        return sum(1 for x in self.labels if x != IGNORE)

    @property
    def sequences(self) -> list[Encoded]:
        """Every training sequence of the conversation that carries a label."""
        return [e for e in [self, *self.extra] if e.trainable]


def _tokenise(tok: Any, text: str, spans: list[tuple[int, int]], max_length: int) -> Encoded:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [IGNORE] * len(ids)
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        # A token trains if it starts inside a trained span (special tokens too: the end-of-turn
        # must be learned).
        if any(a <= s < b for a, b in spans) and e > s:
            labels[i] = ids[i]
    return Encoded(
        input_ids=ids[:max_length], labels=labels[:max_length], cut=len(ids) > max_length
    )


def encode_messages(
    tok: Any,
    messages: list[Message],
    max_length: int,
    loss_on: str = "assistant",
    tools: list[dict[str, Any]] | None = None,
    reasoning_loss: bool = True,
) -> Encoded:
    """input_ids and labels for one conversation of at most max_length tokens; see the module
    docstring.

    A longer conversation loses its oldest exchanges first (`shortened`): the system turn and the
    tools stay, and the earliest exchanges (a user turn and everything up to the next user turn) go
    until the rest fits. When even the last exchange does not fit, it is cut at the right end; if
    that leaves no trained token, the whole conversation is cut at the right end instead (its first
    turns train). `dropped` says how many turns went."""
    whole = _encode(tok, messages, max_length, loss_on, tools, reasoning_loss)
    if not whole.cut:
        return whole
    head, starts = exchange_starts(messages)
    if not starts:
        return whole
    texts = [_full_text(tok, shortened(messages, head, s), tools) for s in starts]
    fits = [s for s, n in zip(starts, count_tokens(tok, texts)) if n <= max_length]
    cut_at = fits[0] if fits else starts[-1]
    short = _encode(
        tok, shortened(messages, head, cut_at), max_length, loss_on, tools, reasoning_loss
    )
    short.dropped = cut_at - head
    return short if short.sequences or not whole.sequences else whole


def exchange_starts(messages: list[Message]) -> tuple[int, list[int]]:
    """(how many leading system turns stay, where each exchange after the first begins): the
    indices of the user turns after the first turn of the conversation, the places it can be
    shortened from."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    return head, [k for k in range(head + 1, len(messages)) if messages[k].role == "user"]


def shortened(messages: list[Message], head: int, start: int) -> list[Message]:
    """The system turns, then the conversation from turn `start` on."""
    return messages[:head] + messages[start:]


def _full_text(tok: Any, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
    rows, kw, _ = template_rows(messages, tools, rendering_of(tok))
    return render(tok, rows, kw)


def _encode(
    tok: Any,
    messages: list[Message],
    max_length: int,
    loss_on: str,
    tools: list[dict[str, Any]] | None,
    reasoning_loss: bool,
) -> Encoded:
    """The conversation as the template renders it, with its loss spans, cut at max_length at the
    right."""
    rows, kw, at = template_rows(messages, tools, rendering_of(tok))
    full = render(tok, rows, kw)
    spans: list[tuple[int, int]] = []  # character ranges [start, end) of `full` that carry loss
    # (a turn's own rendering, its span) where `full` renders it otherwise
    own: list[tuple[str, tuple[int, int]]] = []
    for k, m in enumerate(messages):
        if not trains_on(m, loss_on):
            continue
        j = at[k]
        # An assistant turn's loss starts after its generation prompt (the role marker); other
        # turns at their start.
        before = render(tok, rows[:j], kw, gen=m.role == "assistant")
        after = render(tok, rows[: j + 1], kw)
        if m.role == "assistant" and not after.startswith(before):
            raise EncodeError(
                "no_trainable_tokens", "the chat template does not render turns as prefixes"
            )
        start = len(before)
        if m.reasoning and not reasoning_loss:
            start = _after_reasoning(after, start, m.reasoning)
        span = (start, _turn_end(after, len(before), tok.eos_token))
        if full.startswith(after):
            spans.append(span)
        elif m.role == "assistant":
            own.append((after, span))
        else:
            raise EncodeError(
                "no_trainable_tokens", "the chat template does not render turns as prefixes"
            )
    main = _tokenise(tok, full, spans, max_length)
    main.extra = [_tokenise(tok, text, [span], max_length) for text, span in own]
    return main


def count_tokens(tok: Any, texts: list[str]) -> list[int]:
    """Token counts of many texts in one batched call into the fast tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return [len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


class Lengths(NamedTuple):
    """A conversation's token counts that decide what max_length does to it (`measure_lengths`)."""

    whole: int
    """Tokens of the whole conversation: kept whole at max_length >= this."""
    first_trained: int
    """Tokens before its first trained one: cut at the right end to L, it keeps a trained token iff
    < L."""
    last_exchange: int
    """Tokens of the system turn, the tools and the last exchange (= whole when it has one
    exchange): the shortest it gets by dropping its oldest turns; its last answer is kept whole at
    max_length >= this."""
    last_first_trained: int
    """Tokens before the first trained one of that shortest form."""

    def keeps_trained_token(self, max_length: int) -> bool:
        return min(self.first_trained, self.last_first_trained) < max_length


def whole_lengths(
    tok: Any, conversations: list[tuple[list[Message], list[dict[str, Any]] | None]]
) -> list[int]:
    """Tokens of each whole (messages, tools), rendered once and tokenised in one batch
    (`Lengths.whole`)."""
    r = rendering_of(tok)
    counts: list[int] = []
    # in batches: a batch's encodings are held at once
    for at in range(0, len(conversations), 512):
        texts = []
        for msgs, tools in conversations[at : at + 512]:
            rows, kw, _ = template_rows(msgs, tools, r)
            texts.append(render(tok, rows, kw))
        counts += count_tokens(tok, texts)
    return counts


def measure_lengths(
    tok: Any, conversations: list[tuple[list[Message], list[dict[str, Any]] | None]], loss_on: str
) -> list[Lengths]:
    """`Lengths` of each (messages, tools), tokenised in one batch."""
    r = rendering_of(tok)
    texts: list[str] = []
    for msgs, tools in conversations:
        head, starts = exchange_starts(msgs)
        for form in (msgs, shortened(msgs, head, starts[-1]) if starts else msgs):
            rows, kw, at = template_rows(form, tools, r)
            texts.append(render(tok, rows, kw))
            k = next((i for i, m in enumerate(form) if trains_on(m, loss_on)), None)
            texts.append(
                render(tok, rows[: at[k]], kw, gen=form[k].role == "assistant")
                if k is not None
                else texts[-1]
            )
    counts = count_tokens(tok, texts)
    return [
        Lengths(counts[i], counts[i + 1], counts[i + 2], counts[i + 3])
        for i in range(0, len(counts), 4)
    ]


def prompt_text(
    tok: Any, messages: list[Message], tools: list[dict[str, Any]] | None = None
) -> str:
    """The rendered prompt (all turns before the last assistant one, with the record's tools) with
    the generation prompt appended. `messages` may also end without an assistant turn (a bench
    prompt): then all of it."""
    last = (
        last_answer(messages)
        if any(m.role == "assistant" for m in messages) and messages[-1].role == "assistant"
        else len(messages)
    )
    rows, kw, at = template_rows(messages[:last], tools, rendering_of(tok))
    if not rows:
        rows = [{"role": "user", "content": ""}]
    return render(tok, rows, kw, gen=True)
