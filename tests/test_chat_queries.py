"""``collect --queries`` on OpenAI chat-format logs and HumanEval/MBPP files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from caproute.collect.queries import chat_query, load_queries
from caproute.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_last_user_message_is_the_query_and_earlier_turns_the_context(tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "What is 2+2?"},
                      {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "And times 3?"},
                      {"role": "assistant", "content": "12"}], "model": "gpt-x"},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Name a prime."}]}]},
    ]
    q = load_queries(write_jsonl(tmp_path / "log.jsonl", rows))
    assert list(q["question"]) == ["And times 3?", "Name a prime."]
    assert q["context"].iloc[0] == "system: Be brief.\nuser: What is 2+2?\nassistant: 4"
    assert q["context"].iloc[1] is None
    assert list(q["answer"]) == ["12", ""]  # the logged reply after the query is the reference
    assert all(q["query_id"].str.match(r"^chat-[0-9a-f]{16}$")) and set(q["split"]) == {"train"}


def test_duplicate_conversations_collapse_to_one_query(tmp_path):
    conv = {"messages": [{"role": "user", "content": "hello there"}]}
    other = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hello there"}]}
    q = load_queries(write_jsonl(tmp_path / "log.jsonl", [conv, conv, other, conv]))
    assert len(q) == 2  # same text with a different context is a different query
    assert q["query_id"].iloc[0] == chat_query(conv["messages"])["query_id"]


@pytest.mark.parametrize("messages, field", [
    ([{"role": "system", "content": "hi"}, {"role": "assistant", "content": "hello"}], "messages"),
    ([], "messages"),
    ([{"role": "user", "content": "   "}], "messages"),
    ([{"content": "no role"}], "messages[0].role"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
])
def test_a_line_without_a_user_message_is_a_named_error(tmp_path, messages, field):
    rows = [{"messages": [{"role": "user", "content": "fine"}]}, {"messages": messages}]
    f = write_jsonl(tmp_path / "log.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_queries(f)
    assert e.value.row == 2 and e.value.field == field and str(f) in str(e.value)


def test_mixed_chat_and_plain_lines_are_an_error(tmp_path):
    f = write_jsonl(tmp_path / "log.jsonl", [{"messages": [{"role": "user", "content": "a"}]},
                                            {"query_id": "q", "question": "b", "answer": "c"}])
    with pytest.raises(DataError, match="every line needs 'messages'") as e:
        load_queries(f)
    assert e.value.row == 2


def test_plain_format_still_works(tmp_path):
    f = write_jsonl(tmp_path / "q.jsonl", [{"query_id": "q1", "question": "1+1?", "answer": "2"}])
    q = load_queries(f)
    assert list(q["query_id"]) == ["q1"] and list(q["answer"]) == ["2"]


def test_humaneval_and_mbpp_files_become_code_tasks(tmp_path):
    he = write_jsonl(tmp_path / "he.jsonl", [{"task_id": "HumanEval/0", "prompt": "def f(x):\n",
                                             "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}])
    q = load_queries(he)
    task = json.loads(q["answer"].iloc[0])
    assert q["query_id"].iloc[0] == "HumanEval/0" and task["entry_point"] == "f" and "check" in task["tests"]
    mbpp = tmp_path / "mbpp.parquet"
    pd.DataFrame({"task_id": [7], "text": ["Write add."], "test_list": [["assert add(1, 1) == 2"]],
                  "test_setup_code": [""]}).to_parquet(mbpp)
    q = load_queries(mbpp)
    assert json.loads(q["answer"].iloc[0]) == {"tests": "assert add(1, 1) == 2"}
    assert "assert add(1, 1) == 2" in q["question"].iloc[0]


def test_content_text_one_rule_for_the_collector_and_the_proxy():
    from caproute.data.text import content_text

    parts = ["a", {"type": "text", "text": "b"}, {"type": "image_url", "image_url": {}}, {"text": "c"}]
    assert content_text(parts) == "a\nb"                       # a live request: untyped part skipped
    assert content_text(parts, untyped_parts=True) == "a\nb\nc"  # a chat log: untyped part is text
    assert content_text(None) == "" and content_text("x") == "x"
    assert content_text(5) is None
