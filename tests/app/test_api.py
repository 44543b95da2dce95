"""The OpenAI-compatible API, driven by the official openai client against a real uvicorn server.

The tiny model answers with the inference API's own predict(), so the API's content, cues,
router weights and multi-turn prompt are checked against it; streaming deltas, boxes and the
bounds (429, 504) use a scripted stream_predict so the text and the timing are known.
"""

import base64
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from geostrata.api import ApiLimits, Served, create_app
from geostrata.errors import ConfigError
from geostrata.inference import Cue, Prediction, predict

KEY = "test-key"
QUESTION = "Is there a ship?"
CORRUPT_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"not image data" * 8).decode()


@contextmanager
def running(app):
    """uvicorn on 127.0.0.1 with a free port, in a thread; yields the /v1 base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def data_url(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def ask(url: str, text: str = QUESTION) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


@pytest.fixture(scope="module")
def api_url(loaded, data_dir):
    served = Served(loaded, limits=ApiLimits(max_body_bytes=2**20), image_root=data_dir)
    with running(create_app(served, api_key=KEY)) as url:
        yield url


@pytest.fixture
def scripted(monkeypatch):
    """stream_predict replaced by a scripted growing answer; records what it was asked."""
    calls, gate = [], threading.Event()
    gate.set()

    def fake(loaded, image, question, classes=None, max_new_tokens=16, top_classes=5, history=()):
        calls.append((image.shape, question, max_new_tokens, list(history)))
        gate.wait(30)
        base = Prediction("", {"scene": [Cue("scene.harbor", "harbor", 0.5)]}, {"scene": 1.0})
        yield base
        for answer in fake.answers[:max_new_tokens]:
            time.sleep(fake.delay)
            yield Prediction(answer, base.cues, base.router)
        yield Prediction(answer, base.cues, base.router, [("harbor", 0.9)])

    fake.delay, fake.answers = 0.0, ["a", "a harbor", "a harbor with", "a harbor with ships"]
    monkeypatch.setattr("geostrata.inference.stream_predict", fake)
    return fake, calls, gate


def test_completion_is_predicts_answer_with_evidence_and_usage(api_url, loaded, sample_png):
    reply = client(api_url).chat.completions.create(
        model="geostrata", messages=ask(data_url(sample_png)), max_tokens=6, temperature=1.0
    )
    expected = predict(loaded, sample_png, QUESTION, max_new_tokens=6)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "geostrata"
    assert choice.message.role == "assistant" and choice.message.content == expected.answer
    evidence = choice.model_extra["geostrata"]
    assert {lv: [c["id"] for c in cues] for lv, cues in evidence["cues"].items()} == {
        lv: [c.id for c in cues] for lv, cues in expected.cues.items()
    }
    assert evidence["router"] == pytest.approx(expected.router, abs=1e-3)
    prompt = len(loaded.processor.prompt_ids(QUESTION))
    assert reply.usage.prompt_tokens == prompt > loaded.processor.num_image_tokens
    assert reply.usage.total_tokens == prompt + reply.usage.completion_tokens
    assert 0 <= reply.usage.completion_tokens <= 6


def test_stream_sends_openai_chunks_ending_like_the_completion(api_url, sample_png):
    api = client(api_url)
    messages = ask(data_url(sample_png))
    plain = api.chat.completions.create(model="geostrata", messages=messages, max_tokens=4)
    chunks = list(
        api.chat.completions.create(
            model="geostrata",
            messages=messages,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    first, finish, usage = chunks[0].choices[0], chunks[-2].choices[0], chunks[-1]
    assert first.delta.role == "assistant" and first.model_extra["geostrata"]["cues"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == plain.choices[0].message.content
    assert finish.finish_reason == plain.choices[0].finish_reason
    assert (
        finish.model_extra["geostrata"]["router"]
        == plain.choices[0].model_extra["geostrata"]["router"]
    )
    assert usage.choices == [] and usage.usage.model_dump() == plain.usage.model_dump()


def test_stream_deltas_add_up_to_the_answer(api_url, sample_png, scripted):
    chunks = list(
        client(api_url).chat.completions.create(
            model="geostrata", messages=ask(data_url(sample_png)), max_tokens=3, stream=True
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert deltas == ["a", " harbor", " with"]
    assert chunks[-1].choices[0].finish_reason == "length"  # stopped by max_tokens
    assert chunks[-1].choices[0].model_extra["geostrata"]["class_probs"] == [
        {"name": "harbor", "prob": 0.9}
    ]


def test_two_turn_request_puts_the_first_turn_in_the_prompt(api_url, loaded, sample_png):
    first, said, second = "What type of scene is this?", "a harbor", "Is there a ship?"
    messages = [
        *ask(data_url(sample_png), first),
        {"role": "assistant", "content": said},
        {"role": "user", "content": second},
    ]
    reply = client(api_url).chat.completions.create(
        model="geostrata", messages=messages, max_tokens=6
    )
    expected = predict(loaded, sample_png, second, max_new_tokens=6, history=[(first, said)])
    evidence = reply.choices[0].model_extra["geostrata"]
    prompt = evidence["prompt"]
    assert prompt == expected.prompt and reply.choices[0].message.content == expected.answer
    assert prompt.index(first) < prompt.index(said) < prompt.index(second)
    with_turn = len(loaded.processor.prompt_ids(second, [(first, said)]))
    assert reply.usage.prompt_tokens == with_turn > len(loaded.processor.prompt_ids(second))


def test_history_is_the_turns_about_the_last_image(api_url, sample_png, data_dir, scripted):
    _, calls, _ = scripted
    other = sorted((data_dir / "images").glob("*.png"))[1]
    messages = [
        {"role": "system", "content": "You are a remote-sensing analyst."},
        *ask(data_url(sample_png), "What type of scene is this?"),
        {"role": "assistant", "content": "harbor"},  # about the first image: left out
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this one?"},
                {"type": "image_url", "image_url": {"url": f"images/{other.name}"}},
            ],
        },
        {"role": "assistant", "content": "a field"},
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "How many"},  # two user messages in a row: one question
        {"role": "user", "content": "ships are there?"},
    ]
    reply = client(api_url).chat.completions.create(model="geostrata", messages=messages)
    assert reply.choices[0].message.content == "a harbor with ships"
    assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "stop"
    from geostrata.data.images import read_image

    history = [("And this one?", "a field")]
    assert calls == [(read_image(other).shape, "How many ships are there?", 16, history)]


def test_boxes_of_the_answer_come_in_0_100_and_pixels(api_url, tmp_path, scripted):
    """The answer is scripted (the tiny model writes no boxes): this checks that the API parses
    the boxes of whatever answer the model gives and scales them to the input image."""
    fake, _, _ = scripted
    fake.answers = ["the ship", "the ship {<20><30><60><70>} and {<0><0><10><5>}"]
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(wide)  # W 300, H 100
    api, messages = client(api_url), ask(data_url(wide), "Where is the ship?")
    reply = api.chat.completions.create(model="geostrata", messages=messages)
    evidence = reply.choices[0].model_extra["geostrata"]
    assert evidence["boxes"] == [[20, 30, 60, 70], [0, 0, 10, 5]]
    assert evidence["boxes_px"] == [[60.0, 30.0, 180.0, 70.0], [0.0, 0.0, 30.0, 5.0]]
    assert evidence["cues"] and "router" in evidence  # beside the rest of the evidence
    chunks = list(api.chat.completions.create(model="geostrata", messages=messages, stream=True))
    assert chunks[0].choices[0].model_extra["geostrata"]["boxes"] == []  # no answer yet
    assert chunks[-1].choices[0].model_extra["geostrata"]["boxes_px"] == evidence["boxes_px"]


def test_conversation_bounds_are_400s_naming_the_message(api_url, sample_png, scripted):
    _, calls, _ = scripted
    turns = [
        message
        for i in range(17)
        for message in (
            {"role": "user", "content": f"q{i}?"},
            {"role": "assistant", "content": "a"},
        )
    ]
    too_many = [*ask(data_url(sample_png), "first?"), *turns, {"role": "user", "content": "last?"}]
    with pytest.raises(openai.BadRequestError, match="17 earlier turns .* the limit is 16"):
        client(api_url).chat.completions.create(model="geostrata", messages=too_many)
    long_reply = [
        *ask(data_url(sample_png), "first?"),
        {"role": "assistant", "content": "x" * 501},
        {"role": "user", "content": "and?"},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client(api_url).chat.completions.create(model="geostrata", messages=long_reply)
    assert (
        err.value.body["param"] == "messages[1]" and "assistant reply" in err.value.body["message"]
    )
    assert "limit is 500" in err.value.body["message"]
    assert calls == []  # refused before the model ran


@pytest.mark.parametrize(
    ("text", "url", "match", "param"),
    [
        ("  ", None, "question is empty", "messages"),
        (QUESTION, f"data:image/png;base64,{CORRUPT_PNG}", "cannot decode", "image_url"),
        (QUESTION, "data:image/png;base64,%%%", "base64 is invalid", "image_url"),
        (QUESTION, "data:image/gif;base64,R0lG", "'image/gif' unsupported", "image_url"),
        (QUESTION, "https://example.com/tile.png", "not fetched", "image_url"),
        (QUESTION, "../outside.png", "outside the server's image root", "image_url"),
    ],
)
def test_bad_request_is_a_400_saying_why(api_url, sample_png, text, url, match, param):
    with pytest.raises(openai.BadRequestError) as err:
        client(api_url).chat.completions.create(
            model="geostrata", messages=ask(url or data_url(sample_png), text)
        )
    body = err.value.body
    assert err.value.status_code == 400 and match in body["message"]
    assert body["type"] == "invalid_request_error" and param in body["param"]
    assert "Traceback" not in body["message"] and "/tmp" not in body["message"]


def test_refusals_are_openai_error_objects(api_url, sample_png):
    messages = ask(data_url(sample_png))
    with pytest.raises(openai.AuthenticationError) as err:
        client(api_url, key="wrong").chat.completions.create(model="geostrata", messages=messages)
    assert err.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError, match="'gpt-4o' is not served here"):
        client(api_url).chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.BadRequestError, match="max_tokens=100000 exceeds"):
        client(api_url).chat.completions.create(
            model="geostrata", messages=messages, max_tokens=100000
        )
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\].role"):
        client(api_url).chat.completions.create(
            model="geostrata", messages=[{"role": "robot", "content": "hi"}]
        )
    assert [m.id for m in client(api_url).models.list()] == ["geostrata"]


def test_oversized_body_is_refused_before_it_is_read(api_url):
    headers = {"Authorization": f"Bearer {KEY}"}
    declared = httpx.post(
        f"{api_url}/chat/completions", content=b"x" * (2**20 + 1), headers=headers
    )
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"
    chunked = httpx.post(  # no Content-Length: counted while it arrives
        f"{api_url}/chat/completions", content=(b"x" * 2**16 for _ in range(20)), headers=headers
    )
    assert chunked.status_code == 413


def test_full_queue_gets_429_and_late_answers_504(loaded, sample_png, scripted):
    fake, calls, gate = scripted
    served = Served(loaded, limits=ApiLimits(concurrency=1, queue_size=1, timeout_s=1.0))
    body = {"model": "geostrata", "messages": ask(data_url(sample_png))}
    with running(create_app(served)) as url:

        def post() -> httpx.Response:
            return httpx.post(f"{url}/chat/completions", json=body, timeout=30)

        gate.clear()  # the first request holds the only slot, the second waits in the queue
        results: list[httpx.Response] = []
        held = [threading.Thread(target=lambda: results.append(post())) for _ in range(2)]
        for thread in held:
            thread.start()
        while not calls:  # the first is at work (blocked inside its first step)
            time.sleep(0.01)
        time.sleep(0.2)  # and the second is queued
        busy = post()
        time.sleep(1.2)  # past the limit: the queued one gives up, the held one stops at its step
        gate.set()
        for thread in held:
            thread.join()
        fake.delay = 0.5  # four tokens at 0.5 s each run past the 1 s limit
        slow = post()
        with httpx.stream("POST", f"{url}/chat/completions", json={**body, "stream": True}) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        fake.delay = 0.0
        after = post()  # every slot was given back
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "rate_limit_exceeded"
    assert [r.status_code for r in results] == [504, 504]
    assert all(r.json()["error"]["type"] == "timeout_error" for r in results)
    assert slow.status_code == 504 and after.status_code == 200
    assert s.status_code == 200  # a stream already started reports the timeout as an event
    assert json.loads(events[-1][6:])["error"]["type"] == "timeout_error"
    assert '"content": "a"' in events[1] and "[DONE]" not in events[-1]


def test_local_images_only_inside_the_root(tmp_path, sample_png):
    from geostrata.api.images import load_image_url
    from geostrata.api.schema import ParamError

    root = tmp_path / "root"
    root.mkdir()
    (root / "tile.png").write_bytes(sample_png.read_bytes())
    (root / "escape.png").symlink_to(sample_png)
    assert load_image_url("tile.png", "p", 2**20, 10**6, root).shape[2] == 3
    assert load_image_url(f"file://{root}/tile.png", "p", 2**20, 10**6, root).ndim == 3
    for name in ("../root/../tile.png", str(sample_png), "escape.png"):
        with pytest.raises(ParamError, match="outside the server's image root"):
            load_image_url(name, "p", 2**20, 10**6, root)
    with pytest.raises(ParamError, match="disabled"):
        load_image_url("tile.png", "p", 2**20, 10**6, None)
    with pytest.raises(ParamError, match="limit is"):
        load_image_url("tile.png", "p", 100, 10**6, root)
    with pytest.raises(ParamError, match="exceeds max_pixels"):
        load_image_url(data_url(sample_png), "p", 2**20, 10, root)


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="concurrency"):
        ApiLimits(concurrency=0)
    with pytest.raises(ConfigError, match="default_max_tokens"):
        ApiLimits(default_max_tokens=300, max_tokens=256)


def test_cli_api_refuses_bad_folders_before_serving(tmp_path, trained_model_dir):
    from typer.testing import CliRunner

    from geostrata.cli import app

    not_a_model = CliRunner().invoke(app, ["api", str(tmp_path)])
    assert not_a_model.exit_code == 1 and "model.safetensors" in not_a_model.output
    no_root = CliRunner().invoke(
        app, ["api", str(trained_model_dir), "--image-root", str(tmp_path / "none")]
    )
    assert no_root.exit_code == 1 and "--image-root" in no_root.output


def test_a_crash_is_a_500_without_its_details(api_url, sample_png, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")
        yield  # a generator, like stream_predict

    monkeypatch.setattr("geostrata.inference.stream_predict", broken)
    api = client(api_url)
    with pytest.raises(openai.InternalServerError) as err:
        api.chat.completions.create(model="geostrata", messages=ask(data_url(sample_png)))
    assert err.value.status_code == 500 and err.value.body["type"] == "server_error"
    assert "secret" not in err.value.response.text and "Traceback" not in err.value.response.text
