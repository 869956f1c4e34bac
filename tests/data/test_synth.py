"""Instruction synthesis through `fullchain.llm` against a tiny fake OpenAI server on
127.0.0.1: the Python API, and `fullchain synth` end to end."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fullchain.cli import main
from fullchain.config import ConfigError, LLMError
from fullchain.data.synth import SynthConfig, meta_path, synthesize
from fullchain.formats import hash_path

REPLIES = [
    "Instruction: Name the capital of France.\nResponse: Paris.",
    "Sorry, I cannot help with that.",
    "Instruction: Name the capital of France!\nResponse: Paris.",  # a near-copy
    "Instruction: Add 17 and 25.\nResponse: 42.",
    "Instruction: Translate 'cat' into German.\nResponse: Katze.",
]
KEPT = ["Name the capital of France.", "Add 17 and 25.", "Translate 'cat' into German."]


@pytest.fixture
def server():
    """Chat answers cycle through REPLIES (one 429 first, which the client retries);
    GET /v1/models lists "fake". Yields (api root, chat request bodies seen)."""
    seen: list[dict] = []
    state = {"throttled": False}

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "fake"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if not state["throttled"]:
                state["throttled"] = True
                return self._send(429, {"error": {"message": "slow down"}})
            seen.append(body)
            text = REPLIES[(len(seen) - 1) % len(REPLIES)]
            self._send(200, {"choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}})

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def seeds(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"id": "s1", "instruction": "Give a synonym of happy.",
                                "response": "Glad."}) + "\n")
    return path


def test_self_instruct_round_trip(tmp_path, server, seeds):
    url, seen = server
    out = tmp_path / "new.jsonl"
    cfg = SynthConfig(seeds=seeds, out=out, llm=url, model="fake", api_key="secret",
                      num_new=3, max_attempts=10)
    summary = synthesize(cfg)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["instruction"] for r in rows] == KEPT
    assert summary == {"kept": 3, "skipped": {"unparsable": 1, "duplicate": 1}, "attempts": 5}
    assert seen[0]["model"] == "fake" and "synonym of happy" in seen[0]["messages"][1]["content"]
    assert [s["seed"] for s in seen] == [0, 1, 2, 3, 4] and seen[0]["temperature"] == 1.0
    # lineage: each row names the model and the tasks it was shown; the sidecar the inputs
    assert rows[0]["meta"] == {"source": "synth", "model": "fake", "shots": ["s1"], "attempt": 1}
    assert rows[1]["meta"]["attempt"] == 4 and rows[2]["id"] == "synth-00002"
    meta = json.loads(meta_path(out).read_text())
    assert meta["format"] == "fullchain.synth" and meta["kept"] == 3
    lineage = meta["lineage"]
    assert lineage["stage"] == "synth" and lineage["seed"] == 0
    assert lineage["inputs"] == [{"path": str(seeds), "sha256": hash_path(seeds)}]
    assert lineage["config"]["llm"] == url and lineage["config"]["model"] == "fake"
    assert "secret" not in meta_path(out).read_text()


def test_bad_endpoint_is_a_clear_error(tmp_path, server, seeds):
    url, _ = server
    cfg = SynthConfig(seeds=seeds, out=tmp_path / "o.jsonl", llm=url.replace("/v1", "/wrong"),
                      model="fake", num_new=1)
    with pytest.raises(LLMError, match=r"/wrong/chat/completions: HTTP 404: no route"):
        synthesize(cfg)
    with pytest.raises(ConfigError, match="num_new"):
        SynthConfig(seeds=seeds, out=tmp_path / "o.jsonl", llm=url, num_new=0)


def test_synth_command_end_to_end(tmp_path, server, seeds, capsys):
    url, seen = server
    out = tmp_path / "new.jsonl"
    code = main(["synth", "--seeds", str(seeds), "--out", str(out), "--llm", url,
                 "--num-new", "3", "--max-attempts", "10", "--temperature", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [json.loads(line)["instruction"] for line in out.read_text().splitlines()] == KEPT
    assert seen[0]["model"] == "fake"  # asked the server for its model
    assert seen[0]["temperature"] == 0.5
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in captured.out.splitlines() if line.count("│") == 3}
    assert rows == {"kept": "3", "skipped: duplicate": "1",
                    "skipped: unparsable": "1", "attempts": "5"}
    assert f"{out} (lineage: {meta_path(out)})" in captured.out
    assert meta_path(out).is_file()
    assert "synth pairs" in captured.err  # the progress bar


def bad_json(path):
    path.write_text('{"instruction": "x", "response": "y"}\n{not json\n')
    return ["seeds.jsonl:2", "invalid JSON"]


def missing_fields(path):
    path.write_text('{"instruction": "x"}\n')
    return ["seeds.jsonl:1", "'instruction' and 'response'"]


def empty(path):
    path.write_text("\n")
    return ["no seed rows"]


def missing(path):
    return ["seeds.jsonl: file not found"]


@pytest.mark.parametrize("case", [bad_json, missing_fields, empty, missing],
                         ids=lambda c: c.__name__)
def test_bad_seeds_file_is_one_error_line(tmp_path, server, capsys, case):
    url, seen = server
    named = case(tmp_path / "seeds.jsonl")
    code = main(["synth", "--seeds", str(tmp_path / "seeds.jsonl"), "--out",
                 str(tmp_path / "o.jsonl"), "--llm", url, "--model", "fake"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for text in named:
        assert text in lines[0]
    assert not seen and not (tmp_path / "o.jsonl").exists()
