"""Request bodies of the proxy (pydantic). They validate what the proxy must understand and keep
every other field (``extra="allow"``), which is passed to the backend unchanged."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from caproute.data.text import clean_json

CLEAN_TEXT = {"caproute.clean_text": True}
"""Validation context of a body whose text is known to be clean already (``model_validate(obj,
context=CLEAN_TEXT)``): parsed by :func:`caproute.serve.jsonwire.loads_clean`, whose strings
cannot hold a surrogate, so the repair (a walk over every string) is skipped."""


class _Request(BaseModel):
    """A request body: its text is repaired by caproute's one rule before validation (lone
    surrogates and split pairs, see :mod:`caproute.data.text`), so nothing downstream (the
    backend, the stores, the logs) ever sees invalid Unicode."""

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context is CLEAN_TEXT:
            return data
        return clean_json(data)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class CaprouteOptions(BaseModel):
    """The ``caproute`` body field (``extra_body={"caproute": {...}}`` with the openai client)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    lam: float | None = Field(
        default=None,
        alias="lambda",
        ge=0,
        allow_inf_nan=False,
        description="cost weight lambda for this request",
    )
    beta: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="risk weight beta")
    lam_t: float | None = Field(default=None, alias="lambda_t", ge=0, allow_inf_nan=False,
                                description="latency weight lambda_t, quality per second (PROPOSED)")
    budget: str | None = Field(default=None, max_length=128, description="a named budget of the config")
    conversation_id: str | None = Field(
        default=None, min_length=1, max_length=256, description="keeps a conversation on its first model"
    )


class ChatCompletionRequest(_Request):
    """OpenAI chat completion request; unknown fields pass through to the backend."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "caproute",
                    "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                    "max_tokens": 8,
                }
            ]
        },
    )
    model: str = Field(
        min_length=1,
        max_length=256,
        description="caproute/<router>[@budget][:lambda=x,beta=y,lambda_t=z], caproute/duel, or a pool model",
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    stream_options: dict[str, Any] | None = None
    caproute: CaprouteOptions | None = None


class RouteRequest(_Request):
    """``POST /v1/route``: decide only. Give ``input`` (one text or a list) or ``messages`` (a chat)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["input"],
                    "properties": {"input": {"not": {"type": "null"}}},
                    "not": {"required": ["messages"]},
                },
                {
                    "required": ["messages"],
                    "properties": {"messages": {"type": "array"}},
                    "not": {"required": ["input"]},
                },
            ],
            "examples": [
                {"model": "caproute", "input": ["What is 2 + 2?", "Prove Fermat's little theorem."]}
            ],
        },
    )
    model: str = Field(default="caproute", min_length=1, max_length=256)
    input: str | Annotated[list[str], Field(min_length=1, max_length=1024)] | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    lam: float | None = Field(default=None, alias="lambda", ge=0, allow_inf_nan=False)
    beta: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    lam_t: float | None = Field(default=None, alias="lambda_t", ge=0, allow_inf_nan=False)
    budget: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.input is None) == (self.messages is None):
            raise ValueError("give exactly one of 'input' or 'messages'")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("'input' must not be an empty list")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' must not be empty")
        return self


#: the rating scales ``/v1/feedback`` accepts (caproute.data.ratings maps any LO-HI range; the API
#: names these so that its schema can state each one's valid scores)
FEEDBACK_SCALES = ("unit", "thumbs", "1-5", "1-10", "0-10")
_NOT_PAIRWISE = {"anyOf": [{"required": ["winner_id"]}, {"required": ["loser_id"]}, {"required": ["tie"]}]}


def _scalar_form(scale: str | None) -> dict:
    """The JSON schema of a scalar rating on ``scale`` (None: no scale field, a score in [0, 1])."""
    if scale == "thumbs":
        score = {"type": "number", "enum": [-1, 0, 1]}
    else:
        lo, hi = (0, 1) if scale in (None, "unit") else tuple(int(x) for x in scale.split("-"))
        score = {"type": "number", "minimum": lo, "maximum": hi}
    props = {"response_id": {"type": "string"}, "score": score}
    if scale is None:
        return {"required": ["response_id", "score"], "properties": props,
                "not": {"anyOf": [*_NOT_PAIRWISE["anyOf"], {"required": ["scale"]}]}}
    return {"required": ["response_id", "score", "scale"], "properties": {**props, "scale": {"const": scale}},
            "not": _NOT_PAIRWISE}


class FeedbackRequest(_Request):
    """Scalar: ``{"response_id", "score"[, "scale"]}``. Pairwise: ``{"winner_id", "loser_id"}`` (``tie`` = no winner)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                *(_scalar_form(sc) for sc in (None, *FEEDBACK_SCALES)),
                {
                    "required": ["winner_id", "loser_id"],
                    "properties": {"winner_id": {"type": "string"}, "loser_id": {"type": "string"}},
                    "not": {"anyOf": [{"required": ["response_id"]}, {"required": ["score"]},
                                      {"required": ["scale"]}]},
                },
            ],
            "examples": [
                {"response_id": "chatcmpl-cr0123", "score": 1.0},
                {"response_id": "chatcmpl-cr0123", "score": 4, "scale": "1-5"},
                {"winner_id": "duel-0123-a", "loser_id": "duel-0123-b"},
            ],
        },
    )
    response_id: str | None = Field(default=None, min_length=1, max_length=128)
    # strict: the string "1" and the booleans true/false are not scores (a 400 naming the field);
    # in [0, 1] unless ``scale`` declares another (caproute.data.ratings.rating_to_unit maps it)
    score: float | None = Field(default=None, allow_inf_nan=False, strict=True)
    scale: Literal["unit", "thumbs", "1-5", "1-10", "0-10"] | None = Field(
        default=None, description="the score's scale: unit (default, [0, 1]) | thumbs (1, 0 or -1) | 1-5 | 1-10 | 0-10")
    # null is not a form of feedback: the JSON schema's oneOf above says so, the validator below checks it
    winner_id: str | None = Field(default=None, min_length=1, max_length=128)
    loser_id: str | None = Field(default=None, min_length=1, max_length=128)
    tie: bool = Field(default=False, strict=True)
    comment: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _form(self) -> FeedbackRequest:
        scalar = self.response_id is not None or self.score is not None
        pairwise = self.winner_id is not None or self.loser_id is not None
        if scalar == pairwise:
            raise ValueError("give either response_id + score (scalar) or winner_id + loser_id (pairwise)")
        if scalar and (self.response_id is None or self.score is None):
            raise ValueError("scalar feedback needs both response_id and score")
        if scalar and "tie" in self.model_fields_set:
            raise ValueError("tie applies to pairwise feedback only")
        if pairwise and self.scale is not None:
            raise ValueError("scale applies to scalar feedback only")
        if scalar:
            from caproute.data.ratings import RatingError, rating_to_unit

            try:
                rating_to_unit(self.score, self.scale)
            except RatingError as e:
                raise ValueError(str(e)) from None
        if pairwise and (self.winner_id is None or self.loser_id is None):
            raise ValueError("pairwise feedback needs both winner_id and loser_id")
        return self


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail
