"""Instruction synthesis against a tiny fake OpenAI server on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from fullchain.data.synth import SynthConfig, synthesize
from fullchain.errors import DataError

REPLIES = [
    "Instruction: Name the capital of France.\nResponse: Paris.",
    "Sorry, I cannot help with that.",
    "Instruction: Name the capital of France!\nResponse: Paris.",  # a near-copy
    "Instruction: Add 17 and 25.\nResponse: 42.",
    "Instruction: Translate 'cat' into German.\nResponse: Katze.",
]


@pytest.fixture
def server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.end_headers()
                return
            text = REPLIES[(len(seen) - 1) % len(REPLIES)]
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()


def test_self_instruct_round_trip(tmp_path, server):
    url, seen = server
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Give a synonym of happy.",
                                 "response": "Glad."}) + "\n")
    cfg = SynthConfig(seeds=seeds, out=tmp_path / "new.jsonl", base_url=url + "/v1",
                      model="fake", num_new=3, max_attempts=10)
    summary = synthesize(cfg)
    rows = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == ["Name the capital of France.",
                                                "Add 17 and 25.",
                                                "Translate 'cat' into German."]
    assert summary == {"kept": 3, "skipped": {"unparsable": 1, "duplicate": 1}, "attempts": 5}
    assert seen[0]["model"] == "fake" and "synonym of happy" in seen[0]["messages"][1]["content"]


def test_bad_endpoint_is_a_clear_error(tmp_path, server):
    url, _ = server
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "x", "response": "y"}) + "\n")
    cfg = SynthConfig(seeds=seeds, out=tmp_path / "o.jsonl", base_url=url + "/wrong",
                      model="fake", num_new=1)
    with pytest.raises(DataError, match="chat completion failed"):
        synthesize(cfg)
