"""A newcomer's first run: every README snippet and every example runs as
written in a fresh venv with only the wheel and the extra it names (see
``snippets.py`` for the rules), serving ones answer a real client and stop
on Ctrl-C with the client seeing the server's close."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snippets import (
    EXAMPLES,
    ROOT,
    Snippet,
    Venvs,
    client,
    close_code,
    extra_of,
    free_port,
    recv,
    run_script,
    serving,
    snippets,
    stop,
)

SNIPPETS = snippets()
ORDERS = 'subscription { orderCreated(tenantId: "5") { id total } }'


@pytest.fixture(scope="session")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venvs]:
    yield Venvs(tmp_path_factory.mktemp("fresh"))


def test_the_readmes_have_python_snippets() -> None:
    # A renamed fence or README must not make the check below vacuous.
    assert {s.source for s in SNIPPETS} == {ROOT / "python" / "README.md", ROOT / "README.md"}
    assert any(s.serves for s in SNIPPETS) and any(not s.serves for s in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.name)
def test_readme_snippet_runs_as_written(snippet: Snippet, venvs: Venvs, tmp_path: Path) -> None:
    python = venvs.python(snippet.extra)
    code = snippet.code
    if snippet.serves is None:
        file = tmp_path / "snippet.py"
        file.write_text(code)
        run_script(python, file, snippet.env)
        return
    match = re.fullmatch(r"ws://127\.0\.0\.1:(\d+)(/.*)", snippet.serves)
    assert match, f"{snippet.name}: serves= must be ws://127.0.0.1:PORT/PATH, not {snippet.serves}"
    port = free_port()
    written = re.compile(rf"\b{match.group(1)}\b")
    assert written.search(code), f"{snippet.name} does not mention its port {match.group(1)}"
    file = tmp_path / "snippet.py"
    file.write_text(written.sub(str(port), code))
    with serving(python, [str(file)], port, tmp_path / "snippet.log", snippet.env) as running:
        with client(f"ws://127.0.0.1:{port}{match.group(2)}", snippet.init) as ws:
            code_at_exit = stop(running)
            assert close_code(ws) == snippet.closes, running.output()
        assert code_at_exit == 0, f"exit code {code_at_exit} on Ctrl-C:\n{running.output()}"
        assert "Traceback" not in running.output(), running.output()


def _post_order(port: int) -> None:
    body = json.dumps({"tenant_id": 5, "cents": 1999}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/orders", data=body, method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200


def _generated(port: int) -> None:
    """The example publishes an order now and then by itself."""


# How each example makes an order for tenant 5 appear, and the close code
# its clients see on Ctrl-C: uvicorn closes WebSockets with 1012 (service
# restart) before the app's lifespan ends; websockets' server with 1001.
EXAMPLE_RUNS: dict[str, tuple[Callable[[int], None], int]] = {
    "fastapi_example.py": (_post_order, 1012),
    "starlette_example.py": (_generated, 1012),
    "custom_server_example.py": (_generated, 1001),
}


def test_every_example_is_run() -> None:
    assert sorted(p.name for p in EXAMPLES) == sorted(EXAMPLE_RUNS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_runs_as_documented(example: Path, venvs: Venvs, tmp_path: Path) -> None:
    make_order, closes = EXAMPLE_RUNS[example.name]
    extra = extra_of(example.read_text())
    assert extra, f"{example} does not say which extra to install"
    port = free_port()
    with serving(venvs.python(extra), [str(example), "--port", str(port)], port, tmp_path / "log") as running:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as response:
            assert response.status == 200 and "graphql-transport-ws" in response.read().decode()
        with client(f"ws://127.0.0.1:{port}/graphql") as ws:
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": ORDERS}}))
            # Frames are handled in order: once the pong is back, so is the subscription.
            ws.send(json.dumps({"type": "ping"}))
            frames = [json.loads(recv(ws, "the pong"))]
            while frames[-1]["type"] != "pong":
                assert len(frames) < 10, frames
                frames.append(json.loads(recv(ws, "the pong")))
            make_order(port)
            frame = frames[0] if frames[0]["type"] == "next" else json.loads(recv(ws, "an order for tenant 5"))
            assert frame["type"] == "next" and frame["id"] == "1", frame
            order = frame["payload"]["data"]["orderCreated"]
            assert set(order) == {"id", "total"}, order
            code_at_exit = stop(running)
            assert close_code(ws) == closes, running.output()
        assert code_at_exit == 0, f"exit code {code_at_exit} on Ctrl-C:\n{running.output()}"
        assert "Traceback" not in running.output(), running.output()

