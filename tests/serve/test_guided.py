"""Guided decoding through the server on a tiny random model: json_schema replies that
validate, streamed and not, and the 400s."""

import json

import httpx
import openai
import pytest
from serve_helpers import client
from test_json_mode import SCHEMAS

jsonschema = pytest.importorskip("jsonschema")

USER = [{"role": "user", "content": "the quick brown fox"}]
def json_schema_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema,
                                                   "strict": True}}


@pytest.mark.parametrize("name", ["nested", "enum", "array", "anyof_ref"])
def test_json_schema_replies_validate(server, name):
    url, _, _ = server
    schema = SCHEMAS[name]
    for seed in (1, 2):
        r = client(url).chat.completions.create(
            model="tiny", messages=USER, max_tokens=80, temperature=1.0, seed=seed, n=3,
            response_format=json_schema_format(schema))
        for choice in r.choices:
            assert choice.finish_reason == "stop", choice.message.content
            jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_schema_fits_a_small_max_tokens_and_streams(server):
    url, _, _ = server
    schema = SCHEMAS["enum"]
    chunks = list(client(url).chat.completions.create(
        model="tiny", messages=USER, max_tokens=40, temperature=1.0, seed=5, stream=True,
        response_format=json_schema_format(schema)))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    jsonschema.validate(json.loads(text), schema)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_object_with_min_tokens_past_the_object_still_ends(server):
    url, _, _ = server
    r = httpx.post(f"{url}/v1/chat/completions", json={
        "messages": USER, "max_tokens": 30, "temperature": 0, "min_tokens": 30,
        "response_format": {"type": "json_object"}}).json()
    assert isinstance(json.loads(r["choices"][0]["message"]["content"]), dict)
    assert httpx.get(f"{url}/health").status_code == 200


def test_guided_decoding_errors(server):
    url, _, _ = server
    c = client(url)
    with pytest.raises(openai.BadRequestError, match="'minimum'") as e:
        c.chat.completions.create(model="tiny", messages=USER, max_tokens=5,
                                  response_format=json_schema_format(
                                      {"type": "integer", "minimum": 1}))
    assert e.value.body["param"] == "response_format.json_schema.schema.minimum"
    r = httpx.post(f"{url}/v1/chat/completions", json={
        "messages": USER, "response_format": {"type": "json_schema"}})
    assert r.status_code == 400 and "json_schema" in r.json()["error"]["message"]
