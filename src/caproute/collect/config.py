"""The pool configuration: models behind OpenAI-compatible endpoints, a rewriter, and tasks.

A pool YAML looks like::

    models:
      - name: smollm2-135m                 # the name stored in observations
        base_url: http://127.0.0.1:8090/v1
        model: smollm2-135m-instruct       # the id sent to the server
        api_key_env: ""                    # env var NAME holding the key; "" = no key (local)
        price_input_per_1m: 0.011          # USD per 1M prompt tokens (required, 0 allowed)
        price_output_per_1m: 0.11          # USD per 1M completion tokens (required, 0 allowed)
        price_cached_input_per_1m: null    # optional: price of cached prompt tokens
        max_concurrency: 1
        requests_per_minute: null          # optional rate limit
        timeout_s: 60
    rewriter: {model: smollm2-135m}
    tasks:
      arith:
        prompt_template: "Solve. ...\\n{question}\\nEnd with a line 'Final Answer: <number>'."
        scorer: numeric
        max_tokens: 24

Every error names the file and the field path (``models[1].price_output_per_1m``). An unknown price
is an error, never a silent default.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from caproute.errors import ConfigError

TASK_KINDS = ("short", "math", "multiple_choice", "reading")


class _Strict(BaseModel):
    # inf and NaN are never a price, a deadline or a budget (a .inf price made every spend NaN)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelEndpoint(_Strict):
    """One model of the pool behind an OpenAI-compatible endpoint."""

    name: str = Field(min_length=1, description="name stored in observations")
    base_url: str = Field(min_length=1, description="e.g. http://127.0.0.1:8090/v1")
    model: str = Field(min_length=1, description="model id sent to the server")
    api_key_env: str = Field(description="environment variable NAME holding the API key; '' = no key")
    price_input_per_1m: float = Field(ge=0, description="USD per 1M prompt tokens")
    price_output_per_1m: float = Field(ge=0, description="USD per 1M completion tokens")
    price_cached_input_per_1m: float | None = Field(default=None, ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    requests_per_minute: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(
        default=60.0, gt=0, description="total deadline of one request, body and stream included"
    )
    connect_timeout_s: float | None = Field(default=None, gt=0, description="connect deadline [min(5, timeout_s)]")
    first_byte_timeout_s: float | None = Field(
        default=None, gt=0, description="deadline for the response headers [timeout_s]"
    )
    max_retries: int = Field(default=6, ge=0, le=100, description="retries of a failed request (429, 5xx, timeouts)")
    retry_budget_s: float | None = Field(
        default=None, gt=0,
        description="wall-clock bound on one generation, retries and backoff included [none: (retries + 1) x timeout_s]",
    )
    breaker_failures: int = Field(
        default=5, ge=1, le=1000,
        description="consecutive connection failures (refused, reset, closed mid-answer) after which the "
        "collector stops sending to this endpoint for the rest of the run [5, PROPOSED]",
    )
    supports_seed: bool = True
    supports_n: bool = Field(default=False, description="ask for n choices per request (fan out if fewer)")
    supports_tools: bool = Field(
        default=True,
        description="accepts OpenAI 'tools' (caproute serve sends tool-use requests only to such models)",
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request fields")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    def api_key(self) -> str:
        """The key from the environment (read only when a client is built, never at import)."""
        if not self.api_key_env:
            return "no-key"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"model '{self.name}': environment variable {self.api_key_env} is not set")
        return key

    def cost_usd(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """USD cost of one generation from its token usage."""
        cached = min(max(cached_input_tokens, 0), input_tokens)
        cached_price = (
            self.price_cached_input_per_1m
            if self.price_cached_input_per_1m is not None
            else self.price_input_per_1m
        )
        return (
            (input_tokens - cached) * self.price_input_per_1m
            + cached * cached_price
            + output_tokens * self.price_output_per_1m
        ) / 1e6


class RewriterConfig(_Strict):
    """The model that writes the K meaning-preserving rewrites (paper App. B, D.1)."""

    model: str = Field(min_length=1, description="a name in models, or the name of `endpoint`")
    endpoint: ModelEndpoint | None = Field(
        default=None, description="a dedicated rewriter endpoint that is not a routed pool model"
    )
    temperature: float = Field(default=0.9, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=96, ge=8)
    max_attempts: int = Field(default=4, ge=1, description="generations tried per rewrite before fallback")
    min_similarity: float = Field(default=0.6, ge=-1, le=1, description="MiniLM cosine to the original")
    max_similarity: float = Field(default=0.995, ge=-1, le=1, description="above this it is a copy")
    fallback: Literal["template", "none"] = Field(
        default="template", description="deterministic template paraphrase when every attempt fails"
    )
    stop: list[str] = Field(default_factory=lambda: ["\n"], description="stop sequences (one line)")


class FewShot(_Strict):
    """A worked example shown as a previous chat turn (tiny models need it to keep the format)."""

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    context: str | None = None


class TaskConfig(_Strict):
    """A task: how a query becomes a prompt, and how an answer is scored."""

    prompt_template: str = Field(min_length=1, description="must contain {question}; may use {context}")
    scorer: str = Field(min_length=1, description="scorer name (see caproute.collect.scorers)")
    scorer_args: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int = Field(default=32, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    answer_format: str = Field(default="a short answer", description="what follows 'Final Answer:'")
    kind: Literal["short", "math", "multiple_choice", "reading", "chat"] = Field(
        default="short", description="decides the rewrite constraints (chat: open-ended requests)"
    )
    system_prompt: str | None = None
    stop: list[str] = Field(default_factory=list, description="stop sequences, e.g. a newline")
    fewshot: list[FewShot] = Field(
        default_factory=list, description="examples sent as user/assistant turns before the query"
    )

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(f"not a valid format string: {e}") from None
        if "question" not in fields:
            raise ValueError("must contain the placeholder {question}")
        unknown = fields - {"question", "context", "answer_format"}
        if unknown:
            raise ValueError(
                f"unknown placeholders {sorted(unknown)} (allowed: question, context, answer_format)"
            )
        return v

    def render(self, question: str, context: str | None = None) -> str:
        return self.prompt_template.format(
            question=question, context=context or "", answer_format=self.answer_format
        )

    def messages(self, question: str, context: str | None = None) -> list[dict]:
        """Chat messages for one query: system prompt, few-shot turns, then the query."""
        msgs: list[dict] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        for ex in self.fewshot:
            msgs.append({"role": "user", "content": self.render(ex.question, ex.context)})
            msgs.append({"role": "assistant", "content": f"Final Answer: {ex.answer}"})
        msgs.append({"role": "user", "content": self.render(question, context)})
        return msgs


class PoolConfig(_Strict):
    models: list[ModelEndpoint] = Field(min_length=1)
    rewriter: RewriterConfig | None = None
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross(self) -> PoolConfig:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: duplicate names {dup}")
        rw = self.rewriter
        if rw is not None and rw.endpoint is not None:
            if rw.endpoint.name != rw.model:
                raise ValueError(
                    f"rewriter.model: '{rw.model}' must equal rewriter.endpoint.name '{rw.endpoint.name}'"
                )
        elif rw is not None and rw.model not in names:
            raise ValueError(f"rewriter.model: '{rw.model}' is not a name in models {names}")
        return self

    def rewriter_endpoint(self) -> ModelEndpoint:
        if self.rewriter is None:
            raise ConfigError("the pool config has no rewriter")
        return self.rewriter.endpoint or self.model(self.rewriter.model)

    def model(self, name: str) -> ModelEndpoint:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"no model '{name}' in the pool (models: {[m.name for m in self.models]})")

    def task(self, name: str) -> TaskConfig:
        if name not in self.tasks:
            hint = ("; `caproute pool up --judge MODEL` writes a judge-scored 'chat' task" if name == "chat" else "")
            raise ConfigError(
                f"no task '{name}' in the pool config (tasks: {sorted(self.tasks)}); add one under 'tasks:' "
                f"(prompt_template with {{question}}, scorer, e.g. scorer: judge with scorer_args: {{judge: MODEL}}, "
                f"see docs/collect.md){hint}")
        return self.tasks[name]


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def parse_pool_config(data: Any, *, source: str = "<config>") -> PoolConfig:
    """Validate a parsed YAML/JSON object; errors name ``source`` and each field path."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'models', 'rewriter', 'tasks' at the top level, "
            f"got {type(data).__name__}"
        )
    try:
        cfg = PoolConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = _loc(tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing" and "price" in loc:
                msg = "missing: every model needs an explicit price (0 is allowed when stated)"
            elif err["type"] == "extra_forbidden":
                msg = "unknown field"
            msgs.append(f"field '{loc}': {msg}")
        raise ConfigError(f"{source}: invalid pool config:\n  " + "\n  ".join(msgs)) from None
    from caproute.collect.scorers import get_scorer

    for name, task in cfg.tasks.items():
        try:
            get_scorer(task.scorer, **task.scorer_args)
        except ConfigError as e:
            raise ConfigError(f"{source}: field 'tasks.{name}.scorer': {e}") from None
    return cfg


def load_pool_config(path: str | os.PathLike) -> PoolConfig:
    """Read and validate a pool YAML file (clear errors naming the file, line or field path)."""
    from caproute.core.configfile import load_yaml

    p = Path(path)
    return parse_pool_config(load_yaml(p, "pool config"), source=str(p))


def dump_pool_config(cfg: PoolConfig, out: str | os.PathLike, header: str | None = None) -> Path:
    """Write ``cfg`` as YAML atomically (the file ``caproute collect`` and ``caproute serve`` read)."""
    import yaml

    from caproute.data.atomic import atomic_file

    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    with atomic_file(out) as tmp:
        tmp.write_text(text)
    return Path(out)
